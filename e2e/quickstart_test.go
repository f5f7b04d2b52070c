package e2e

import (
	"encoding/json"
	"math"
	"path/filepath"
	"testing"
)

// TestQuickstartExample runs examples/quickstart.yaml as shipped, on its
// four sample feeds, in a scratch copy of its directory: every non-debug
// record is written once, with pipeline and cents, and cents is the
// amount rounded (16.49 gives 1649, not the 1648 of truncating
// 1648.9999... in binary floating point).
func TestQuickstartExample(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeFile(t, dir, "quickstart.yaml", readFile(t, filepath.Join(repoRoot, "examples", "quickstart.yaml")))
	want := 0
	for _, f := range []string{"orders", "payments", "shipments", "refunds"} {
		in := readFile(t, filepath.Join(repoRoot, "examples", "data", f+".jsonl"))
		writeFile(t, dir, filepath.Join("data", f+".jsonl"), in)
		for _, l := range splitLines(t, f, in) {
			var r struct{ Level string }
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatal(err)
			}
			if r.Level != "debug" {
				want++
			}
		}
	}
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "quickstart")

	out := splitLines(t, "quickstart.jsonl", readFile(t, filepath.Join(dir, "out", "quickstart.jsonl")))
	if len(out) != want {
		t.Fatalf("wrote %d lines, want %d (the non-debug records)", len(out), want)
	}
	seen := map[string]bool{}
	checked := false
	for _, l := range out {
		var r struct {
			ID       string
			Level    string
			Pipeline string
			Amount   *float64
			Cents    *int64
		}
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		if seen[r.ID] || r.Level == "debug" || r.Pipeline != "quickstart" {
			t.Errorf("duplicate, debug or unset pipeline: %s", l)
		}
		seen[r.ID] = true
		if r.Amount == nil || r.Cents == nil {
			t.Errorf("no amount or cents: %s", l)
			continue
		}
		if want := int64(math.Round(*r.Amount * 100)); *r.Cents != want {
			t.Errorf("cents = %d for amount %v, want %d: %s", *r.Cents, *r.Amount, want, l)
		}
		if r.ID == "shp-0001" {
			checked = *r.Cents == 1649
		}
	}
	if !checked {
		t.Error("shp-0001 (amount 16.49) was not written with cents 1649")
	}
}
