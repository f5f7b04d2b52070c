package engine

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// benchFeeds and benchLinesPerFeed size the benchmark input: 200k lines
// of ~150 bytes in all.
const (
	benchFeeds        = 4
	benchLinesPerFeed = 50000
)

var benchWords = []string{
	"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
	"india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
	"quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
	"xray", "yankee", "zulu", "order", "payment", "shipped", "cart", "login",
	"logout", "timeout", "retry", "cache", "miss", "hit", "request", "response",
	"upstream", "latency", "queue", "worker", "batch", "commit", "rollback",
}

// writeBenchFeeds writes dir/feed-1.jsonl .. feed-N.jsonl in the format of
// /work/shared/bench/gendata.go (same generator, seed 1) and returns the
// number of lines and bytes, and the number of "debug" lines.
func writeBenchFeeds(b *testing.B, dir string) (lines, size, debug int) {
	b.Helper()
	base := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for k := 1; k <= benchFeeds; k++ {
		name := fmt.Sprintf("feed-%d", k)
		f, err := os.Create(filepath.Join(dir, name+".jsonl"))
		if err != nil {
			b.Fatal(err)
		}
		w := bufio.NewWriterSize(f, 1<<20)
		r := rand.New(rand.NewSource(1*1000003 + int64(k)))
		ts := base.Add(time.Duration(k) * 137 * time.Microsecond)
		buf := make([]byte, 0, 256)
		for seq := range benchLinesPerFeed {
			ts = ts.Add(time.Duration(1+r.Intn(2000)) * time.Microsecond)
			level := "info"
			switch x := r.Intn(100); {
			case x < 10:
				level = "debug"
				debug++
			case x < 17:
				level = "warn"
			case x < 20:
				level = "error"
			}
			buf = buf[:0]
			buf = append(buf, `{"ts":"`...)
			buf = ts.AppendFormat(buf, "2006-01-02T15:04:05.000000Z")
			buf = append(buf, `","feed":"`...)
			buf = append(buf, name...)
			buf = append(buf, `","seq":`...)
			buf = strconv.AppendInt(buf, int64(seq), 10)
			buf = append(buf, `,"level":"`...)
			buf = append(buf, level...)
			buf = append(buf, `","user":"u`...)
			buf = strconv.AppendInt(buf, int64(r.Intn(10000)), 10)
			buf = append(buf, `","amount":`...)
			cents := r.Intn(100000)
			buf = strconv.AppendInt(buf, int64(cents/100), 10)
			buf = append(buf, '.')
			buf = append(buf, byte('0'+cents%100/10), byte('0'+cents%10))
			buf = append(buf, `,"msg":"`...)
			for i := range 3 + r.Intn(8) {
				if i > 0 {
					buf = append(buf, ' ')
				}
				buf = append(buf, benchWords[r.Intn(len(benchWords))]...)
			}
			buf = append(buf, `"}`...)
			buf = append(buf, '\n')
			if _, err := w.Write(buf); err != nil {
				b.Fatal(err)
			}
			lines++
			size += len(buf)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	return lines, size, debug
}

// benchPipeline runs the pipeline file src b.N times over fresh output
// and reports records read per second.
func benchPipeline(b *testing.B, src string, wantOut func(lines, debug int) int) {
	benchPipelineWith(b, nil, src, wantOut)
}

// benchPipelineWith is benchPipeline with the runtime's Metrics mx (nil:
// a new one per run).
func benchPipelineWith(b *testing.B, mx *Metrics, src string, wantOut func(lines, debug int) int) {
	dir := b.TempDir()
	in := filepath.Join(dir, "in")
	if err := os.MkdirAll(in, 0o755); err != nil {
		b.Fatal(err)
	}
	lines, size, debug := writeBenchFeeds(b, in)
	pipes := loadPipeline(b, dir, "bench", src, nil)
	out := filepath.Join(dir, "out", "out.jsonl")
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		if err := os.RemoveAll(filepath.Dir(out)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := Run(context.Background(), pipes, Options{Logger: nopLogger(), Metrics: mx}); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			b.StopTimer()
			if got, want := countLines(out), wantOut(lines, debug); got != want {
				b.Fatalf("output has %d lines, want %d", got, want)
			}
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkPipelineW1 is a passthrough: one file source over four feeds
// straight into a file sink.
func BenchmarkPipelineW1(b *testing.B) {
	benchPipeline(b, `version: 1
sources:
  feeds: { type: file, path: in/feed-*.jsonl, follow: false }
sinks:
  out: { type: file, inputs: [feeds], path: out/out.jsonl }
`, func(lines, _ int) int { return lines })
}

// BenchmarkPipelineW2 parses, filters and enriches every record.
func BenchmarkPipelineW2(b *testing.B) {
	benchPipeline(b, benchW2, func(lines, debug int) int { return lines - debug })
}

const benchW2 = `version: 1
sources:
  feeds: { type: file, path: in/feed-*.jsonl, follow: false }
workers:
  w2:
    inputs: [feeds]
    steps:
      - parse_json: {}
      - filter: 'level != "debug"'
      - set: { pipeline: w2 }
sinks:
  out: { type: file, inputs: [w2], path: out/out.jsonl }
`
