package pipetest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/etld/etld/internal/stages/builtin"
)

// BenchmarkRunFile: one test of 10,000 input lines through parse_json and
// eval into a CSV sink, compared line by line (ns/op is one whole test:
// load, run, compare).
func BenchmarkRunFile(b *testing.B) {
	const n = 10000
	var in, want strings.Builder
	in.WriteString("pipeline: p.yaml\ntests:\n  - name: big\n    input:\n      a:\n")
	want.WriteString("    expect:\n      out:\n        - n,n2\n")
	for i := range n {
		in.WriteString(`        - '{"n":` + strconv.Itoa(i) + `,"pad":"some text to carry"}'` + "\n")
		want.WriteString("        - '" + strconv.Itoa(i) + "," + strconv.Itoa(2*i) + "'\n")
	}
	dir := b.TempDir()
	for name, content := range map[string]string{"p.yaml": pipeline, "p.test.yaml": in.String() + want.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	path := filepath.Join(dir, "p.test.yaml")
	src, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	f, diags := Parse(path, src)
	if f == nil {
		b.Fatal(diags)
	}
	opts := Options{Registry: builtin.Registry()}
	b.ResetTimer()
	for b.Loop() {
		res, diags := RunFile(context.Background(), f, opts)
		if len(diags) > 0 || len(res) != 1 || !res[0].Passed() {
			b.Fatalf("diags %v, results %+v", diags, res)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
