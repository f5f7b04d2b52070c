package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/etld/etld/internal/notify/notifytest"
)

// The test binary doubles as etld: started with ETLD_TEST_AS_ETLD=1 it
// runs the command line instead of the tests (see startSelf), so the
// end-to-end test below needs no separate build and runs under -race
// when the tests do.
func init() {
	if os.Getenv("ETLD_TEST_AS_ETLD") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
}

// child is an etld process started by startSelf.
type child struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, once done
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSelf runs `etld args...` in dir as a child process with extra
// environment variables. It is killed at the end of the test if it still
// runs, and its log is shown if the test failed.
func startSelf(t *testing.T, dir string, env []string, args ...string) *child {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: exec.Command(exe, args...), stderr: &syncBuffer{}, done: make(chan struct{})}
	c.cmd.Dir = dir
	c.cmd.Stderr = c.stderr
	c.cmd.Env = append(os.Environ(), append([]string{"ETLD_TEST_AS_ETLD=1", "ETLD_CONFIG=", "STATE_DIRECTORY=",
		"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID="}, env...)...)
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("etld log:\n%s", c.stderr.String())
		}
	})
	return c
}

// logField waits for the first JSON log line with the given message and
// returns its field.
func (c *child) logField(t *testing.T, msg, field string) string {
	t.Helper()
	var v string
	eventually(t, "log message "+msg, func() bool {
		sc := bufio.NewScanner(strings.NewReader(c.stderr.String()))
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["message"] == msg {
				v, _ = line[field].(string)
				return true
			}
		}
		select {
		case <-c.done:
			t.Fatalf("etld exited (%v) before logging %q", c.err, msg)
		default:
		}
		return false
	})
	return v
}

// eventually polls cond until it holds; the deadline only turns a hang
// into a failure.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(hangTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", hangTimeout, what)
		}
	}
}

// scrape parses /metrics with the Prometheus text parser.
func scrape(t *testing.T, c *http.Client, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := httpGet(t, c, base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// sample is the value of the series of name whose labels include
// labels; ok is false when there is none.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// appendLines appends n JSON lines to path, numbered from first; every
// 4th has level debug. It returns how many are not debug.
func appendLines(t *testing.T, path string, first, n int) int {
	t.Helper()
	var b bytes.Buffer
	kept := 0
	for i := first; i < first+n; i++ {
		level := "info"
		if i%4 == 3 {
			level = "debug"
		} else {
			kept++
		}
		fmt.Fprintf(&b, `{"seq":%d,"level":%q,"msg":"order %d shipped"}`+"\n", i, level, i)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	return kept
}

// TestMetricsEndToEnd runs etld as systemd would (notify socket,
// watchdog) on a following file source, and checks that what /metrics
// says equals what was read and written: records in and out of every
// stage, filtered records, and the bytes of the output file. It then
// checks the notify protocol around a SIGHUP reload and a SIGTERM stop.
func TestMetricsEndToEnd(t *testing.T) {
	sock, msgs := notifytest.Listen(t, false)
	dir := t.TempDir()
	in := filepath.Join(dir, "in", "orders.jsonl")
	if err := os.MkdirAll(filepath.Dir(in), 0o755); err != nil {
		t.Fatal(err)
	}
	read, kept := 4000, appendLines(t, in, 0, 4000)
	if err := os.WriteFile(filepath.Join(dir, "orders.yaml"), []byte(`version: 1
sources:
  feed: {type: file, path: in/*.jsonl}   # follow: true, so etld keeps running
workers:
  keep:
    inputs: [feed]
    concurrency: 2
    steps:
      - parse_json: {}
      - filter: 'level != "debug"'
sinks:
  out: {type: file, inputs: [keep], path: out/kept.jsonl}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	etldProc := startSelf(t, dir, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=400000"},
		"run", "-c", "orders.yaml", "--state-dir", "state", "--admin", "127.0.0.1:0", "--log-format", "json")

	watchdogPings := 0
	lifecycleMsg := func(m string) bool {
		if m == "WATCHDOG=1" {
			watchdogPings++
		}
		return notifytest.Lifecycle(m)
	}
	if m := notifytest.Next(t, msgs, "READY=1", lifecycleMsg); !strings.HasPrefix(m, "READY=1\nSTATUS=1 pipeline running") {
		t.Fatalf("first notification %q; want READY=1 with STATUS", m)
	}
	base := "http://" + etldProc.logField(t, "admin HTTP listening", "addr")
	client := &http.Client{Timeout: hangTimeout}
	defer client.CloseIdleConnections()

	out := filepath.Join(dir, "out", "kept.jsonl")
	check := func(read, kept int) {
		t.Helper()
		var fams map[string]*dto.MetricFamily
		var data []byte
		eventually(t, fmt.Sprintf("%d records written and counted", kept), func() bool {
			data, _ = os.ReadFile(out)
			if bytes.Count(data, []byte("\n")) != kept {
				return false
			}
			fams = scrape(t, client, base)
			v, _ := sample(fams, "etld_stage_records_out_total", "pipeline", "orders", "stage", "out")
			return v == float64(kept)
		})
		for _, c := range []struct {
			name  string
			stage string
			extra []string
			want  int
		}{
			{"etld_stage_records_out_total", "feed", nil, read},
			{"etld_stage_records_in_total", "keep", nil, read},
			{"etld_stage_records_out_total", "keep", nil, kept},
			{"etld_stage_records_dropped_total", "keep", []string{"reason", "filtered"}, read - kept},
			{"etld_stage_records_in_total", "out", nil, kept},
			{"etld_stage_records_out_total", "out", nil, kept},
			{"etld_sink_bytes_written_total", "out", nil, len(data)},
			{"etld_stage_errors_total", "keep", nil, 0},
		} {
			labels := append([]string{"pipeline", "orders", "stage", c.stage}, c.extra...)
			if v, ok := sample(fams, c.name, labels...); !ok || v != float64(c.want) {
				t.Errorf("%s%v = %v (present: %v); want %d", c.name, labels, v, ok, c.want)
			}
		}
	}
	check(read, kept)

	// The source follows its file: more lines, more counts.
	kept += appendLines(t, in, read, 1000)
	read += 1000
	check(read, kept)

	fams := scrape(t, client, base)
	if v, ok := sample(fams, "etld_build_info", "version", version); !ok || v != 1 {
		t.Errorf("etld_build_info{version=%q} = %v, %v; want 1", version, v, ok)
	}
	for _, name := range []string{"etld_stage_queue_length", "etld_checkpoint_age_seconds", "go_goroutines", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if code, body := httpGet(t, client, base+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d %q", code, body)
	}
	code, stdout, stderr := etld(t, "status", "--admin", base)
	wantRow := fmt.Sprintf("out sink file %d %d - 0 ok", kept, kept)
	found := false
	for _, l := range strings.Split(stdout, "\n") {
		found = found || strings.Join(strings.Fields(l), " ") == wantRow
	}
	if code != 0 || !found {
		t.Errorf("etld status: exit %d, want a row %q:\n%s%s", code, wantRow, stdout, stderr)
	}

	// SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1. A SIGHUP
	// that lands before the reload loop listens is swallowed (it must not
	// kill etld), so it is repeated until a reload starts.
	reloading := ""
	for deadline := time.Now().Add(hangTimeout); reloading == ""; {
		if err := etldProc.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		wait := time.After(time.Second)
	recv:
		for {
			select {
			case m := <-msgs:
				if lifecycleMsg(m) {
					reloading = m
					break recv
				}
			case <-wait:
				break recv
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no RELOADING=1 after SIGHUP")
		}
	}
	if !strings.HasPrefix(reloading, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("after SIGHUP: %q; want RELOADING=1 with MONOTONIC_USEC", reloading)
	}
	if m := notifytest.Next(t, msgs, "READY=1 after the reload", lifecycleMsg); !strings.HasPrefix(m, "READY=1\n") {
		t.Fatalf("after RELOADING=1: %q; want READY=1", m)
	}
	if watchdogPings == 0 {
		// Pings come every 200ms; by now some must have: wait for one.
		notifytest.Next(t, msgs, "WATCHDOG=1", func(m string) bool { return m == "WATCHDOG=1" })
	}

	if err := etldProc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if m := notifytest.Next(t, msgs, "STOPPING=1", lifecycleMsg); m != "STOPPING=1" {
		t.Fatalf("after SIGTERM: %q; want STOPPING=1", m)
	}
	select {
	case <-etldProc.done:
	case <-time.After(hangTimeout):
		t.Fatal("etld did not stop after SIGTERM")
	}
	if etldProc.err != nil {
		t.Fatalf("etld exited with %v; want 0", etldProc.err)
	}
}
