package sinks

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/etld/etld/internal/stages"
)

func TestFileSinkRecreatesVanishedOutput(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out", "x.jsonl")
	cfg := NewFileConfig()
	cfg.Path = path
	s := NewFileSink(stages.Settings{}, cfg)
	ctx := context.Background()
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	write := func(lines ...string) {
		t.Helper()
		b := &stages.Batch{}
		for _, l := range lines {
			b.Records = append(b.Records, stages.Record{Raw: []byte(l)})
		}
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	write("a")
	if err := os.RemoveAll(filepath.Join(dir, "out")); err != nil { // rm -rf the output directory
		t.Fatal(err)
	}
	write("b") // buffered; Flush notices the vanished file first
	write("c")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("output not recreated: %v", err)
	}
	if string(got) != "b\nc\n" {
		t.Fatalf("recreated output = %q, want %q", got, "b\nc\n")
	}
	if a := s.Active(); a.Size != 4 {
		t.Fatalf("Active().Size = %d after reattach, want 4", a.Size)
	}
}
