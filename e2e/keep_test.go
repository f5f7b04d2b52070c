package e2e

import (
	"encoding/json"
	"maps"
	"path/filepath"
	"slices"
	"testing"
)

// TestKeepExample runs examples/step-keep.yaml as shipped, on its sample
// data, in a scratch copy of its directory: every shipment is written
// once, in order, with only the fields the `keep` step names.
func TestKeepExample(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "step-keep.yaml", readFile(t, filepath.Join(repoRoot, "examples", "step-keep.yaml")))
	in := readFile(t, filepath.Join(repoRoot, "examples", "data", "shipments.jsonl"))
	writeFile(t, dir, filepath.Join("data", "shipments.jsonl"), in)

	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "finite keep example")

	inLines := splitLines(t, "shipments.jsonl", in)
	out := splitLines(t, "step-keep.jsonl", readFile(t, filepath.Join(dir, "out", "step-keep.jsonl")))
	if len(out) != len(inLines) || len(out) == 0 {
		t.Fatalf("wrote %d lines for %d shipments", len(out), len(inLines))
	}
	kept := []string{"amount", "id", "ts"}
	for i := range out {
		var got, src map[string]any
		if err := json.Unmarshal(out[i], &got); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, out[i])
		}
		if err := json.Unmarshal(inLines[i], &src); err != nil {
			t.Fatalf("input line %d: %v", i+1, err)
		}
		if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, kept) {
			t.Errorf("line %d has fields %v, want %v: %s", i+1, keys, kept, out[i])
		}
		for _, k := range kept {
			if got[k] != src[k] {
				t.Errorf("line %d: %s = %v, want %v from the input", i+1, k, got[k], src[k])
			}
		}
	}
}
