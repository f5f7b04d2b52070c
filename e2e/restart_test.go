package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// restartPipeline is a pipeline of two file sources through a parsing
// worker into one file sink, with a short checkpoint interval.
func restartPipeline(follow bool) string {
	f := "false"
	if follow {
		f = "true"
	}
	return `version: 1
checkpoint_interval: 100ms
sources:
  alpha: { type: file, path: in/alpha.jsonl, follow: ` + f + ` }
  beta:  { type: file, path: in/beta.jsonl, follow: ` + f + ` }
workers:
  parse:
    inputs: [alpha, beta]
    concurrency: 2
    steps:
      - parse_json: {}
sinks:
  out: { type: file, inputs: [parse], path: out/out.jsonl }
`
}

// writeAlphaBeta writes n records to each of in/alpha.jsonl and
// in/beta.jsonl and returns their keys.
func writeAlphaBeta(t *testing.T, dir string, n int) []string {
	t.Helper()
	var want []string
	for _, name := range []string{"alpha", "beta"} {
		data, keys := feed(name, 0, n)
		writeFile(t, dir, filepath.Join("in", name+".jsonl"), data)
		want = append(want, keys...)
	}
	return want
}

// TestGracefulStopResume: SIGTERM while records are in flight makes etld
// stop reading, drain what it read to the sink and save a checkpoint, and
// exit 0; what it wrote is, per input file, a prefix of the file with no
// hole. Started again with the same state dir, it resumes where it
// stopped and exits 0 by itself: the output then holds every input line
// exactly once.
func TestGracefulStopResume(t *testing.T) {
	t.Parallel()
	const perFile = 150000
	dir := t.TempDir()
	want := writeAlphaBeta(t, dir, perFile)
	cfg := writeConfig(t, dir, "resume.yaml", restartPipeline(false))
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out", "out.jsonl")

	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	c := &lineCounter{path: out}
	p.eventually("some output is written", func() bool { return c.count() > 0 })
	p.expectExit(p.stop(), 0, "SIGTERM with records in flight")

	first := outputKeys(t, out)
	if len(first) >= len(want) {
		t.Logf("note: the first run had written all %d records before SIGTERM arrived; nothing was in flight", len(first))
	} else {
		t.Logf("first run: %d of %d records written before the stop", len(first), len(want))
	}
	// A graceful stop drains everything read: per file, the records
	// written are seq 0..k-1, each once.
	for _, name := range []string{"alpha", "beta"} {
		var seqs []int
		for _, k := range first {
			if f, s := splitKey(k); f == name {
				seqs = append(seqs, s)
			}
		}
		slices.Sort(seqs)
		for i, s := range seqs {
			if s != i {
				t.Errorf("first run, %s: the records written are not a prefix of the file: after seq %d comes %d (%d records)", name, i-1, s, len(seqs))
				break
			}
		}
	}
	if _, err := os.Stat(filepath.Join(state, "resume.json")); err != nil {
		t.Errorf("no checkpoint after a graceful stop: %v", err)
	}

	p2 := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p2.expectExit(p2.wait(), 0, "restart of a finite pipeline")
	checkExactlyOnce(t, "out.jsonl after the restart", want, outputKeys(t, out))
}

// TestKillRestart: kill -9 at any moment loses and duplicates nothing.
// etld follows two growing files and is killed twice while it writes;
// each restart with the same state dir rolls the output back to the last
// checkpoint and resumes the inputs from there. Lines appended while etld
// is down are read too. In the end every line is in the output exactly
// once (SPEC §3.1).
func TestKillRestart(t *testing.T) {
	t.Parallel()
	const perFile = 150000
	dir := t.TempDir()
	want := writeAlphaBeta(t, dir, perFile)
	cfg := writeConfig(t, dir, "kill.yaml", restartPipeline(true))
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out", "out.jsonl")
	ckpt := filepath.Join(state, "kill.json")

	next := perFile
	for round := range 2 {
		p := startEtld(t, dir, nil, runArgs(cfg, state)...)
		// Kill once this run has saved a checkpoint and written more
		// output (some of it, usually, after the checkpoint: the restart
		// must roll that back).
		before := fileMTime(ckpt)
		c := &lineCounter{path: out}
		base := c.count()
		p.eventually("a new checkpoint and more output", func() bool {
			return fileMTime(ckpt) != before && c.count() > base
		})
		p.kill()
		t.Logf("round %d: killed with %d lines in the output", round, (&lineCounter{path: out}).count())

		// Lines appended while etld is down.
		for _, name := range []string{"alpha", "beta"} {
			data, keys := feed(name, next, 1000)
			appendFile(t, filepath.Join(dir, "in", name+".jsonl"), data)
			want = append(want, keys...)
		}
		next += 1000
	}

	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.waitForLines(out, len(want), want)
	p.expectExit(p.stop(), 0, "SIGTERM after catching up")
	checkExactlyOnce(t, "out.jsonl after two kills", want, outputKeys(t, out))
}

// fileMTime is the modification time of path in nanoseconds, 0 when it
// does not exist.
func fileMTime(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.ModTime().UnixNano()
}

// TestStartAtEnd: with no checkpoint, start_at: end skips what a file
// already holds and reads only the lines appended after the start. Once
// a checkpoint exists it wins over start_at: lines appended while etld is
// stopped are read at the next start.
func TestStartAtEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	old, _ := feed("old", 0, 1000)
	logPath := writeFile(t, dir, "in/app.log", old)
	cfg := writeConfig(t, dir, "tail.yaml", `version: 1
sources:
  app: { type: file, path: in/app.log, follow: true, start_at: end }
sinks:
  out: { type: file, inputs: [app], path: out/out.jsonl }
`)
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out", "out.jsonl")

	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	// The sources are open (positioned at the end) once the pipeline has
	// started; lines appended after that must be read.
	p.eventually("the pipeline has started", func() bool { return p.logged("pipeline started") })
	data, want := feed("new", 0, 500)
	appendFile(t, logPath, data)
	p.waitForLines(out, len(want), want)
	p.expectExit(p.stop(), 0, "SIGTERM")
	checkExactlyOnce(t, "out.jsonl with start_at: end", want, outputKeys(t, out))

	// Appended while stopped: the checkpoint (not start_at) decides.
	data, more := feed("new", 500, 300)
	appendFile(t, logPath, data)
	want = append(want, more...)
	p2 := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p2.waitForLines(out, len(want), want)
	p2.expectExit(p2.stop(), 0, "SIGTERM after the restart")
	checkExactlyOnce(t, "out.jsonl after a restart with start_at: end", want, outputKeys(t, out))
}

// TestKillBeforeFirstCheckpoint: SPEC §3.1 holds at any moment, also
// before the first periodic checkpoint. etld follows a file with a
// checkpoint interval so long that only the start-up commit exists, and is killed
// with -9 once its sink has flushed some lines to the output (the sink
// flushes whenever its buffer is full). The restart, with the same state
// dir, reads the file to its end (follow: false this time, so that it
// exits by itself): every line must be in the output exactly once.
func TestKillBeforeFirstCheckpoint(t *testing.T) {
	t.Parallel()
	const n = 20000 // about 2.5 MB: several sink buffers
	dir := t.TempDir()
	data, want := feed("early", 0, n)
	writeFile(t, dir, "in/early.jsonl", data)
	config := func(follow string) string {
		return `version: 1
checkpoint_interval: 1h
sources:
  early: { type: file, path: in/early.jsonl, follow: ` + follow + ` }
sinks:
  out: { type: file, inputs: [early], path: out/out.jsonl }
`
	}
	cfg := writeConfig(t, dir, "early.yaml", config("true"))
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out", "out.jsonl")

	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	c := &lineCounter{path: out}
	p.eventually("the sink flushes some lines", func() bool { return c.count() > 0 })
	p.kill()
	cp, err := os.ReadFile(filepath.Join(state, "early.json"))
	if err != nil {
		t.Fatalf("no start-up checkpoint: %v", err)
	}
	if !strings.Contains(string(cp), `"epoch":0,`) {
		t.Fatalf("test bug: a periodic checkpoint was taken before the kill: %s", cp)
	}
	t.Logf("killed before the first periodic checkpoint with %d lines in the output", c.count())

	writeConfig(t, dir, "early.yaml", config("false"))
	p2 := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p2.expectExit(p2.wait(), 0, "restart after kill -9")
	checkExactlyOnce(t, "out.jsonl after kill -9 before the first checkpoint", want, outputKeys(t, out))
}
