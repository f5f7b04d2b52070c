package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/golden")

// TestGolden renders testdata/golden/pipeline.yaml and the testdata/dir
// directory (two pipelines) as DOT and Mermaid and compares them with
// testdata/golden/*.dot and *.mmd. Run with -update to rewrite them.
func TestGolden(t *testing.T) {
	inputs := map[string]string{
		"pipeline": filepath.Join("testdata", "golden", "pipeline.yaml"),
		"dir":      filepath.Join("testdata", "dir"),
	}
	formats := map[string]func(io.Writer, []*Pipeline) error{
		".dot": WriteDOT,
		".mmd": WriteMermaid,
	}
	for name, path := range inputs {
		pipes, ds := Load(path, testOptions())
		if ds.HasErrors() || len(ds) != 0 {
			t.Fatalf("Load(%s): %v", path, diagLines(ds))
		}
		for ext, write := range formats {
			t.Run(name+ext, func(t *testing.T) {
				var buf bytes.Buffer
				if err := write(&buf, pipes); err != nil {
					t.Fatal(err)
				}
				golden := filepath.Join("testdata", "golden", name+ext)
				if *update {
					if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (run go test ./internal/config -run TestGolden -update to create it)", err)
				}
				if got := buf.String(); got != string(want) {
					t.Errorf("%s differs from %s (run with -update to accept):\ngot:\n%s\nwant:\n%s", name+ext, golden, got, want)
				}
			})
		}
	}
}

// TestRenderEscaping checks that user text in labels cannot break the
// syntax of either format.
func TestRenderEscaping(t *testing.T) {
	const src = `version: 1
sources:
  in: {type: stdin}
workers:
  w: {inputs: [in], ordered: true, steps: [parse_json: {}]}
sinks:
  out:
    type: file
    inputs: [w]
    path: out.jsonl
    merge: {order_by: 'a"b'}
`
	p := parseOK(t, "/x/my pipeline.yaml", src, testOptions())
	var dot, mmd bytes.Buffer
	if err := WriteDOT(&dot, []*Pipeline{p}); err != nil {
		t.Fatal(err)
	}
	if err := WriteMermaid(&mmd, []*Pipeline{p}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`subgraph "cluster_my pipeline" {`,
		`"my pipeline/out" [label="out\nsink: file\nmerge by a\"b", shape=folder];`,
		`"my pipeline/w" [label="w\nworker xauto ordered\nparse_json", shape=box];`,
		`"my pipeline/in" -> "my pipeline/w";`,
	} {
		if !strings.Contains(dot.String(), want) {
			t.Errorf("DOT lacks %s:\n%s", want, dot.String())
		}
	}
	for _, want := range []string{
		`subgraph p0 ["my pipeline"]`,
		`p0_s2[("out<br/>sink: file<br/>merge by a#quot;b")]`,
		`p0_s0 --> p0_s1`,
	} {
		if !strings.Contains(mmd.String(), want) {
			t.Errorf("Mermaid lacks %s:\n%s", want, mmd.String())
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestRenderWriteError(t *testing.T) {
	p := parseOK(t, "p.yaml", "version: 1\nsources:\n  in: {type: stdin}\nsinks:\n  out: {type: stdout, inputs: [in]}\n", testOptions())
	if err := WriteDOT(failWriter{}, []*Pipeline{p}); err == nil {
		t.Errorf("WriteDOT to a failing writer: no error")
	}
	if err := WriteMermaid(failWriter{}, []*Pipeline{p}); err == nil {
		t.Errorf("WriteMermaid to a failing writer: no error")
	}
}
