package engine

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestRunOriginalLine: after a parser, {{_line}} renders the original
// line in every sink (the second gets a copy of each batch), and a record
// rejected by a later step is dead-lettered with its original line.
func TestRunOriginalLine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	content := "ts=2024-01-01T00:00:00Z msg=\"a b\"\nts=yesterday msg=c\nts=2024-01-01T00:00:01Z msg=d\n"
	if err := os.WriteFile(filepath.Join(dir, "in.log"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	pipes := loadPipeline(t, dir, "line", `version: 1
dead_letter: rejects
sources:
  app: { type: file, path: in.log, follow: false }
workers:
  parse:
    inputs: [app]
    steps:
      - parse_logfmt: {}
      - parse_timestamp: { field: ts }
sinks:
  text: { type: file, inputs: [parse], path: out.log, encoding: text, template: '{{ts}} {{_line}}' }
  copy: { type: file, inputs: [parse], path: copy.log, encoding: text, template: '{{_line}}' }
  rejects: { type: file, path: rejects.jsonl }
`, nil)
	if err := Run(context.Background(), pipes, Options{Logger: nopLogger(), Metrics: NewMetrics()}); err != nil {
		t.Fatalf("Run = %v", err)
	}
	want := []string{`2024-01-01T00:00:00Z ts=2024-01-01T00:00:00Z msg="a b"`, `2024-01-01T00:00:01Z ts=2024-01-01T00:00:01Z msg=d`}
	if got := readLines(t, filepath.Join(dir, "out.log")); !slices.Equal(got, want) {
		t.Errorf("text sink:\ngot  %q\nwant %q", got, want)
	}
	want = []string{`ts=2024-01-01T00:00:00Z msg="a b"`, `ts=2024-01-01T00:00:01Z msg=d`}
	if got := readLines(t, filepath.Join(dir, "copy.log")); !slices.Equal(got, want) {
		t.Errorf("second sink:\ngot  %q\nwant %q", got, want)
	}
	rejects := readLines(t, filepath.Join(dir, "rejects.jsonl"))
	if len(rejects) != 1 {
		t.Fatalf("dead letters %q, want 1", rejects)
	}
	var dl map[string]any
	if err := json.Unmarshal([]byte(rejects[0]), &dl); err != nil {
		t.Fatal(err)
	}
	if dl["record"] != "ts=yesterday msg=c" {
		t.Errorf("dead-letter record %q, want the original line", dl["record"])
	}
}
