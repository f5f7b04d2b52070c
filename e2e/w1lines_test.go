package e2e

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// Line runs: a file source whose lines go straight to a file sink (no
// step) hands them over counted, not split into records, and the sink
// writes them as they are. These tests run the binary on real files
// through that path and through the paths that need records (a step, a
// second sink, lines over max_line_bytes), and check every line.

// w1LongMax is the max_line_bytes of the pipelines that reject the long
// lines of rawInput (300 KiB) and keep the others.
const w1LongMax = 64 << 10

// withoutLong returns data's lines of at most max bytes, each with its
// newline, and how many were longer.
func withoutLong(data []byte, max int) (kept []byte, long int) {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		line := data[:i+1]
		if len(line)-1 > max {
			long++
		} else {
			kept = append(kept, line...)
		}
		data = data[i+1:]
	}
	return kept, long
}

// TestW1LinesPaths runs one pipeline whose four sources read the same
// four feeds (long lines, empty lines, "\r\n", invalid UTF-8, a last line
// without newline): straight into a file (line runs); into two files
// (records, copied per sink); with max_line_bytes under the long lines
// and a dead-letter sink (runs that meet an over-long line become
// records); and JSON feeds through a parsing step. Every output is
// exact: the input byte for byte, the input without its long lines
// (each in the dead letter once), every record once.
func TestW1LinesPaths(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want := w1Feeds(t, dir, 4, 20000)
	short, long := withoutLong(want, w1LongMax)
	if long == 0 {
		t.Fatal("test bug: no line over max_line_bytes")
	}
	var keys []string
	for i := range 3 {
		b, k := feed(fmt.Sprintf("json-%d", i), 0, 30000)
		writeFile(t, dir, fmt.Sprintf("json/feed-%d.jsonl", i), b)
		keys = append(keys, k...)
	}
	cfg := writeConfig(t, dir, "w1.yaml", fmt.Sprintf(`version: 1
dead_letter: rejects
sources:
  feeds: { type: file, path: in/feed-*.jsonl, follow: false }
  tee:   { type: file, path: in/feed-*.jsonl, follow: false }
  long:  { type: file, path: in/feed-*.jsonl, follow: false, max_line_bytes: %d }
  json:  { type: file, path: json/feed-*.jsonl, follow: false }
workers:
  w:
    inputs: [json]
    steps: [ parse_json: {}, set: { stage: w } ]
sinks:
  out:     { type: file, inputs: [feeds], path: out/runs.jsonl }
  a:       { type: file, inputs: [tee], path: out/tee-a.jsonl }
  b:       { type: file, inputs: [tee], path: out/tee-b.jsonl }
  short:   { type: file, inputs: [long], path: out/long.jsonl }
  step:    { type: file, inputs: [w], path: out/step.jsonl }
  rejects: { type: file, path: out/long-rejects.jsonl }
`, w1LongMax))
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "the finite pipeline")

	for _, name := range []string{"runs", "tee-a", "tee-b"} {
		if got := readFile(t, filepath.Join(dir, "out", name+".jsonl")); !bytes.Equal(got, want) {
			t.Errorf("out/%s.jsonl differs from the input: %s", name, firstDiff(got, want))
		}
	}
	if got := readFile(t, filepath.Join(dir, "out", "long.jsonl")); !bytes.Equal(got, short) {
		t.Errorf("out/long.jsonl differs from the input without its %d long lines: %s", long, firstDiff(got, short))
	}
	if n := bytes.Count(readFile(t, filepath.Join(dir, "out", "long-rejects.jsonl")), []byte{'\n'}); n != long {
		t.Errorf("the dead letter holds %d lines, want the %d over max_line_bytes", n, long)
	}
	out := readFile(t, filepath.Join(dir, "out", "step.jsonl"))
	checkExactlyOnce(t, "out/step.jsonl", keys, outputKeys(t, filepath.Join(dir, "out", "step.jsonl")))
	if n := bytes.Count(out, []byte(`"stage":"w"`)); n != len(keys) {
		t.Errorf("%d of %d records went through the step", n, len(keys))
	}
	t.Logf("%d bytes in %d lines, %d long; %d JSON records", len(want), bytes.Count(want, []byte{'\n'}), long, len(keys))
}

// TestW1LinesKillNine: the pipeline that takes lines as runs, with
// max_line_bytes under the long lines (so some batches start as runs
// and become records) and a dead-letter sink, is killed with -9 at
// pseudo-random moments and restarted with the same state dir; the last
// run ends by itself. The output is the input without its long lines,
// byte for byte: every line once and in order.
func TestW1LinesKillNine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want, long := withoutLong(w1Feeds(t, dir, 4, 60000), w1LongMax)
	cfg := writeConfig(t, dir, "w1.yaml", fmt.Sprintf(`version: 1
checkpoint_interval: 2ms
dead_letter: rejects
sources:
  feeds: { type: file, path: in/feed-*.jsonl, follow: false, max_line_bytes: %d }
sinks:
  out: { type: file, inputs: [feeds], path: out/w1.jsonl }
  rejects: { type: file, path: out/rejects.jsonl }
`, w1LongMax))
	ckpt := filepath.Join(dir, "state", "w1.json")
	out := filepath.Join(dir, "out", "w1.jsonl")
	if w1KillNine(t, dir, cfg, int64(len(want)), 6) == 0 {
		t.Fatal("every run finished before its kill: the test tests nothing")
	}
	if got := readFile(t, out); !bytes.Equal(got, want) {
		t.Errorf("output (%d lines) differs from the input without its %d long lines (%d lines): %s",
			bytes.Count(got, []byte{'\n'}), long, bytes.Count(want, []byte{'\n'}), firstDiff(got, want))
	}
	crashCheckFinalState(t, ckpt, "out", out)
}

// w1KillNine runs the W1-shaped pipeline cfg (sink output out/w1.jsonl,
// state in dir/state, checkpoint w1.json), kills it with -9 up to kills
// times at pseudo-random moments (one to three checkpoints later, and
// the output past a random size, rising over a third of total, the
// size of the whole output), restarts it with the same state dir each
// time, and lets a last run end by itself. It returns how many runs
// were killed.
func w1KillNine(t *testing.T, dir, cfg string, total int64, kills int) (killed int) {
	t.Helper()
	rng := rand.New(rand.NewSource(crashSeed(t)))
	state := filepath.Join(dir, "state")
	ckpt := filepath.Join(state, "w1.json")
	out := filepath.Join(dir, "out", "w1.jsonl")
	size := func() int64 {
		fi, err := os.Stat(out)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	step := total / int64(3*kills)
	var high int64
	for k := 0; k < kills; k++ {
		p := startEtld(t, dir, nil, runArgs(cfg, state)...)
		// A kill before the first checkpoint of the run would only
		// test starting over: wait for one or more.
		lo := high + rng.Int63n(step)
		e0 := crashEpoch(ckpt)
		n := uint64(1 + rng.Intn(3))
		mode := fmt.Sprintf("%d new checkpoints and output past %d bytes", n, lo)
		cond := func() bool { return size() >= lo && crashEpoch(ckpt) >= e0+n }
		if crashPoll(p, "the moment to kill: "+mode, crashPollEvery, cond) {
			p.expectExit(p.wait(), 0, "a run that finished before its kill")
			t.Logf("run %d finished before its kill (%s)", k+1, mode)
			break
		}
		p.kill()
		killed++
		now := size()
		t.Logf("kill %d: %s; output now %d bytes, epoch %d -> %d", k+1, mode, now, e0, crashEpoch(ckpt))
		high = max(high, now)
	}
	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.expectExit(p.wait(), 0, "the run after the kills")
	return killed
}
