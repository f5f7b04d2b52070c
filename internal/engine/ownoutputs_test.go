package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestApplyKeepsOwnOutputs: the own outputs the file sources skip are the
// sinks of the running pipelines, dead-letter sinks included, and follow
// reloads.
func TestApplyKeepsOwnOutputs(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.log"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rt, err := New(Options{Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Stop()
	src := func(out string) string {
		return `version: 1
dead_letter: bad
sources:
  in: { type: file, path: in.log }
sinks:
  out: { type: file, inputs: [in], path: ` + out + ` }
  bad: { type: file, path: bad.jsonl }
`
	}
	own := func(name string) bool {
		_, ok := rt.own.Match(filepath.Join(dir, name))
		return ok
	}
	if _, err := rt.Apply(context.Background(), loadPipeline(t, dir, "p", src("a.jsonl"), nil)); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"a.jsonl": true, "a.jsonl.000003.gz": true, "bad.jsonl": true, "b.jsonl": false, "in.log": false} {
		if got := own(name); got != want {
			t.Errorf("after start: own(%s) = %v, want %v", name, got, want)
		}
	}
	if _, err := rt.Apply(context.Background(), loadPipeline(t, dir, "p", src("b.jsonl"), nil)); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"a.jsonl": false, "b.jsonl": true, "bad.jsonl": true} {
		if got := own(name); got != want {
			t.Errorf("after reload: own(%s) = %v, want %v", name, got, want)
		}
	}
}
