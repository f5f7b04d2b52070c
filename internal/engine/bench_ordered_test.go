package engine

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/etld/etld/internal/linescan"
)

// benchOrderedW2 is W2 (parse_json, drop level "debug", set pipeline) in
// a worker with the given `ordered:` setting, over the four feeds of
// writeBenchFeeds, into one file sink (no merge).
func benchOrderedW2(ordered string) string {
	return `version: 1
sources:
  feeds: { type: file, path: in/feed-*.jsonl, follow: false }
workers:
  w2:
    inputs: [feeds]
    ordered: ` + ordered + `
    steps:
      - parse_json: {}
      - filter: 'level != "debug"'
      - set: { pipeline: w2 }
sinks:
  out: { type: file, inputs: [w2], path: out/out.jsonl }
`
}

// benchTmpfsDir is a fresh directory on /dev/shm (tmpfs) when there is
// one, so that both variants read and write memory rather than a disk;
// else b.TempDir().
func benchTmpfsDir(b *testing.B) string {
	b.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "etld-bench-ordered-")
		if err == nil {
			b.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return b.TempDir()
}

// BenchmarkOrderedWorker compares a W2 worker with `ordered: true`
// against the same worker with `ordered: false` over the same input
// (written once, on tmpfs when there is one). The target is
// ordered within 15% of unordered in records/s:
//
//	go test ./internal/engine -run XXX -bench Ordered -benchtime 10x -count 5
//
// The worker runs its default concurrency (one goroutine per CPU), which
// is where keeping the arrival order has something to undo.
func BenchmarkOrderedWorker(b *testing.B) {
	dir := benchTmpfsDir(b)
	if err := os.MkdirAll(filepath.Join(dir, "in"), 0o755); err != nil {
		b.Fatal(err)
	}
	lines, size, debug := writeBenchFeeds(b, filepath.Join(dir, "in"))
	for _, v := range []struct{ name, ordered string }{
		{"unordered", "false"},
		{"ordered", "true"},
	} {
		b.Run(v.name, func(b *testing.B) {
			pipes := loadPipeline(b, dir, "bench-"+v.name, benchOrderedW2(v.ordered), nil)
			out := filepath.Join(dir, "out", "out.jsonl")
			b.SetBytes(int64(size))
			b.ReportAllocs()
			cpu0 := processCPU(b)
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				if err := os.RemoveAll(filepath.Dir(out)); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := Run(context.Background(), pipes, Options{Logger: nopLogger()}); err != nil {
					b.Fatal(err)
				}
				if i == 0 {
					b.StopTimer()
					c := processCPU(b)
					if got, want := countLines(out), lines-debug; got != want {
						b.Fatalf("output has %d lines, want %d", got, want)
					}
					if v.ordered == "true" {
						checkPerFeedOrder(b, out)
					}
					cpu0 += processCPU(b) - c // the checks are not the pipeline's
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
			// CPU time per record (user+system of the whole process, less
			// the checks) tells the cost of ordering apart from the
			// machine's load.
			b.ReportMetric(float64(processCPU(b)-cpu0)/(float64(lines)*float64(b.N)), "cpu-ns/record")
		})
	}
}

// processCPU is the user+system CPU time of the process so far, in ns.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// checkPerFeedOrder fails b unless every feed's records appear in the
// output in increasing "seq" order, which `ordered: true` promises
// (each input's order kept). It reads the fields by their bytes as
// writeBenchFeeds and the set step write them.
func checkPerFeedOrder(b *testing.B, path string) {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	last := map[string]int64{}
	lineNo := 0
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		lineNo++
		feed, ok1 := linescan.String(line, `"feed":"`)
		seq, ok2 := linescan.Int(line, `"seq":`)
		if !ok1 || !ok2 {
			b.Fatalf("output line %d has no feed or seq: %.200s", lineNo, line)
		}
		if prev, seen := last[feed]; seen && seq <= prev {
			b.Fatalf("output line %d: %s seq %d after seq %d: the worker did not keep the input order", lineNo, feed, seq, prev)
		}
		last[feed] = seq
	}
}
