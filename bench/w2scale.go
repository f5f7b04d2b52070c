package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"
)

// W2's cost along two dimensions of the scaling model:
//
//   - W2-SIZE: W2 over feeds of about 150 B, 1 KiB and 8 KiB lines
//     (genJSONFeedSized: msg padded with more words), the same number of
//     bytes at every size (-size-mb), so that the cost per record and per
//     byte can be told apart;
//   - W2-CORES: W2 over the standard feeds with GOMAXPROCS=1 and 2 (the
//     worker's goroutines default to the number of CPUs either way).
//
//	go run ./bench -workloads W2-SIZE,W2-CORES -runs 5
//
// Each row is the median of -runs runs (wall time; CPU and RSS of that
// run), with the fastest and slowest wall times, and every run's output
// line count is checked against the feeds' non-debug records.

// w2ScaleConfig is what runW2Size and runW2Cores need.
type w2ScaleConfig struct {
	shared, data, work, bin string
	feeds, lines, runs      int
	sizeMB                  int  // W2-SIZE: bytes of feeds per size
	clean                   bool // W2-SIZE: delete its feeds at the end
}

// w2Sizes are W2-SIZE's line sizes; 0 is the generator's own (~150 B).
var w2Sizes = []int{0, 1024, 8192}

// w2Row is one row of a scaling table.
type w2Row struct {
	label           string
	records         int
	bytes           int64
	med, fast, slow result
}

func runW2Size(c w2ScaleConfig) error {
	var rows []w2Row
	load := loadavg()
	for _, size := range w2Sizes {
		avg := 160 // the natural lines' mean, about
		if size > 0 {
			avg = size
		}
		lines := max(1, c.sizeMB<<20/c.feeds/avg)
		dir := filepath.Join(defaultBase(), fmt.Sprintf("etld-bench-w2size-%d-%dx%d", size, c.feeds, lines))
		if err := generateSized(dir, c.feeds, lines, size); err != nil {
			return err
		}
		if c.clean {
			defer os.RemoveAll(dir)
		}
		row, err := runW2Rows(c, dir, fmt.Sprintf("%d B", size), nil)
		if err != nil {
			return err
		}
		if size == 0 {
			row.label = fmt.Sprintf("~%d B", row.bytes/int64(row.records))
		}
		rows = append(rows, row)
	}
	fmt.Printf("\nW2 by record size: %d feeds, ~%d MB of lines per size, %d CPUs, median of %d runs\n",
		c.feeds, c.sizeMB, runtime.NumCPU(), c.runs)
	fmt.Printf("load average %s before, %s after\n\n", load, loadavg())
	printW2Rows("line size", rows)
	return nil
}

func runW2Cores(c w2ScaleConfig) error {
	if err := generate(c.shared, c.data, c.feeds, c.lines); err != nil {
		return err
	}
	load := loadavg()
	var rows []w2Row
	for _, procs := range []int{1, 2} {
		row, err := runW2Rows(c, c.data, fmt.Sprintf("GOMAXPROCS=%d", procs), []string{"GOMAXPROCS=" + strconv.Itoa(procs)})
		if err != nil {
			return err
		}
		rows = append(rows, row)
	}
	fmt.Printf("\nW2 by cores: %d feeds x %d lines, %d CPUs, median of %d runs\n", c.feeds, c.lines, runtime.NumCPU(), c.runs)
	fmt.Printf("load average %s before, %s after\n\n", load, loadavg())
	printW2Rows("cores", rows)
	return nil
}

// generateSized writes W2-SIZE's feeds of about size-byte lines into dir
// (seed 1), unless a previous run left them there.
func generateSized(dir string, feeds, lines, size int) error {
	stamp := filepath.Join(dir, ".done")
	if _, err := os.Stat(stamp); err == nil {
		return nil
	}
	os.RemoveAll(dir)
	fmt.Fprintf(os.Stderr, "generating %d x %d lines of ~%d bytes into %s\n", feeds, lines, max(size, 160), dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	start := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for k := 1; k <= feeds; k++ {
		if err := genJSONFeedSized(dir, k, lines, 1, start, size); err != nil {
			return err
		}
	}
	return os.WriteFile(stamp, nil, 0o644)
}

// runW2Rows runs W2 over the feeds in dir c.runs times with env added to
// etld's environment, checks every output and returns the median run.
func runW2Rows(c w2ScaleConfig, dir, label string, env []string) (w2Row, error) {
	matches, _ := filepath.Glob(filepath.Join(dir, "feed-*.jsonl"))
	if len(matches) == 0 {
		return w2Row{}, fmt.Errorf("%s: no feeds", dir)
	}
	records, size := 0, int64(0)
	for _, p := range matches {
		n, err := countLines(p)
		if err != nil {
			return w2Row{}, err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return w2Row{}, err
		}
		records, size = records+n, size+fi.Size()
	}
	debug, err := countDebug(matches)
	if err != nil {
		return w2Row{}, err
	}
	out := filepath.Join(c.work, "w2scale.jsonl")
	cfg := filepath.Join(c.work, "w2scale.yaml")
	pipe := w2Pipeline(filepath.Join(dir, "feed-*.jsonl"), "", `{type: file, inputs: [w2], path: "`+out+`", fsync: checkpoint}`)
	if err := os.WriteFile(cfg, []byte(pipe), 0o644); err != nil {
		return w2Row{}, err
	}
	var rs []result
	for range c.runs {
		os.Remove(out)
		state := filepath.Join(c.work, "w2scale-state")
		os.RemoveAll(state)
		cmd := exec.Command(c.bin, "run", "-c", cfg, "--state-dir", state, "--admin", "off", "--no-watch", "--log-level", "warn")
		cmd.Env = append(os.Environ(), env...)
		cmd.Stderr = os.Stderr
		r, err := measure(cmd, out)
		if err != nil {
			return w2Row{}, fmt.Errorf("W2 %s: %w", label, err)
		}
		if r.lines != records-debug {
			return w2Row{}, fmt.Errorf("W2 %s wrote %d lines, want %d", label, r.lines, records-debug)
		}
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b result) int { return int(a.wall - b.wall) })
	return w2Row{label: label, records: records, bytes: size, med: rs[len(rs)/2], fast: rs[0], slow: rs[len(rs)-1]}, nil
}

// printW2Rows prints rows as a Markdown table: throughput in records and
// MB, and the CPU cost per million records and per GB of lines.
func printW2Rows(what string, rows []w2Row) {
	fmt.Printf("| %s | records | records/s (min-max) | MB/s | CPU s | CPU s per M records | CPU s per GB | peak RSS MiB |\n", what)
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		w, cpu := r.med.wall.Seconds(), r.med.cpu.Seconds()
		fmt.Printf("| %s | %d | %.2f M (%.2f-%.2f M) | %.0f | %.2f | %.3f | %.2f | %.1f |\n", r.label, r.records,
			float64(r.records)/w/1e6, float64(r.records)/r.slow.wall.Seconds()/1e6, float64(r.records)/r.fast.wall.Seconds()/1e6,
			float64(r.bytes)/w/1e6, cpu, cpu/(float64(r.records)/1e6), cpu/(float64(r.bytes)/1e9), float64(r.med.rssKiB)/1024)
	}
}
