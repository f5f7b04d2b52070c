package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// runBatches returns n lines of JSON as batches of line runs (see
// stages.Batch.AddLines) of up to per lines each, and the lines.
func runBatches(n, per int) ([]*stages.Batch, []string) {
	var lines []string
	var out []*stages.Batch
	o := &stages.Origin{Source: "runs", Path: "in"}
	off := int64(0)
	for i := 0; i < n; i += per {
		b := &stages.Batch{}
		buf := stages.NewBuffer(64 * per)[:0]
		lo := 0
		k := min(per, n-i)
		for j := range k {
			l := fmt.Sprintf(`{"n":%d}`, i+j)
			lines = append(lines, l)
			buf = append(append(buf, l...), '\n')
			if j%3 == 2 || j == k-1 { // runs of up to three lines
				b.AddLines(buf[lo:len(buf):len(buf)], strings.Count(string(buf[lo:]), "\n"), o, off+int64(lo))
				lo = len(buf)
			}
		}
		b.Own(buf)
		off += int64(len(buf))
		out = append(out, b)
	}
	return out, lines
}

// TestRunLineRuns sends batches of line runs from three sources: one
// straight into a file sink (which writes the runs), one into a sink
// that only knows Records, and one into a file sink and a worker at
// once (a copy per edge), the worker parsing every record. Every output
// holds every line once, in order, so each place that needs Records got
// them split from the runs.
func TestRunLineRuns(t *testing.T) {
	t.Parallel()
	const n = 500
	srcs := map[string]*fakeSource{}
	var want []string
	for _, name := range []string{"lr-direct", "lr-records", "lr-tee"} {
		bs, lines := runBatches(n, 40)
		want = lines
		s := newFakeSource(len(bs))
		for _, b := range bs {
			s.feed <- b
		}
		close(s.feed)
		srcs[name] = s
		addFake(t, name, s)
	}
	sink := newFakeSink()
	addFake(t, "lr-sink", sink)
	dir := t.TempDir()
	pipes := loadPipeline(t, dir, "lr", `version: 1
sources:
  direct:  { type: fake_finite, name: lr-direct }
  records: { type: fake_finite, name: lr-records }
  tee:     { type: fake_finite, name: lr-tee }
workers:
  w:
    inputs: [tee]
    concurrency: 1
    steps: [ parse_json: {}, set: { seen: true } ]
sinks:
  a:    { type: file, inputs: [direct], path: a.jsonl }
  k:    { type: fake, inputs: [records], name: lr-sink }
  b:    { type: file, inputs: [tee], path: b.jsonl }
  c:    { type: file, inputs: [w], path: c.jsonl }
`, nil)
	m := NewMetrics()
	if err := Run(context.Background(), pipes, Options{Logger: nopLogger(), Metrics: m}); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := readLines(t, filepath.Join(dir, "a.jsonl")); !slices.Equal(got, want) {
		t.Errorf("file sink of line runs: %d lines, want %d", len(got), len(want))
	}
	if got := sink.Records(); !slices.Equal(got, want) {
		t.Errorf("sink of Records: %d records, want %d", len(got), len(want))
	}
	if got := readLines(t, filepath.Join(dir, "b.jsonl")); !slices.Equal(got, want) {
		t.Errorf("file sink beside a worker: %d lines, want %d", len(got), len(want))
	}
	got := readLines(t, filepath.Join(dir, "c.jsonl"))
	if len(got) != n {
		t.Fatalf("worker's sink: %d lines, want %d", len(got), n)
	}
	for i, l := range got {
		if w := strings.TrimSuffix(want[i], "}") + `,"seen":true}`; l != w {
			t.Fatalf("worker's sink line %d = %s, want %s", i, l, w)
		}
	}
}

// TestPassthroughNeedsARunWriter: a source gets line runs only when every
// sink it feeds writes them as they are; a sink that would split every
// batch (stdout, a file sink that encodes or rotates by size) turns them
// off, as do a worker and a second sink that does not take them.
func TestPassthroughNeedsARunWriter(t *testing.T) {
	for _, tc := range []struct {
		sinks string
		want  bool
	}{
		{`out: {type: file, inputs: [in], path: o.jsonl}`, true},
		{`out: {type: file, inputs: [in], path: o.jsonl, rotate: {max_age: 1h}}`, true},
		{`out: {type: stdout, inputs: [in]}`, false},
		{`out: {type: file, inputs: [in], path: o.log, encoding: logfmt}`, false},
		{`out: {type: file, inputs: [in], path: o.jsonl, rotate: {max_size: 1MiB}}`, false},
		{"out: {type: file, inputs: [in], path: o.jsonl}\n  echo: {type: stdout, inputs: [in]}", false},
	} {
		p := rcLoad(t, t.TempDir(), "version: 1\nsources:\n  in: {type: file, path: in.log, follow: false}\nsinks:\n  "+tc.sinks+"\n")
		if got := passthrough(p, "in"); got != tc.want {
			t.Errorf("sinks %s: passthrough %v, want %v", tc.sinks, got, tc.want)
		}
	}
}
