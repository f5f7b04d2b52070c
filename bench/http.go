package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// WH is HTTP ingest: the http_server source into a file sink (fsync:
// checkpoint, on -work), once with ack: checkpoint and once with ack:
// received. Two measurements each:
//
//   - throughput: -http-clients clients, each POSTing NDJSON bodies of
//     -http-body-records records (about 120 bytes each) one after the
//     other, -http-bodies bodies in all: records/s from the first request
//     to the last answer, and the median and 90th percentile time to the
//     200;
//   - latency: one client POSTing one-record bodies one after the other
//     (-http-latency-requests of them): the median and 90th percentile
//     time to the 200, which with ack: checkpoint is one checkpoint
//     (the source asks for one as soon as a body is read).
//
// Every body must be answered 200, and the output must hold every record
// once: a run that loses or repeats anything fails.
//
//	go run ./bench -workloads WH -runs 3
var (
	httpClients  = flag.Int("http-clients", 8, "WH: concurrent clients of the throughput run")
	httpBodies   = flag.Int("http-bodies", 4000, "WH: bodies in all in the throughput run")
	httpPerBody  = flag.Int("http-body-records", 100, "WH: records per body in the throughput run")
	httpLatencyN = flag.Int("http-latency-requests", 300, "WH: one-record requests of the latency run")
)

type httpResult struct {
	records      int
	wall         time.Duration
	p50, p90     time.Duration
	cpu          time.Duration
	rssKiB       int64
	lat50, lat90 time.Duration
}

// runHTTP measures WH runs times per ack mode, interleaved, and prints
// the median of each figure.
func runHTTP(work, bin string, runs int) error {
	load := loadavg()
	modes := []string{"checkpoint", "received"}
	res := map[string][]httpResult{}
	for r := 0; r < runs; r++ {
		for _, mode := range modes {
			hr, err := httpRun(work, bin, mode, r)
			if err != nil {
				return fmt.Errorf("WH ack: %s: %w", mode, err)
			}
			res[mode] = append(res[mode], hr)
		}
	}
	fmt.Printf("WH: HTTP ingest into a file (%s), %d runs, load average before %s, after %s\n\n",
		fsType(work), runs, load, loadavg())
	fmt.Printf("| ack | records/s (%d clients x %d-record bodies) | time to 200, median / p90 | CPU s | peak RSS MiB | one-record request, median / p90 |\n",
		*httpClients, *httpPerBody)
	fmt.Println("|---|---|---|---|---|---|")
	for _, mode := range modes {
		rs := res[mode]
		pick := func(f func(httpResult) float64) float64 {
			xs := make([]float64, len(rs))
			for i, r := range rs {
				xs[i] = f(r)
			}
			return median(xs)
		}
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		fmt.Printf("| `%s` | %.0f | %.1f / %.1f ms | %.2f | %.0f | %.2f / %.2f ms |\n", mode,
			pick(func(r httpResult) float64 { return float64(r.records) / r.wall.Seconds() }),
			pick(func(r httpResult) float64 { return ms(r.p50) }), pick(func(r httpResult) float64 { return ms(r.p90) }),
			pick(func(r httpResult) float64 { return r.cpu.Seconds() }),
			pick(func(r httpResult) float64 { return float64(r.rssKiB) / 1024 }),
			pick(func(r httpResult) float64 { return ms(r.lat50) }), pick(func(r httpResult) float64 { return ms(r.lat90) }))
	}
	return nil
}

// httpRun starts etld with the ack mode, runs the throughput and the
// latency measurements, stops it and checks the output.
func httpRun(work, bin, mode string, round int) (httpResult, error) {
	dir := filepath.Join(work, fmt.Sprintf("wh-%s-%d", mode, round))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return httpResult{}, err
	}
	defer os.RemoveAll(dir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return httpResult{}, err
	}
	addr := ln.Addr().String()
	ln.Close()
	out := filepath.Join(dir, "out.jsonl")
	cfg := filepath.Join(dir, "wh.yaml")
	yaml := `version: 1
sources:
  web: {type: http_server, address: "` + addr + `", ack: ` + mode + `, max_connections: 64}
sinks:
  out: {type: file, inputs: [web], path: "` + out + `", fsync: checkpoint}
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		return httpResult{}, err
	}
	cmd := exec.Command(bin, "run", "-c", cfg, "--state-dir", filepath.Join(dir, "state"), "--admin", "off", "--no-watch")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return httpResult{}, err
	}
	defer func() { _ = cmd.Process.Kill() }()
	url := "http://" + addr + "/"
	if err := waitDial(addr, 30*time.Second); err != nil {
		return httpResult{}, fmt.Errorf("%w\n%s", err, stderr.String())
	}

	var hr httpResult
	bodies := make([][]byte, *httpBodies)
	for i := range bodies {
		bodies[i] = httpBody(i, *httpPerBody)
	}
	lat := make([]time.Duration, len(bodies))
	var next int
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for range *httpClients {
		wg.Go(func() {
			cl := &http.Client{Transport: &http.Transport{}}
			defer cl.CloseIdleConnections()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(bodies) {
					return
				}
				t0 := time.Now()
				if err := postOK(cl, url, bodies[i]); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	hr.wall = time.Since(start)
	if firstErr != nil {
		return hr, firstErr
	}
	hr.records = len(bodies) * *httpPerBody
	hr.p50, hr.p90 = percentile(lat, 50), percentile(lat, 90)

	one := make([]time.Duration, *httpLatencyN)
	cl := &http.Client{Transport: &http.Transport{}}
	for i := range one {
		b := httpBody(len(bodies)+i, 1)
		t0 := time.Now()
		if err := postOK(cl, url, b); err != nil {
			return hr, err
		}
		one[i] = time.Since(t0)
	}
	cl.CloseIdleConnections()
	hr.lat50, hr.lat90 = percentile(one, 50), percentile(one, 90)

	// Peak RSS from /proc: the rusage of a child started while this
	// process held a lot of memory can include this process's.
	hr.rssKiB = vmHWM(cmd.Process.Pid)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return hr, err
	}
	if err := cmd.Wait(); err != nil {
		return hr, fmt.Errorf("etld: %w\n%s", err, stderr.String())
	}
	hr.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && hr.rssKiB == 0 {
		hr.rssKiB = ru.Maxrss
	}
	n, err := countLines(out)
	if err != nil {
		return hr, err
	}
	if want := hr.records + len(one); n != want {
		return hr, fmt.Errorf("output has %d lines, want %d (every body was answered 200)", n, want)
	}
	return hr, nil
}

// httpBody is body i: n NDJSON records of about 120 bytes.
func httpBody(i, n int) []byte {
	var b []byte
	for k := range n {
		b = append(b, `{"ts":"2026-12-04T06:00:00.000Z","level":"info","service":"checkout","body":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"n":`...)
		b = strconv.AppendInt(b, int64(k), 10)
		b = append(b, `,"msg":"order placed by a customer"}`...)
		b = append(b, '\n')
	}
	return b
}

func postOK(cl *http.Client, url string, body []byte) error {
	resp, err := cl.Post(url, "application/x-ndjson", bytes.NewReader(body))
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("answer %d %s", resp.StatusCode, msg)
	}
	return nil
}

func waitDial(addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etld does not listen on %s: %w", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func percentile(xs []time.Duration, p int) time.Duration {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// vmHWM is the peak resident set of process pid in KiB, 0 when unknown.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
