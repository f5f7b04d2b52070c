package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestManyFilesRotateAndTruncate: etld follows 300 files on the test's
// filesystem (a local one, where the file source trusts inotify and polls
// only as a slow safety net, and where it gathers the notifications of
// 100 ms into one pass). Between rounds of lines, a third of the files
// are rotated (renamed to a name the glob does not match, written once
// more under that name, and created again) and a third are truncated in
// place (copytruncate) and written again. Every line must be in the
// output exactly once: the renamed files are read to their end, the new
// ones from their start, the truncated ones from offset 0, all from
// notifications, without waiting for a poll.
func TestManyFilesRotateAndTruncate(t *testing.T) {
	t.Parallel()
	const files = 300
	dir := t.TempDir()
	paths := emptyInputs(t, dir, files)
	var want []string
	line := func(p, k string) {
		appendFile(t, p, []byte(`{"key":"`+k+`"}`+"\n"))
		want = append(want, k)
	}
	round := func(r int) {
		for i, p := range paths {
			line(p, fmt.Sprintf("f%04d-%d", i, r))
		}
	}
	cfg := writeConfig(t, dir, "many.yaml", `version: 1
sources:
  logs: { type: file, path: in/*.log }
sinks:
  out: { type: file, inputs: [logs], path: out/out.jsonl }
`)
	out := filepath.Join(dir, "out", "out.jsonl")
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	for r := range 2 {
		round(r)
		p.waitForLines(out, len(want), want)
	}
	for i, path := range paths[:2*files/3] {
		if i < files/3 {
			rotated := path + ".1"
			if err := os.Rename(path, rotated); err != nil {
				t.Fatal(err)
			}
			line(rotated, fmt.Sprintf("f%04d-2", i)) // after the rename: read as the file is drained
			line(path, fmt.Sprintf("f%04d-3", i))    // a new file under the old name
			continue
		}
		if err := os.Truncate(path, 0); err != nil { // every line of it was read
			t.Fatal(err)
		}
		line(path, fmt.Sprintf("f%04d-3", i))
	}
	p.waitForLines(out, len(want), want)
	round(4)
	p.waitForLines(out, len(want), want)
	p.expectExit(p.stop(), 0, "etld stop")
	checkExactlyOnce(t, "output", want, outputKeys(t, out))
}

// emptyInputs creates n empty files dir/in/fNNNN.log and returns their
// paths.
func emptyInputs(t *testing.T, dir string, n int) []string {
	t.Helper()
	in := filepath.Join(dir, "in")
	if err := os.MkdirAll(in, 0o755); err != nil {
		t.Fatal(err)
	}
	paths := make([]string, n)
	for i := range paths {
		paths[i] = filepath.Join(in, fmt.Sprintf("f%04d.log", i))
		if err := os.WriteFile(paths[i], nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}
