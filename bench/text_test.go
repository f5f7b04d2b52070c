package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages/builtin"
)

// TestGenTextDeterministic: the same arguments write the same feeds, and
// each kind of feed looks like its format.
func TestGenTextDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if err := genText(d, 4, 200, 2026); err != nil {
			t.Fatal(err)
		}
	}
	prefix := map[string]string{"access-1.log": "", "app-2.logfmt": "ts=2026-01-01T00:00:00.", "syslog-3.log": "", "access-4.log": ""}
	for i := 1; i <= 4; i++ {
		name := textFeedName(i)
		want, ok := prefix[name]
		if !ok {
			t.Fatalf("feed %d is %s", i, name)
		}
		x, err := os.ReadFile(filepath.Join(a, name))
		if err != nil {
			t.Fatal(err)
		}
		y, _ := os.ReadFile(filepath.Join(b, name))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two runs", name)
		}
		if n := bytes.Count(x, []byte{'\n'}); n != 200 {
			t.Errorf("%s has %d lines, want 200", name, n)
		}
		if !strings.HasPrefix(string(x), want) {
			t.Errorf("%s starts %.60q, want %q", name, x, want)
		}
	}
}

func TestCheckSortedTS(t *testing.T) {
	for _, tc := range []struct {
		name, out, err string
	}{
		{"sorted", `{"a":1,"ts":"2026-01-01T00:00:00Z"}` + "\n" + `{"ts":"2026-01-01T00:00:00.5Z"}` + "\n" + `{"ts":"2026-01-01T00:00:00.5Z"}` + "\n", ""},
		{"unsorted", `{"ts":"2026-01-01T00:00:01Z"}` + "\n" + `{"ts":"2026-01-01T00:00:00.5Z"}` + "\n", "1 order violations, the first at line 2"},
		{"no ts", `{"ts":"2026-01-01T00:00:01Z"}` + "\n" + `{"t":1}` + "\n", "line 2 has no ts"},
		{"bad ts", `{"ts":"yesterday"}` + "\n", "line 1: parsing time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "out.jsonl")
			if err := os.WriteFile(p, []byte(tc.out), 0o644); err != nil {
				t.Fatal(err)
			}
			err := checkSortedTS(p)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("checkSortedTS = %v, want %q", err, tc.err)
			}
		})
	}
}

// TestTextPipelineValid: both W3 configurations pass etld's validation.
func TestTextPipelineValid(t *testing.T) {
	dir := t.TempDir()
	for _, re := range []bool{false, true} {
		src := textPipeline(dir, filepath.Join(dir, "out.jsonl"), re)
		if _, diags := config.Parse(filepath.Join(dir, "w3.yaml"), []byte(src), config.Options{Registry: builtin.Registry()}); diags.HasErrors() {
			t.Errorf("regexp %v: %v\n%s", re, diags, src)
		}
	}
}
