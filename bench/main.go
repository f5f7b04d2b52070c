// Command bench measures etld end to end on the shared benchmark feeds
// (../shared/bench/gendata.go) for workloads W1 (passthrough) and W2
// (parse, filter, enrich), timing `cat` in the same run as a reference:
//
//	go run ./bench -shared ../shared/bench
//
// It generates the data once into -data, builds etld, runs every workload
// -runs times and prints a Markdown table of input records/s, CPU seconds
// and peak RSS (best run by wall time). Output line counts are checked, so
// a fast but wrong run cannot pass as a result.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

type result struct {
	name      string
	wall, cpu time.Duration
	rssKiB    int64
	lines     int
}

func main() {
	shared := flag.String("shared", "../shared/bench", "directory holding gendata.go")
	data := flag.String("data", filepath.Join(os.TempDir(), "etld-bench-data"), "where the feeds are generated (kept between runs)")
	feeds := flag.Int("feeds", 4, "number of feeds")
	lines := flag.Int("lines", 500000, "lines per feed")
	runs := flag.Int("runs", 3, "runs per workload; the fastest is reported")
	flag.Parse()
	if err := run(*shared, *data, *feeds, *lines, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(shared, data string, feeds, lines, runs int) error {
	stamp := filepath.Join(data, fmt.Sprintf(".done-%d-%d", feeds, lines))
	if _, err := os.Stat(stamp); err != nil {
		os.RemoveAll(data)
		fmt.Fprintf(os.Stderr, "generating %d x %d lines into %s\n", feeds, lines, data)
		cmd := exec.Command("go", "run", filepath.Join(shared, "gendata.go"), "-out", data,
			"-feeds", fmt.Sprint(feeds), "-lines", fmt.Sprint(lines), "-seed", "1")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("gendata: %w", err)
		}
		if err := os.WriteFile(stamp, nil, 0o644); err != nil {
			return err
		}
	}
	work, err := os.MkdirTemp("", "etld-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "etld")
	build := exec.Command("go", "build", "-o", bin, "./cmd/etld")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build: %w", err)
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
	want := map[string]int{"cat (reference)": total, "etld W1": total}
	if feeds == 4 && lines == 500000 {
		want["etld W2"] = 1800079 // seed 1 has exactly 199,921 debug records
	}
	fmt.Printf("%d feeds x %d lines (%d records), %s/%s, %d CPUs, best of %d runs\n\n",
		feeds, lines, total, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runs)
	fmt.Println("| workload | records/s | wall s | CPU s | peak RSS MiB | output lines |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	for _, r := range results {
		fmt.Printf("| %s | %.0f | %.2f | %.2f | %.1f | %d |\n", r.name,
			float64(total)/r.wall.Seconds(), r.wall.Seconds(), r.cpu.Seconds(), float64(r.rssKiB)/1024, r.lines)
		if n, ok := want[r.name]; ok && r.lines != n {
			return fmt.Errorf("%s wrote %d lines, want %d", r.name, r.lines, n)
		}
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
