package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// multilinePipeline follows a logfmt application log whose error records
// carry Java stack traces (indented `at ...` lines), joins each record's
// lines, and splits the first line from the trace with parse_regex. The
// timeout is long so that the last record stays pending across a kill.
const multilinePipeline = `version: 1
checkpoint_interval: 100ms
sources:
  app:
    type: file
    path: in/app.log
    multiline: { start: '^ts=', timeout: 1h }
workers:
  parse:
    inputs: [app]
    steps:
      - parse_regex: { pattern: '^ts=(?P<ts>\S+) level=(?P<level>\S+) seq=(?P<seq>\d+) msg="(?P<msg>[^"]*)"(?P<trace>(?s:.*))$' }
sinks:
  out: { type: file, inputs: [parse], path: out/out.jsonl }
`

// traceHeader is the first line of record seq; traceLine is its i-th
// continuation line. Record seq has traceLen(seq) continuation lines.
func traceHeader(seq int) string {
	return fmt.Sprintf("ts=2026-01-01T00:00:%02dZ level=error seq=%d msg=\"request failed\"\n", seq%60, seq)
}

func traceLine(seq, i int) string {
	if i == 0 {
		return fmt.Sprintf("java.lang.IllegalStateException: request %d\n", seq)
	}
	return fmt.Sprintf("\tat com.example.Handler.step%d(Handler.java:%d)\n", i, seq)
}

func traceLen(seq int) int { return seq % 7 }

// traceHead is the first lines of record seq (header and up to two more),
// traceRest the others.
func traceHead(seq int) string {
	s := traceHeader(seq)
	for i := range min(2, traceLen(seq)) {
		s += traceLine(seq, i)
	}
	return s
}

func traceRest(seq int) string {
	var sb strings.Builder
	for i := 2; i < traceLen(seq); i++ {
		sb.WriteString(traceLine(seq, i))
	}
	return sb.String()
}

// traceRecords returns records from..to-1, whole.
func traceRecords(from, to int) string {
	var sb strings.Builder
	for seq := from; seq < to; seq++ {
		sb.WriteString(traceHeader(seq))
		for i := range traceLen(seq) {
			sb.WriteString(traceLine(seq, i))
		}
	}
	return sb.String()
}

// TestMultilineKillWhilePending: a joined record's checkpoint offset is
// that of its first line. etld follows a log whose last record is being
// written (its first lines are there, the rest comes later) and is killed
// with -9 once the records before it are in the output and a checkpoint
// covers them, but not the pending one. The rest of the record is appended
// while etld is down, and the restart re-reads the record from its first
// line. Twice; in the end every record is in the output exactly once,
// with all its lines.
func TestMultilineKillWhilePending(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "ml.yaml", multilinePipeline)
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out", "out.jsonl")
	ckpt := filepath.Join(state, "ml.json")

	// Record `pending` (seq 200, then 400) gets its header and up to two
	// lines before each run; the others follow while etld is down.
	const perRound = 200
	data := traceRecords(0, perRound)
	log := writeFile(t, dir, "in/app.log", []byte(data+traceHead(perRound)))
	pendingAt := int64(len(data))
	for round := 1; round <= 2; round++ {
		pending := round * perRound
		p := startEtld(t, dir, nil, runArgs(cfg, state)...)
		c := &lineCounter{path: out}
		p.eventually(fmt.Sprintf("round %d: %d records in the output", round, pending), func() bool { return c.count() >= pending })
		p.eventually(func() string {
			return fmt.Sprintf("round %d: a checkpoint at offset %d (the pending record's first line); it is at %d", round, pendingAt, checkpointOffset(ckpt))
		}, func() bool { return checkpointOffset(ckpt) == pendingAt })
		p.kill()
		if n := c.count(); n > pending {
			t.Fatalf("round %d: %d records in the output before the pending one was complete", round, n)
		}
		if off := checkpointOffset(ckpt); off != pendingAt {
			t.Fatalf("round %d: the checkpoint after the kill is at %d, want the pending record's first line %d", round, off, pendingAt)
		}
		// The rest of the pending record and the records of the next
		// round, the last of them again incomplete.
		fi, err := os.Stat(log)
		if err != nil {
			t.Fatal(err)
		}
		rest := traceRest(pending) + traceRecords(pending+1, pending+perRound)
		pendingAt = fi.Size() + int64(len(rest))
		appendFile(t, log, []byte(rest+traceHead(pending+perRound)))
	}

	// A last run completes record 600 with a record that stays pending.
	total := 3*perRound + 1
	appendFile(t, log, []byte(traceRest(3*perRound)+traceHeader(total)))
	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	c := &lineCounter{path: out}
	p.eventually(fmt.Sprintf("%d records in the output", total), func() bool { return c.count() >= total })
	p.expectExit(p.stop(), 0, "SIGTERM after catching up")
	checkTraces(t, readFile(t, out), total)
}

// checkpointOffset is the committed offset of the app source's file, -1
// when there is none yet.
func checkpointOffset(ckpt string) int64 {
	ps := committedPositions(ckpt, "app")
	if len(ps) != 1 {
		return -1
	}
	return ps[0].Offset
}

// checkTraces checks that the output holds records 0..n-1 exactly once
// each, each with its whole trace.
func checkTraces(t *testing.T, out []byte, n int) {
	t.Helper()
	lines := splitLines(t, "out.jsonl", out)
	seen := make([]int, n)
	for i, l := range lines {
		var r struct{ Seq, Trace string }
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("output line %d: %v: %s", i+1, err, l)
		}
		seq, err := strconv.Atoi(r.Seq)
		if err != nil || seq < 0 || seq >= n {
			t.Fatalf("output line %d: seq %q out of range: %s", i+1, r.Seq, l)
		}
		seen[seq]++
		var want strings.Builder
		for j := range traceLen(seq) {
			want.WriteString("\n" + strings.TrimSuffix(traceLine(seq, j), "\n"))
		}
		if r.Trace != want.String() {
			t.Errorf("record %d: trace %q, want %q (split or joined wrongly)", seq, r.Trace, want.String())
		}
	}
	for seq, k := range seen {
		if k != 1 {
			t.Errorf("record %d is in the output %d times, want once", seq, k)
		}
	}
	if len(lines) != n {
		t.Errorf("%d output lines, want %d", len(lines), n)
	}
}

// TestMultilineExample runs examples/source-multiline.yaml as shipped, on
// its sample data: 14 lines make 6 records, each stack trace whole with
// the line that introduced it.
func TestMultilineExample(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "source-multiline.yaml", readFile(t, filepath.Join(repoRoot, "examples", "source-multiline.yaml")))
	in := readFile(t, filepath.Join(repoRoot, "examples", "data", "parse", "app-trace.log"))
	writeFile(t, dir, filepath.Join("data", "parse", "app-trace.log"), in)

	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "finite multiline example")

	// The expected records, computed from the input independently: a
	// record is a line starting with ts= and the lines after it that do not.
	type rec struct{ TS, Trace string }
	var want []rec
	for _, l := range strings.Split(strings.TrimSuffix(string(in), "\n"), "\n") {
		if ts, ok := strings.CutPrefix(l, "ts="); ok {
			want = append(want, rec{TS: strings.Fields(ts)[0]})
			continue
		}
		last := &want[len(want)-1]
		if last.Trace != "" {
			last.Trace += "\n"
		}
		last.Trace += l
	}
	out := splitLines(t, "source-multiline.jsonl", readFile(t, filepath.Join(dir, "out", "source-multiline.jsonl")))
	var got []rec
	for i, l := range out {
		var r struct {
			TS    string `json:"ts"`
			Trace string `json:"stack_trace"`
		}
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, l)
		}
		got = append(got, rec{r.TS, r.Trace})
	}
	if len(want) != 6 || !slices.Equal(got, want) {
		t.Errorf("records:\n%q\nwant\n%q", got, want)
	}
}
