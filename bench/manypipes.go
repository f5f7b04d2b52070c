package main

// MANYPIPES: one daemon running a directory of N pipeline files, each a
// following file source on its own small input, a worker (parse_json,
// filter, set) and a file sink; every tenth merges two inputs by ts
// (`ordered: true` worker, `merge: {order_by: ts}` sink). For each size
// of -pipes it measures
//
//   - start to READY: from exec to READY=1 on NOTIFY_SOCKET (a unixgram
//     socket the bench listens on), and to every output complete;
//   - a save of one pipeline file (a changed `set` value, written to a
//     temporary file and renamed over it) to READY=1 after the reload's
//     RELOADING=1, median of -pipe-reloads saves of different files, with
//     etld_config_reloads_total checked: success for exactly the saved
//     pipelines, nothing for the others;
//   - /metrics: median time of 20 scrapes and the response size;
//   - go_goroutines, open fds, peak RSS (VmHWM), idle CPU (user+sys
//     over -pipe-idle with nothing to read) and how many checkpoint files
//     were rewritten meanwhile (an idle pipeline should write none);
//
// and checks every output line count (lost = 0, duplicated = 0), also
// after the reloads and a second batch of lines appended to every input.
//
//	go run ./bench -workloads MANYPIPES                 # 50, 200, 500
//	go run ./bench -workloads MANYPIPES -pipes 200 -cpuprofile /tmp/prof

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// manyPipesConfig is the MANYPIPES group's setting.
type manyPipesConfig struct {
	work, bin string
	sizes     []int
	lines     int // lines per input file, per batch
	reloads   int // saves measured per size
	idle      time.Duration
	profiles  string
	timeout   time.Duration
}

// manyPipesResult is one size's figures.
type manyPipesResult struct {
	pipes                   int
	ready, complete         time.Duration
	reload                  time.Duration // median
	reloadMin, reloadMax    time.Duration
	scrape                  time.Duration // median
	scrapeBytes             int
	goroutines, fds, thread int
	rssKiB                  int64
	idleCPU                 float64 // fraction of one core
	idleSaves               int     // state files rewritten while idle
	startCPU                time.Duration
	load                    string
}

func runManyPipes(c manyPipesConfig) error {
	var results []manyPipesResult
	for _, n := range c.sizes {
		fmt.Fprintf(os.Stderr, "MANYPIPES: %d pipelines\n", n)
		r, err := manyPipesOnce(c, n)
		if err != nil {
			return fmt.Errorf("MANYPIPES %d: %w", n, err)
		}
		results = append(results, r)
	}
	fmt.Printf("\nMANYPIPES: a directory of N pipeline files (file source following its own input of %d lines, parse_json+filter+set, file sink; every 10th an ordered merge of 2 inputs), %d CPUs\n\n",
		c.lines, runtime.NumCPU())
	fmt.Println("| pipelines | start to READY s | all outputs s | start CPU s | save to reloaded ms (median, min-max) | /metrics ms | /metrics KiB | goroutines | fds | threads | peak RSS MiB | idle CPU % of a core | state files rewritten while idle | load avg |")
	fmt.Println("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range results {
		fmt.Printf("| %d | %.2f | %.2f | %.2f | %.0f (%.0f-%.0f) | %.1f | %.0f | %d | %d | %d | %.1f | %.2f | %d | %s |\n",
			r.pipes, r.ready.Seconds(), r.complete.Seconds(), r.startCPU.Seconds(),
			ms(r.reload), ms(r.reloadMin), ms(r.reloadMax), ms(r.scrape), float64(r.scrapeBytes)/1024,
			r.goroutines, r.fds, r.thread, float64(r.rssKiB)/1024, 100*r.idleCPU, r.idleSaves, r.load)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// notification is one line of an sd_notify datagram and when it came.
type notification struct {
	msg string
	at  time.Time
}

// listenNotify listens on a unixgram socket at path and sends every line
// of every datagram to the returned channel until the socket is closed.
func listenNotify(path string) (*net.UnixConn, <-chan notification, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan notification, 1024)
	go func() {
		defer close(ch)
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			at := time.Now()
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				if l != "" {
					select {
					case ch <- notification{l, at}:
					default: // STATUS lines nobody waits for
					}
				}
			}
		}
	}()
	return conn, ch, nil
}

// waitNotify returns when msg arrives, or fails after timeout.
func waitNotify(ch <-chan notification, msg string, timeout time.Duration) (time.Time, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case n, ok := <-ch:
			if !ok {
				return time.Time{}, fmt.Errorf("notify socket closed before %s", msg)
			}
			if n.msg == msg {
				return n.at, nil
			}
		case <-t.C:
			return time.Time{}, fmt.Errorf("no %s within %v", msg, timeout)
		}
	}
}

// manyPipeName is pipeline i's name; every tenth merges.
func manyPipeName(i int) string { return fmt.Sprintf("p%04d", i) }
func manyPipeMerges(i int) bool { return i%10 == 9 }

// manyPipeYAML is pipeline i's file, with rev in its set step.
func manyPipeYAML(dir string, i, rev int) string {
	name := manyPipeName(i)
	src := filepath.Join(dir, "in", name+".jsonl")
	worker, merge := "", ""
	if manyPipeMerges(i) {
		src = filepath.Join(dir, "in", name+"-*.jsonl")
		worker, merge = "    ordered: true\n", ", merge: {order_by: ts}"
	}
	return `version: 1
sources:
  in: {type: file, path: "` + src + `", follow: true}
workers:
  w:
    inputs: [in]
` + worker + `    steps:
      - parse_json: {}
      - filter: 'level != "debug"'
      - set: {pipeline: ` + name + `, rev: "r` + strconv.Itoa(rev) + `"}
sinks:
  out: {type: file, inputs: [w], path: "` + filepath.Join(dir, "out", name+".jsonl") + `"` + merge + "}\n"
}

// manyPipeInputs are pipeline i's input files.
func manyPipeInputs(dir string, i int) []string {
	name := manyPipeName(i)
	if manyPipeMerges(i) {
		return []string{filepath.Join(dir, "in", name+"-a.jsonl"), filepath.Join(dir, "in", name+"-b.jsonl")}
	}
	return []string{filepath.Join(dir, "in", name+".jsonl")}
}

// appendManyPipeLines appends lines records (seq from, from+1, ...) to
// path and returns how many of them the filter keeps (every 4th is debug).
func appendManyPipeLines(path string, from, lines int, base time.Time) (int, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriter(f)
	kept := 0
	for k := from; k < from+lines; k++ {
		level := "info"
		if k%4 == 3 {
			level = "debug"
		} else {
			kept++
		}
		ts := base.Add(time.Duration(k) * time.Millisecond).UTC().Format("2006-01-02T15:04:05.000000Z")
		fmt.Fprintf(w, `{"ts":%q,"seq":%d,"level":%q,"user":"u%d","msg":"many pipelines"}`+"\n", ts, k, level, k%97)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	return kept, f.Close()
}

func manyPipesOnce(c manyPipesConfig, n int) (manyPipesResult, error) {
	r := manyPipesResult{pipes: n}
	dir, err := os.MkdirTemp(c.work, fmt.Sprintf("manypipes-%d-", n))
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"conf", "in", "out", "state"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return r, err
		}
	}
	base := time.Now()
	want := make([]int, n) // output lines per pipeline
	appendAll := func(from int) error {
		for i := range n {
			for _, in := range manyPipeInputs(dir, i) {
				k, err := appendManyPipeLines(in, from, c.lines, base)
				if err != nil {
					return err
				}
				want[i] += k
			}
		}
		return nil
	}
	if err := appendAll(0); err != nil {
		return r, err
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, "conf", manyPipeName(i)+".yaml"), []byte(manyPipeYAML(dir, i, 0)), 0o644); err != nil {
			return r, err
		}
	}
	sock := filepath.Join(dir, "notify.sock")
	conn, notes, err := listenNotify(sock)
	if err != nil {
		return r, err
	}
	defer conn.Close()
	addr, err := freeAddr()
	if err != nil {
		return r, err
	}
	cmd := exec.Command(c.bin, "run", "-c", filepath.Join(dir, "conf"), "--state-dir", filepath.Join(dir, "state"),
		"--admin", addr, "--log-level", "warn")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	if c.profiles != "" {
		if err := os.MkdirAll(c.profiles, 0o755); err != nil {
			return r, err
		}
		cmd.Env = append(cmd.Env, "ETLD_CPUPROFILE="+filepath.Join(c.profiles, fmt.Sprintf("MANYPIPES-%d.pprof", n)),
			"ETLD_MEMPROFILE="+filepath.Join(c.profiles, fmt.Sprintf("MANYPIPES-%d.heap", n)))
	}
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	hwm := sampleHWM(cmd.Process.Pid)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(c.timeout):
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("etld did not stop within %v", c.timeout)
		}
	}
	defer stop()

	at, err := waitNotify(notes, "READY=1", c.timeout)
	if err != nil {
		return r, err
	}
	r.ready = at.Sub(start)
	r.startCPU = procCPU(cmd.Process.Pid)
	if err := waitOutputs(dir, want, c.timeout); err != nil {
		return r, err
	}
	r.complete = time.Since(start)

	// Saves of single files: each must reload that pipeline only.
	client := &http.Client{Timeout: c.timeout}
	var took []time.Duration
	saved := map[string]bool{}
	for k := range c.reloads {
		i := (k*n/max(c.reloads, 1) + 3) % n
		name := manyPipeName(i)
		saved[name] = true
		path := filepath.Join(dir, "conf", name+".yaml")
		tmp := filepath.Join(dir, "conf", "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(manyPipeYAML(dir, i, k+1)), 0o644); err != nil {
			return r, err
		}
		t0 := time.Now()
		if err := os.Rename(tmp, path); err != nil {
			return r, err
		}
		if _, err := waitNotify(notes, "RELOADING=1", c.timeout); err != nil {
			return r, err
		}
		at, err := waitNotify(notes, "READY=1", c.timeout)
		if err != nil {
			return r, err
		}
		took = append(took, at.Sub(t0))
		body, err := scrape(client, addr)
		if err != nil {
			return r, err
		}
		if err := checkReloaded(body, saved); err != nil {
			return r, err
		}
	}
	if len(took) > 0 {
		slices.Sort(took)
		r.reload, r.reloadMin, r.reloadMax = took[len(took)/2], took[0], took[len(took)-1]
	}

	// A second batch after the reloads: still every line exactly once.
	if err := appendAll(c.lines); err != nil {
		return r, err
	}
	if err := waitOutputs(dir, want, c.timeout); err != nil {
		return r, err
	}

	var scrapes []time.Duration
	for range 20 {
		t0 := time.Now()
		body, err := scrape(client, addr)
		if err != nil {
			return r, err
		}
		scrapes = append(scrapes, time.Since(t0))
		r.scrapeBytes = len(body)
		r.goroutines = int(metricValue(body, "go_goroutines"))
	}
	slices.Sort(scrapes)
	r.scrape = scrapes[len(scrapes)/2]
	r.fds = countDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
	r.thread = countDir(fmt.Sprintf("/proc/%d/task", cmd.Process.Pid))

	states := statFiles(filepath.Join(dir, "state"))
	cpu0, t0 := procCPU(cmd.Process.Pid), time.Now()
	time.Sleep(c.idle) // measuring idle: nothing to wait for
	r.idleCPU = (procCPU(cmd.Process.Pid) - cpu0).Seconds() / time.Since(t0).Seconds()
	for name, fi := range statFiles(filepath.Join(dir, "state")) {
		if prev, ok := states[name]; !ok || !os.SameFile(prev, fi) || !prev.ModTime().Equal(fi.ModTime()) {
			r.idleSaves++
		}
	}
	r.load = loadavg()
	if err := stop(); err != nil {
		return r, err
	}
	r.rssKiB = hwm()
	return r, nil
}

// waitOutputs polls the outputs until each has its wanted line count;
// more is an error (a duplicate), and so is less at the deadline.
func waitOutputs(dir string, want []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		done := true
		for i, w := range want {
			got, _ := countLines(filepath.Join(dir, "out", manyPipeName(i)+".jsonl"))
			if got > w {
				return fmt.Errorf("%s wrote %d lines, want %d (duplicates)", manyPipeName(i), got, w)
			}
			if got < w {
				done = false
				if time.Now().After(deadline) {
					return fmt.Errorf("%s wrote %d lines after %v, want %d", manyPipeName(i), got, timeout, w)
				}
				break
			}
		}
		if done {
			return nil
		}
		time.Sleep(50 * time.Millisecond) // polling the outputs, with a deadline
	}
}

// checkReloaded checks etld_config_reloads_total in a scrape: a success
// for each saved pipeline, and no reload of any other.
func checkReloaded(body string, saved map[string]bool) error {
	seen := map[string]bool{}
	for line := range strings.Lines(body) {
		rest, ok := strings.CutPrefix(line, "etld_config_reloads_total{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "}")
		if v, _ := strconv.ParseFloat(strings.TrimSpace(value), 64); v == 0 {
			continue // every pipeline's series exist from its start
		}
		var pipe, result string
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			v = strings.Trim(v, `"`)
			switch k {
			case "pipeline":
				pipe = v
			case "result":
				result = v
			}
		}
		if !saved[pipe] {
			return fmt.Errorf("pipeline %s was reloaded (%s) though its file was not saved", pipe, result)
		}
		if result != "success" {
			return fmt.Errorf("reload of %s: %s", pipe, result)
		}
		seen[pipe] = true
	}
	for p := range saved {
		if !seen[p] {
			return fmt.Errorf("pipeline %s was saved but not reloaded", p)
		}
	}
	return nil
}

func scrape(client *http.Client, addr string) (string, error) {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("/metrics: %s", resp.Status)
	}
	return string(b), err
}

// metricValue is the value of an unlabelled metric in a scrape, or 0.
func metricValue(body, name string) float64 {
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// procCPU is a process's user+system CPU time so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces): utime is the
	// 14th field of the line, stime the 15th, in clock ticks (100/s).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

// statFiles is the metadata of the checkpoint files in dir, by name.
func statFiles(dir string) map[string]os.FileInfo {
	out := map[string]os.FileInfo{}
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		if strings.HasSuffix(e.Name(), ".json") {
			if fi, err := os.Stat(filepath.Join(dir, e.Name())); err == nil {
				out[e.Name()] = fi
			}
		}
	}
	return out
}

func countDir(path string) int {
	es, _ := os.ReadDir(path)
	return len(es)
}

// freeAddr is a loopback address with a port free a moment ago.
func freeAddr() (string, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
