package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkCheckpointInterval measures what checkpoints cost end to end:
// the built etld runs the benchmark workloads W1 (passthrough) and W2
// (parse_json, filter, set) of bench/ on 4 feeds x 250,000 lines with
// checkpoint_interval 1s (the default), 100ms (ten times as many
// commits: a run of about a second sees at most one periodic commit at
// 1s) and 1h (in effect off: only the commits at start and at the end),
// and reports input records/s (mean over the b.N runs, and the best run)
// and the epoch of the last commit (periodic commits + 1). fsync is the
// default, `checkpoint`.
//
//	go test -run '^$' -bench CheckpointInterval -benchtime 3x ./e2e/
//
// Data and output go to /dev/shm when it exists (as in bench/), else the
// temporary directory; $ETLD_BENCH_DIR chooses another place (a disk, to
// include the cost of real fsyncs). The feeds are generated once by
// ../shared/bench/gendata.go (-seed 1) when it is there, else from this
// package's records, and kept in <dir>/etld-crashbench-data-4x250000.
func BenchmarkCheckpointInterval(b *testing.B) {
	const feeds, lines = 4, 250000
	base := os.Getenv("ETLD_BENCH_DIR")
	if base == "" {
		base = os.TempDir()
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			base = "/dev/shm"
		}
	}
	data := crashBenchData(b, base, feeds, lines)
	glob := filepath.Join(data, "feed-*.jsonl")
	total := feeds * lines
	debug := crashCountDebug(b, glob)
	workloads := []struct {
		name, pipeline string
		want           int
	}{
		{"W1", `sources:
  feeds: {type: file, path: "` + glob + `", follow: false}
sinks:
  out: {type: file, inputs: [feeds], path: out/out.jsonl, fsync: checkpoint}
`, total},
		{"W2", `sources:
  feeds: {type: file, path: "` + glob + `", follow: false}
workers:
  w2:
    inputs: [feeds]
    steps:
      - parse_json: {}
      - filter: 'level != "debug"'
      - set: {pipeline: w2}
sinks:
  out: {type: file, inputs: [w2], path: out/out.jsonl, fsync: checkpoint}
`, total - debug},
	}
	for _, w := range workloads {
		for _, interval := range []string{"100ms", "1s", "1h"} {
			b.Run(fmt.Sprintf("%s/checkpoint_interval=%s", w.name, interval), func(b *testing.B) {
				work, err := os.MkdirTemp(base, "etld-crashbench-")
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { os.RemoveAll(work) })
				cfg := writeConfig(b, work, "bench.yaml", "version: 1\ncheckpoint_interval: "+interval+"\n"+w.pipeline)
				state := filepath.Join(work, "state")
				out := filepath.Join(work, "out", "out.jsonl")
				var sum, best time.Duration
				var commits uint64
				b.ResetTimer()
				for range b.N {
					b.StopTimer()
					os.RemoveAll(filepath.Join(work, "out"))
					os.RemoveAll(state)
					cmd := exec.Command(etldBin, "run", "-c", cfg, "--state-dir", state,
						"--admin", "off", "--no-watch", "--log-level", "warn")
					var stderr bytes.Buffer
					cmd.Stderr = &stderr
					b.StartTimer()
					start := time.Now()
					err := cmd.Run()
					d := time.Since(start)
					b.StopTimer()
					if err != nil {
						b.Fatalf("etld: %v\n%s", err, stderr.String())
					}
					if n := crashCountLines(b, out); n != w.want {
						b.Fatalf("%s wrote %d lines, want %d", w.name, n, w.want)
					}
					commits += crashEpoch(filepath.Join(state, "bench.json"))
					sum += d
					if best == 0 || d < best {
						best = d
					}
					b.StartTimer()
				}
				b.ReportMetric(float64(total)*float64(b.N)/sum.Seconds(), "records/s")
				b.ReportMetric(float64(total)/best.Seconds(), "best-records/s")
				b.ReportMetric(float64(commits)/float64(b.N), "epochs/run")
			})
		}
	}
}

// crashBenchData returns the directory of the benchmark feeds
// feed-1.jsonl .. feed-N.jsonl, generating them once.
func crashBenchData(b *testing.B, base string, feeds, lines int) string {
	b.Helper()
	dir := filepath.Join(base, fmt.Sprintf("etld-crashbench-data-%dx%d", feeds, lines))
	stamp := filepath.Join(dir, ".done")
	if _, err := os.Stat(stamp); err == nil {
		return dir
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	gen := filepath.Join(repoRoot, "..", "shared", "bench", "gendata.go")
	if _, err := os.Stat(gen); err == nil {
		cmd := exec.Command("go", "run", gen, "-out", dir, "-feeds", fmt.Sprint(feeds), "-lines", fmt.Sprint(lines), "-seed", "1")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("gendata: %v\n%s", err, out)
		}
	} else {
		for k := 1; k <= feeds; k++ {
			data, _ := feed(fmt.Sprintf("feed-%d", k), 0, lines)
			writeFile(b, dir, fmt.Sprintf("feed-%d.jsonl", k), data)
		}
	}
	if err := os.WriteFile(stamp, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// crashCountDebug counts the lines with "level":"debug" in the files
// matching glob (W2 drops them).
func crashCountDebug(b *testing.B, glob string) int {
	b.Helper()
	names, _ := filepath.Glob(glob)
	n := 0
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"level":"debug"`) {
				n++
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			b.Fatal(err)
		}
	}
	return n
}

// crashCountLines counts the lines of a file.
func crashCountLines(b *testing.B, path string) int {
	b.Helper()
	return (&lineCounter{path: path}).count()
}
