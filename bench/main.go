// Command bench measures etld end to end on the shared benchmark feeds
// (../shared/bench/gendata.go) for workloads W1 (passthrough) and W2
// (parse, filter, enrich), timing `cat` in the same run as a reference:
//
//	go run ./bench -shared ../shared/bench
//	go run ./bench -lines 2000000 -runs 1   # the 4 x 2,000,000-line check
//
// -workloads chooses what runs (default W1,W2). WM is the ordered merge
// (SPEC §5): W2's steps in an `ordered: true` worker into a file sink with
// `merge: {order_by: ts}`, over -merge-feeds (default 8) x -lines feeds of
// their own, next to plain W2 over the same feeds and W2 with `ordered:
// true` but no merge, the runs interleaved so that load hits all alike:
//
//	go run ./bench -workloads WM -runs 3
//
// WM's output must hold every record W2 keeps, sorted by ts (ties in
// feed order), each feed's records in seq order; any other output fails
// the run.
//
// It generates the data once into -data, builds etld, runs every workload
// -runs times and prints a Markdown table of input records/s, CPU seconds
// and peak RSS (best run by wall time). Output line counts are checked, so
// a fast but wrong run cannot pass as a result.
//
// Data and output go to /dev/shm (tmpfs) when it exists, so that the
// figures measure etld rather than the disk; -data and -work choose other
// places, and the filesystem of each is printed with the results. The
// generated feeds are kept between runs (4 x 500,000 lines are 325 MB,
// 4 x 2,000,000 lines 1.3 GB, held in RAM on tmpfs): delete -data to free
// them.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/etld/etld/internal/linescan"
)

type result struct {
	name      string
	wall, cpu time.Duration
	rssKiB    int64
	lines     int
}

func main() {
	base := defaultBase()
	shared := flag.String("shared", "../shared/bench", "directory holding gendata.go")
	data := flag.String("data", "", "where the feeds are generated, kept between runs (default "+filepath.Join(base, "etld-bench-data-FEEDSxLINES")+")")
	work := flag.String("work", base, "directory for the binary, configs and output (a temporary directory is made inside it)")
	feeds := flag.Int("feeds", 4, "number of feeds")
	lines := flag.Int("lines", 500000, "lines per feed")
	runs := flag.Int("runs", 3, "runs per workload; the fastest is reported (WM: median and range)")
	workloads := flag.String("workloads", "W1,W2", "comma-separated workloads: W1, W2 (over -feeds), WM (ordered merge, over -merge-feeds)")
	mergeFeeds := flag.Int("merge-feeds", 8, "number of feeds for WM (and the W2 it is compared with)")
	mergeData := flag.String("merge-data", "", "where WM's feeds are generated (default "+filepath.Join(base, "etld-bench-data-MERGEFEEDSxLINES")+")")
	timeout := flag.Duration("timeout", 10*time.Minute, "bound on one etld run of the WM group (a stuck merge fails instead of hanging)")
	cpuprofile := flag.String("cpuprofile", "", "directory for CPU profiles of the WM group's etld runs (ETLD_CPUPROFILE), e.g. WM-1.pprof")
	clean := flag.Bool("clean", false, "delete the generated feeds at the end")
	flag.Parse()
	if *data == "" {
		*data = filepath.Join(base, fmt.Sprintf("etld-bench-data-%dx%d", *feeds, *lines))
	}
	if *mergeData == "" {
		*mergeData = filepath.Join(base, fmt.Sprintf("etld-bench-data-%dx%d", *mergeFeeds, *lines))
	}
	sel := map[string]bool{}
	for _, w := range strings.Split(*workloads, ",") {
		w = strings.ToUpper(strings.TrimSpace(w))
		switch w {
		case "W1", "W2", "WM":
			sel[w] = true
		case "":
		default:
			fmt.Fprintf(os.Stderr, "bench: unknown workload %q in -workloads (valid: W1, W2, WM)\n", w)
			os.Exit(2)
		}
	}
	if len(sel) == 0 || *runs < 1 || *feeds < 1 || *mergeFeeds < 1 || *lines < 1 {
		fmt.Fprintln(os.Stderr, "bench: nothing to run (see -workloads, -runs, -feeds, -merge-feeds, -lines)")
		os.Exit(2)
	}
	err := func() error {
		w, err := os.MkdirTemp(*work, "etld-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(w)
		bin := filepath.Join(w, "etld")
		build := exec.Command("go", "build", "-o", bin, "./cmd/etld")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build: %w", err)
		}
		if sel["W1"] || sel["W2"] {
			if *clean {
				defer os.RemoveAll(*data)
			}
			if err := run(*shared, *data, w, bin, *feeds, *lines, *runs, sel); err != nil {
				return err
			}
		}
		if sel["WM"] {
			if *clean {
				defer os.RemoveAll(*mergeData)
			}
			if sel["W1"] || sel["W2"] {
				fmt.Println()
			}
			mc := mergeConfig{shared: *shared, data: *mergeData, work: w, bin: bin, feeds: *mergeFeeds, lines: *lines,
				runs: *runs, timeout: *timeout, profiles: *cpuprofile}
			if err := runMerge(mc); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// defaultBase is /dev/shm when it is a directory (tmpfs on Linux), else
// the temporary directory.
func defaultBase() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

// loadavg returns the first three fields of /proc/loadavg, or "?".
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// countDebug counts the records with level "debug" in the feeds, which
// W2 drops; gendata writes the field exactly as `"level":"debug"`.
func countDebug(paths []string) (int, error) {
	pat := []byte(`"level":"debug"`)
	n := 0
	buf := make([]byte, 1<<20)
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return 0, err
		}
		keep := 0 // bytes carried over: the start of a match split by a read
		for {
			k, err := f.Read(buf[keep:])
			chunk := buf[:keep+k]
			n += bytes.Count(chunk, pat)
			keep = copy(buf, chunk[max(0, len(chunk)-(len(pat)-1)):])
			if err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				return 0, err
			}
		}
		f.Close()
	}
	return n, nil
}

// generate writes feeds x lines feeds into data with gendata (seed 1)
// unless a previous run left them there.
func generate(shared, data string, feeds, lines int) error {
	stamp := filepath.Join(data, fmt.Sprintf(".done-%d-%d", feeds, lines))
	if _, err := os.Stat(stamp); err == nil {
		return nil
	}
	os.RemoveAll(data)
	fmt.Fprintf(os.Stderr, "generating %d x %d lines into %s\n", feeds, lines, data)
	cmd := exec.Command("go", "run", filepath.Join(shared, "gendata.go"), "-out", data,
		"-feeds", fmt.Sprint(feeds), "-lines", fmt.Sprint(lines), "-seed", "1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("gendata: %w", err)
	}
	return os.WriteFile(stamp, nil, 0o644)
}

// run measures cat and the selected ones of W1 and W2 over feeds x lines
// feeds in data, best of runs each.
func run(shared, data, work, bin string, feeds, lines, runs int, sel map[string]bool) error {
	if err := generate(shared, data, feeds, lines); err != nil {
		return err
	}
	glob := filepath.Join(data, "feed-*.jsonl")
	matches, _ := filepath.Glob(glob)
	total := feeds * lines

	pipelines := map[string]string{
		"W1": `version: 1
sources:
  feeds: {type: file, path: "` + glob + `", follow: false}
sinks:
  out: {type: file, inputs: [feeds], path: "` + filepath.Join(work, "out.jsonl") + `", fsync: checkpoint}
`,
		"W2": `version: 1
sources:
  feeds: {type: file, path: "` + glob + `", follow: false}
workers:
  w2:
    inputs: [feeds]
    steps:
      - parse_json: {}
      - filter: 'level != "debug"'
      - set: {pipeline: w2}
sinks:
  out: {type: file, inputs: [w2], path: "` + filepath.Join(work, "out.jsonl") + `", fsync: checkpoint}
`,
	}
	loadBefore := loadavg()
	var results []result
	best := func(name string, f func() (result, error)) error {
		var b result
		for i := range runs {
			r, err := f()
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if i == 0 || r.wall < b.wall {
				b = r
			}
		}
		b.name = name
		results = append(results, b)
		return nil
	}
	out := filepath.Join(work, "out.jsonl")
	if err := best("cat (reference)", func() (result, error) {
		os.Remove(out)
		f, err := os.Create(out)
		if err != nil {
			return result{}, err
		}
		defer f.Close()
		cmd := exec.Command("cat", matches...)
		cmd.Stdout = f
		return measure(cmd, out)
	}); err != nil {
		return err
	}
	for _, w := range []string{"W1", "W2"} {
		if !sel[w] {
			continue
		}
		cfg := filepath.Join(work, w+".yaml")
		if err := os.WriteFile(cfg, []byte(pipelines[w]), 0o644); err != nil {
			return err
		}
		if err := best("etld "+w, func() (result, error) {
			os.Remove(out)
			os.RemoveAll(filepath.Join(work, "state"))
			cmd := exec.Command(bin, "run", "-c", cfg, "--state-dir", filepath.Join(work, "state"),
				"--admin", "off", "--no-watch", "--log-level", "warn")
			cmd.Stderr = os.Stderr
			return measure(cmd, out)
		}); err != nil {
			return err
		}
	}
	debug, err := countDebug(matches)
	if err != nil {
		return err
	}
	if feeds == 4 && lines == 500000 && debug != 199921 {
		return fmt.Errorf("the feeds in %s have %d debug records, want 199,921 (seed 1): delete the directory to regenerate them", data, debug)
	}
	want := map[string]int{"cat (reference)": total, "etld W1": total, "etld W2": total - debug}
	fmt.Printf("%d feeds x %d lines (%d records), %s/%s, %d CPUs, best of %d runs\n",
		feeds, lines, total, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runs)
	fmt.Printf("data %s (%s), output %s (%s), load average %s before, %s after\n\n",
		data, fsType(data), work, fsType(work), loadBefore, loadavg())
	fmt.Println("| workload | records/s | wall s | CPU s | peak RSS MiB | output lines |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, r := range results {
		fmt.Printf("| %s | %.0f | %.2f | %.2f | %.1f | %d |\n", r.name,
			float64(total)/r.wall.Seconds(), r.wall.Seconds(), r.cpu.Seconds(), float64(r.rssKiB)/1024, r.lines)
		if n, ok := want[r.name]; ok && r.lines != n {
			return fmt.Errorf("%s wrote %d lines, want %d", r.name, r.lines, n)
		}
	}
	if len(results) == 3 {
		cat, w1, w2 := results[0], results[1], results[2]
		fmt.Printf("\nW1 throughput = %.2f x cat; W2 = %.0f records/s\n",
			cat.wall.Seconds()/w1.wall.Seconds(), float64(total)/w2.wall.Seconds())
	}
	return nil
}

// measure runs cmd and returns its wall time, CPU time and peak RSS, and
// the number of lines in out.
func measure(cmd *exec.Cmd, out string) (result, error) {
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return result{}, err
	}
	r := result{wall: time.Since(start), cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.rssKiB = ru.Maxrss // KiB on Linux
	}
	n, err := countLines(out)
	r.lines = n
	return r, err
}

func countLines(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	rd := bufio.NewReaderSize(f, 1<<20)
	buf := make([]byte, 1<<20)
	for {
		k, err := rd.Read(buf)
		n += bytes.Count(buf[:k], []byte{'\n'})
		if err != nil {
			return n, nil
		}
	}
}

// mergeConfig is the WM group's setting.
type mergeConfig struct {
	shared, data, work, bin string
	feeds, lines, runs      int
	timeout                 time.Duration
	profiles                string // directory for ETLD_CPUPROFILE files, or ""
}

// mergePipeline is W2 over glob into out: with ordered, in an `ordered:
// true` worker; with merge, into a sink merging by ts.
func mergePipeline(glob, out string, ordered, merge bool) string {
	worker := ""
	if ordered {
		worker = "    ordered: true\n"
	}
	sink := `{type: file, inputs: [w2], path: "` + out + `", fsync: checkpoint}`
	if merge {
		sink = `{type: file, inputs: [w2], path: "` + out + `", fsync: checkpoint, merge: {order_by: ts}}`
	}
	return `version: 1
sources:
  feeds: {type: file, path: "` + glob + `", follow: false}
workers:
  w2:
    inputs: [feeds]
` + worker + `    steps:
      - parse_json: {}
      - filter: 'level != "debug"'
      - set: {pipeline: w2}
sinks:
  out: ` + sink + "\n"
}

// runMerge measures WM against W2 and W2 ordered over the same feeds
// (and cat), interleaving the runs, and checks every output.
func runMerge(mc mergeConfig) error {
	if err := generate(mc.shared, mc.data, mc.feeds, mc.lines); err != nil {
		return err
	}
	if mc.profiles != "" {
		if err := os.MkdirAll(mc.profiles, 0o755); err != nil {
			return err
		}
	}
	glob := filepath.Join(mc.data, "feed-*.jsonl")
	matches, _ := filepath.Glob(glob)
	if len(matches) != mc.feeds {
		return fmt.Errorf("%s: %d feeds, want %d: delete the directory to regenerate them", mc.data, len(matches), mc.feeds)
	}
	total := mc.feeds * mc.lines
	debug, err := countDebug(matches)
	if err != nil {
		return err
	}
	out := filepath.Join(mc.work, "merge-out.jsonl")
	state := filepath.Join(mc.work, "merge-state")
	type workload struct {
		name, short string
		cfg         string // "" for cat
		want        int
		check       func(string) error // checks the output beyond its line count
	}
	ws := []workload{
		{name: "cat (reference)", want: total},
		{name: "etld W2", short: "W2", want: total - debug},
		{name: "etld W2 ordered", short: "W2o", want: total - debug, check: func(p string) error { return checkMerged(p, false) }},
		{name: "etld WM (merge by ts)", short: "WM", want: total - debug, check: func(p string) error { return checkMerged(p, true) }},
	}
	for i, w := range ws[1:] {
		cfg := filepath.Join(mc.work, "merge-"+w.short+".yaml")
		src := mergePipeline(glob, out, w.short != "W2", w.short == "WM")
		if err := os.WriteFile(cfg, []byte(src), 0o644); err != nil {
			return err
		}
		ws[i+1].cfg = cfg
	}
	loadBefore := loadavg()
	res := make([][]result, len(ws)) // [workload][round]
	var failures []string
	for round := range mc.runs {
		for i, w := range ws {
			os.Remove(out)
			os.RemoveAll(state)
			ctx, cancel := context.WithTimeout(context.Background(), mc.timeout)
			var cmd *exec.Cmd
			if w.cfg == "" {
				f, err := os.Create(out)
				if err != nil {
					cancel()
					return err
				}
				cmd = exec.CommandContext(ctx, "cat", matches...)
				cmd.Stdout = f
				defer f.Close() // a second close after measure's is harmless
			} else {
				cmd = exec.CommandContext(ctx, mc.bin, "run", "-c", w.cfg, "--state-dir", state,
					"--admin", "off", "--no-watch", "--log-level", "warn")
				cmd.Stderr = os.Stderr
				if mc.profiles != "" {
					cmd.Env = append(os.Environ(), "ETLD_CPUPROFILE="+filepath.Join(mc.profiles, fmt.Sprintf("%s-%d.pprof", w.short, round+1)))
				}
			}
			r, err := measure(cmd, out)
			if f, ok := cmd.Stdout.(*os.File); ok {
				f.Close()
			}
			timedOut := ctx.Err() == context.DeadlineExceeded
			cancel()
			if timedOut {
				err = fmt.Errorf("still running after -timeout %v: killed (%v)", mc.timeout, err)
			}
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", w.name, round+1, err)
			}
			r.name = w.name
			fmt.Fprintf(os.Stderr, "%s run %d: %.2f s, %.0f records/s\n", w.name, round+1, r.wall.Seconds(), float64(total)/r.wall.Seconds())
			if r.lines != w.want {
				failures = append(failures, fmt.Sprintf("%s run %d wrote %d lines, want %d", w.name, round+1, r.lines, w.want))
			} else if w.check != nil {
				if err := w.check(out); err != nil {
					failures = append(failures, fmt.Sprintf("%s run %d: %v", w.name, round+1, err))
				}
			}
			res[i] = append(res[i], r)
		}
	}
	os.Remove(out)
	os.RemoveAll(state)

	rate := func(r result) float64 { return float64(total) / r.wall.Seconds() }
	fmt.Printf("WM group: %d feeds x %d lines (%d records, %d kept by W2), %s/%s, %d CPUs, %d rounds (cat, W2, W2 ordered, WM each once per round)\n",
		mc.feeds, mc.lines, total, total-debug, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), mc.runs)
	fmt.Printf("data %s (%s), output %s (%s), load average %s before, %s after\n\n",
		mc.data, fsType(mc.data), mc.work, fsType(mc.work), loadBefore, loadavg())
	fmt.Println("| workload | records/s median | records/s min-max | wall s median | CPU s median | peak RSS MiB max | output lines |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for i, w := range ws {
		var rates, walls, cpus []float64
		var rss int64
		for _, r := range res[i] {
			rates = append(rates, rate(r))
			walls = append(walls, r.wall.Seconds())
			cpus = append(cpus, r.cpu.Seconds())
			rss = max(rss, r.rssKiB)
		}
		fmt.Printf("| %s | %.0f | %.0f-%.0f | %.2f | %.2f | %.1f | %d |\n", w.name,
			median(rates), slices.Min(rates), slices.Max(rates), median(walls), median(cpus), float64(rss)/1024, res[i][len(res[i])-1].lines)
	}
	// Ratios per round (the workloads of one round ran back to back, so
	// they saw about the same load), then their median and range.
	ratio := func(a, b int, label, target string) {
		var rs []float64
		for k := range res[a] {
			rs = append(rs, rate(res[a][k])/rate(res[b][k]))
		}
		fmt.Printf("%s: median %.3f (range %.3f-%.3f, per round %s); target %s\n",
			label, median(rs), slices.Min(rs), slices.Max(rs), fmtList(rs), target)
	}
	fmt.Println()
	ratio(3, 1, "WM / W2 records/s", ">= 0.60")
	ratio(2, 1, "W2 ordered / W2 records/s", ">= 0.85 (ordered within 15% of unordered)")
	ratio(1, 0, "W2 / cat records/s", "(reference)")
	if len(failures) > 0 {
		return fmt.Errorf("wrong output:\n  %s", strings.Join(failures, "\n  "))
	}
	fmt.Println("\noutputs checked: line counts; W2 ordered and WM keep each feed's seq order; WM sorted by ts, equal ts in feed order")
	return nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func fmtList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.3f", x)
	}
	return strings.Join(parts, " ")
}

// checkMerged reads a W2-shaped output and checks that each feed's
// records come in increasing seq order and, with sorted, that ts never
// decreases and equal ts come in feed order (feed-1 < feed-2 < ..., the
// file path order of SPEC §5). It reports the first violation and how
// many there are.
func checkMerged(path string, sorted bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(bufio.NewReaderSize(f, 1<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	lastSeq := map[string]int64{}
	var prevTS time.Time
	var prevFeed string
	var first string
	bad := 0
	fail := func(format string, args ...any) {
		if bad == 0 {
			first = fmt.Sprintf(format, args...)
		}
		bad++
	}
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		ts, feed, seq, err := fields(line)
		if err != nil {
			return fmt.Errorf("line %d: %v: %.200s", n, err, line)
		}
		if prev, ok := lastSeq[feed]; ok && seq <= prev {
			fail("line %d: %s seq %d after seq %d (feed order lost)", n, feed, seq, prev)
		}
		lastSeq[feed] = seq
		if sorted && n > 1 {
			switch c := ts.Compare(prevTS); {
			case c < 0:
				fail("line %d: ts %s before the previous line's %s (not sorted)", n, ts.Format(time.RFC3339Nano), prevTS.Format(time.RFC3339Nano))
			case c == 0 && feedLess(feed, prevFeed):
				fail("line %d: equal ts %s, %s after %s (ties not in feed order)", n, ts.Format(time.RFC3339Nano), feed, prevFeed)
			}
		}
		prevTS, prevFeed = ts, feed
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%d order violations, the first at %s", bad, first)
	}
	return nil
}

// feedLess orders gendata's feed names as their file paths sort
// (feed-1.jsonl < feed-10.jsonl < feed-2.jsonl).
func feedLess(a, b string) bool { return a+".jsonl" < b+".jsonl" }

// fields returns a W2 output line's ts, feed and seq, found by their
// bytes (fast) or else by decoding the line as JSON.
func fields(line []byte) (time.Time, string, int64, error) {
	ts, ok1 := linescan.String(line, `"ts":"`)
	feed, ok2 := linescan.String(line, `"feed":"`)
	seq, ok3 := linescan.Int(line, `"seq":`)
	if !ok1 || !ok2 || !ok3 {
		var v struct {
			TS   string `json:"ts"`
			Feed string `json:"feed"`
			Seq  *int64 `json:"seq"`
		}
		if err := json.Unmarshal(line, &v); err != nil {
			return time.Time{}, "", 0, err
		}
		if v.TS == "" || v.Feed == "" || v.Seq == nil {
			return time.Time{}, "", 0, fmt.Errorf("no ts, feed or seq")
		}
		ts, feed, seq = v.TS, v.Feed, *v.Seq
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	return t, feed, seq, err
}
