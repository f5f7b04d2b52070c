package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFollowNeverReadsOwnOutput: a following source whose glob (logs/*)
// covers its own sink's output (logs/all.log, rotated into segments) while
// a writer appends input. Read back, every flush would write its own lines
// again, without end; etld skips its own files instead. After thousands of
// records, many checkpoints and several rotations, the output holds
// exactly the input lines, each once. etld validate and the start-up warn
// about the glob, naming both stages; the skip of all.log is logged once.
func TestFollowNeverReadsOwnOutput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeFile(t, dir, "logs/app.log", nil)
	cfg := writeConfig(t, dir, "own.yaml", `version: 1
checkpoint_interval: 50ms
sources:
  logs: { type: file, path: logs/* }
sinks:
  all:
    type: file
    inputs: [logs]
    path: logs/all.log
    rotate: { max_size: 128KiB }
`)
	out := filepath.Join(dir, "logs", "all.log")
	state := filepath.Join(dir, "state")
	ckpt := filepath.Join(state, "own.json")
	const warning = "warning: sources.logs: can read "

	v := startEtld(t, dir, nil, "validate", "-c", cfg)
	v.expectExit(v.wait(), 0, "etld validate (a warning is no error)")
	if s := v.stderr.String(); !strings.Contains(s, warning+out+`, which sink own/all writes`) {
		t.Errorf("etld validate: want the warning naming own/all and logs, got:\n%s", s)
	}

	p := startEtld(t, dir, nil, runArgs(cfg, state, "--admin", "127.0.0.1:0")...)
	const chunks, perChunk = 20, 250 // 5000 records, ~800 KiB of output: several segments
	var want []string
	for c := range chunks {
		data, keys := feed("app", c*perChunk, perChunk)
		appendFile(t, in, data)
		want = append(want, keys...)
		before := fileMTime(ckpt)
		// A checkpoint (and so a flush) after every chunk: had etld read
		// its output back, the next flushes would write it again.
		p.eventually(fmt.Sprintf("chunk %d in the output and a checkpoint", c), func() bool {
			return countOutputLines(t, out) >= len(want) && fileMTime(ckpt) != before
		})
	}
	// A few more checkpoints (and flushes) with nothing new to read; they
	// change no state, so the file is not rewritten: count them.
	addr := rlAdminAddr(p)
	checkpoints := func() float64 { return rlMetric(addr, "etld_checkpoints_total", `pipeline="own"`) }
	for range 3 {
		before := -1.0 // -1: no answer from /metrics
		p.eventually("etld_checkpoints_total", func() bool { before = checkpoints(); return before >= 0 })
		p.eventually("another checkpoint", func() bool { return checkpoints() > before })
	}
	p.expectExit(p.stop(), 0, "SIGTERM")

	segments, _ := filepath.Glob(out + ".*")
	if len(segments) < 3 {
		t.Errorf("%d rotated segments, want at least 3 (rotate.max_size)", len(segments))
	}
	var got []string
	for _, f := range append(segments, out) {
		got = append(got, outputKeys(t, f)...)
	}
	checkExactlyOnce(t, "output", want, got)

	logs := p.stderr.String()
	if !strings.Contains(logs, warning+out) {
		t.Errorf("etld run: want the warning at start-up")
	}
	if n := countLogLines(logs, "skipping a file etld writes itself", `"file":"`+out+`"`); n != 1 {
		t.Errorf("the skip of %s is logged %d times, want once", out, n)
	}
	for _, s := range segments {
		if n := countLogLines(logs, "skipping a file etld writes itself", `"file":"`+s+`"`); n > 1 {
			t.Errorf("the skip of %s is logged %d times, want at most once", s, n)
		}
	}
}

// countOutputLines counts the lines of path and its sealed segments.
func countOutputLines(t *testing.T, path string) int {
	names, err := filepath.Glob(path + "*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err == nil {
			n += bytes.Count(data, []byte{'\n'})
		}
	}
	return n
}

// countLogLines counts the log lines holding every one of subs.
func countLogLines(logs string, subs ...string) int {
	n := 0
	for line := range strings.Lines(logs) {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}
