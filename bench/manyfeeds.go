package main

// MANYFEEDS is an ordered merge of many feeds (issue 17): the same total
// of records (-manyfeeds-records, default 4,000,000) split over 10, 100
// and 1,000 finite files (-manyfeeds-sizes), each sorted by ts and
// interleaving in time (genjson.go), through an `ordered: true` worker
// with parse_json into a file sink with `merge: {order_by: ts}`. Every
// output must hold every record, sorted by ts, equal ts in feed order,
// each feed in seq order (checkMerged); a wrong output fails the run.
//
// The live case (manyfeeds_live.go) follows -manyfeeds-live feeds (default
// 1,000), of which 10% send one record and then nothing, with a short
// idle_timeout.
//
//	go run ./bench -workloads MANYFEEDS -runs 3
//
// It prints, per size, the median and range of records/s, CPU seconds
// per million records and peak RSS, with the load average.

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

type manyFeedsConfig struct {
	base, work, bin string
	sizes           []int
	records, runs   int
	timeout         time.Duration
	profiles        string
	clean           bool
	live            int           // feeds of the live case, 0: skip it
	liveRate        int           // records/s written over all live feeds
	liveFor         time.Duration // how long the live writers write
}

// parseSizes reads a comma-separated list of feed counts.
func parseSizes(flagName, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-%s: %q is not a positive number", flagName, f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-%s: no size", flagName)
	}
	return out, nil
}

// manyFeedsPipeline is the merge of the files matching glob into out;
// follow is the file source's follow option, merge the sink's merge
// options after order_by.
func manyFeedsPipeline(glob, out string, follow bool, merge string) string {
	return fmt.Sprintf(`version: 1
sources:
  feeds: {type: file, path: %q, follow: %v}
workers:
  parse:
    inputs: [feeds]
    ordered: true
    steps:
      - parse_json: {}
sinks:
  out: {type: file, inputs: [parse], path: %q, fsync: checkpoint, merge: {order_by: ts%s}}
`, glob, follow, out, merge)
}

func runManyFeeds(mc manyFeedsConfig) error {
	if mc.profiles != "" {
		if err := os.MkdirAll(mc.profiles, 0o755); err != nil {
			return err
		}
	}
	type size struct {
		feeds, lines int
		data, cfg    string
	}
	var sizes []size
	for _, n := range mc.sizes {
		lines := mc.records / n
		data := filepath.Join(mc.base, fmt.Sprintf("etld-bench-data-%dx%d", n, lines))
		if err := generate("", data, n, lines); err != nil {
			return err
		}
		if mc.clean {
			defer os.RemoveAll(data)
		}
		cfg := filepath.Join(mc.work, fmt.Sprintf("manyfeeds-%d.yaml", n))
		out := filepath.Join(mc.work, "manyfeeds-out.jsonl")
		if err := os.WriteFile(cfg, []byte(manyFeedsPipeline(filepath.Join(data, "feed-*.jsonl"), out, false, "")), 0o644); err != nil {
			return err
		}
		sizes = append(sizes, size{n, lines, data, cfg})
	}
	out := filepath.Join(mc.work, "manyfeeds-out.jsonl")
	state := filepath.Join(mc.work, "manyfeeds-state")
	loadBefore := loadavg()
	res := make([][]result, len(sizes))
	var failures []string
	for round := range mc.runs {
		for i, sz := range sizes { // interleaved, so that load hits every size alike
			os.Remove(out)
			os.RemoveAll(state)
			r, err := runOne(runSpec{bin: mc.bin, timeout: mc.timeout, cfg: sz.cfg, out: out, state: state,
				profile: profileFile(mc.profiles, fmt.Sprintf("MANYFEEDS-%d-%d.pprof", sz.feeds, round+1))})
			if err != nil {
				return fmt.Errorf("MANYFEEDS %d feeds, run %d: %w", sz.feeds, round+1, err)
			}
			total := sz.feeds * sz.lines
			fmt.Fprintf(os.Stderr, "MANYFEEDS %d feeds run %d: %.2f s, %.0f records/s, CPU %.2f s, peak RSS %.0f MiB\n",
				sz.feeds, round+1, r.wall.Seconds(), float64(total)/r.wall.Seconds(), r.cpu.Seconds(), float64(r.rssKiB)/1024)
			if r.lines != total {
				failures = append(failures, fmt.Sprintf("%d feeds run %d wrote %d lines, want %d", sz.feeds, round+1, r.lines, total))
			} else if err := checkMerged(out, true); err != nil {
				failures = append(failures, fmt.Sprintf("%d feeds run %d: %v", sz.feeds, round+1, err))
			}
			res[i] = append(res[i], r)
		}
	}
	os.Remove(out)
	os.RemoveAll(state)
	fmt.Printf("MANYFEEDS: ordered merge by ts of %d records over 10-1,000 finite feeds (parse_json in an ordered worker), %s/%s, %d CPUs, %d rounds\n",
		sizes[0].feeds*sizes[0].lines, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), mc.runs)
	names := make([]string, len(sizes))
	for i, sz := range sizes {
		names[i] = fmt.Sprintf("%d feeds x %d records", sz.feeds, sz.lines)
	}
	printRounds(mc.base, mc.work, loadBefore, "records", names, res, sizes[0].feeds*sizes[0].lines)
	if len(failures) > 0 {
		return fmt.Errorf("wrong output:\n  %s", strings.Join(failures, "\n  "))
	}
	fmt.Println("\noutputs checked: every record once, sorted by ts, equal ts in feed order, each feed in seq order")
	if mc.live > 0 {
		fmt.Println()
		return runManyFeedsLive(mc)
	}
	return nil
}
