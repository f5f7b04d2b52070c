package e2e

import (
	"fmt"
	"path/filepath"
	"testing"
)

// TestManyFilesKillRestart: etld follows 2,000 files with max_open_files
// 64, so most of them are closed and reopened as they are written; lines
// are appended to every file in rounds, etld is killed with -9 in the
// middle (and a round is written while it is down), and restarted with
// the same state dir. Every line must be in the output exactly once: the
// checkpoint covers the positions of the files closed for the limit too.
func TestManyFilesKillRestart(t *testing.T) {
	t.Parallel()
	const files, rounds, killAfter = 2000, 5, 2
	dir := t.TempDir()
	paths := emptyInputs(t, dir, files)
	var want []string
	round := func(r int) {
		for i, p := range paths {
			k := fmt.Sprintf("f%04d-%d", i, r)
			appendFile(t, p, []byte(`{"key":"`+k+`"}`+"\n"))
			want = append(want, k)
		}
	}
	cfg := writeConfig(t, dir, "many.yaml", `version: 1
checkpoint_interval: 100ms
sources:
  logs: { type: file, path: in/*.log, max_open_files: 64 }
sinks:
  out: { type: file, inputs: [logs], path: out/out.jsonl }
`)
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out", "out.jsonl")
	ckpt := filepath.Join(state, "many.json")

	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	for r := range killAfter {
		round(r)
		p.waitForLines(out, len(want), want)
	}
	// Kill once a checkpoint covering part of the next round was saved,
	// while the round is being read.
	before := fileMTime(ckpt)
	round(killAfter)
	c := &lineCounter{path: out}
	p.eventually("a new checkpoint and more output", func() bool {
		return fileMTime(ckpt) != before && c.count() > len(want)-files
	})
	p.kill()
	round(killAfter + 1) // written while etld is down

	p = startEtld(t, dir, nil, runArgs(cfg, state)...)
	for r := killAfter + 2; r < rounds; r++ {
		round(r)
	}
	p.waitForLines(out, len(want), want)
	p.expectExit(p.stop(), 0, "etld stop")
	checkExactlyOnce(t, "output", want, outputKeys(t, out))
}
