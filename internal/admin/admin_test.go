package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/engine"
	"github.com/etld/etld/internal/stages/builtin"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hang bounds waits that only fail when something hangs.
const hang = 20 * time.Second

// fakeRuntime is a Runtime whose answers the test sets; the server judges
// readiness from them with the engine's own rule (engine.NotReady).
type fakeRuntime struct {
	mu     sync.Mutex
	status []engine.PipelineStatus
}

func (f *fakeRuntime) set(ps ...engine.PipelineStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = ps
}

func (f *fakeRuntime) Status() []engine.PipelineStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func newServer(t *testing.T, rt Runtime, reloads *ReloadTracker) *Server {
	t.Helper()
	s, err := New(Options{
		Runtime:  rt,
		Registry: prometheus.NewRegistry(),
		Reloads:  reloads,
		Build:    BuildInfo{Version: "v9.9.9", Revision: "abc123"},
		Logger:   zerolog.New(zerolog.NewTestWriter(t)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// get serves one request through the handler.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestReadyz(t *testing.T) {
	rt := &fakeRuntime{}
	s := newServer(t, rt, nil)
	h := s.Handler()

	if code, body := get(t, h, "/readyz"); code != 503 || !strings.Contains(body, "starting") {
		t.Fatalf("before SetRunning: %d %q; want 503 starting", code, body)
	}
	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz while starting: %d %q; want 200 ok", code, body)
	}
	s.SetRunning()

	healthy := engine.StageStatus{ID: "in", Kind: "source", Type: "file", Healthy: true}
	for _, tc := range []struct {
		name   string
		status []engine.PipelineStatus
		code   int
		body   string
	}{
		{"no pipelines", nil, 200, "ready\n"},
		{"running", []engine.PipelineStatus{{Name: "a", State: "running", Stages: []engine.StageStatus{healthy}}}, 200, "ready\n"},
		{"finished", []engine.PipelineStatus{{Name: "a", State: "finished", Stages: []engine.StageStatus{healthy}}}, 200, "ready\n"},
		{"failed", []engine.PipelineStatus{
			{Name: "a", State: "running"},
			{Name: "b", State: "failed", Error: "sink out: disk on fire"},
		}, 503, "not ready: pipeline \"b\" failed: sink out: disk on fire\n"},
		{"stopping", []engine.PipelineStatus{{Name: "a", State: "stopping"}}, 503, "not ready: pipeline \"a\" is stopping\n"},
		{"failing sink", []engine.PipelineStatus{{Name: "a", State: "running", Stages: []engine.StageStatus{
			healthy, {ID: "out", Kind: "sink", Type: "file", Healthy: false},
		}}}, 503, "not ready: pipeline \"a\": sink \"out\" is failing and retrying (see the log)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt.set(tc.status...)
			if code, body := get(t, h, "/readyz"); code != tc.code || body != tc.body {
				t.Fatalf("/readyz: %d %q; want %d %q", code, body, tc.code, tc.body)
			}
		})
	}

	rt.set()
	s.SetStopping()
	if code, body := get(t, h, "/readyz"); code != 503 || body != "not ready: stopping\n" {
		t.Fatalf("stopping: %d %q; want 503 stopping", code, body)
	}
	if code, _ := get(t, h, "/healthz"); code != 200 {
		t.Fatalf("/healthz while stopping: %d; want 200", code)
	}
}

func TestRoutes(t *testing.T) {
	s := newServer(t, &fakeRuntime{}, nil)
	h := s.Handler()
	if code, body := get(t, h, "/"); code != 200 || !strings.Contains(body, "/api/pipelines") {
		t.Fatalf("/: %d %q", code, body)
	}
	if code, _ := get(t, h, "/nope"); code != 404 {
		t.Fatalf("/nope: %d, want 404", code)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/readyz", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /readyz: %d, want 405", rec.Code)
	}
}

func TestRegisterTwiceFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	if err := RegisterProcessMetrics(reg, BuildInfo{}); err != nil {
		t.Fatal(err)
	}
	if err := RegisterProcessMetrics(reg, BuildInfo{}); err == nil {
		t.Fatal("registering the collectors twice: no error")
	}
}

// loadPipeline loads one pipeline file written into a temporary directory.
func loadPipeline(t *testing.T, name, body string) []*config.Pipeline {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	pipes, diags := config.Load(p, config.Options{Registry: builtin.Registry()})
	if diags.HasErrors() {
		t.Fatalf("load: %v", diags)
	}
	return pipes
}

// TestServeRealRuntime runs a pipeline and reads every endpoint over a
// real loopback listener.
func TestServeRealRuntime(t *testing.T) {
	pipes := loadPipeline(t, "gen.yaml", `version: 1
sources:
  gen: {type: generate, count: 500}
workers:
  w:
    inputs: [gen]
    concurrency: 2
    steps: [ {parse_json: {}}, {filter: 'seq % 5 != 0'} ]
sinks:
  out: {type: file, inputs: [w], path: out.jsonl}
`)
	rt, err := engine.New(engine.Options{Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	reloads := &ReloadTracker{}
	s, err := New(Options{Runtime: rt, Registry: rt.Metrics().Registry, Reloads: reloads,
		Build: BuildInfo{Version: "v9.9.9", Revision: "abc123"}, Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: hang}
	defer client.CloseIdleConnections()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), hang)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}()
	base := "http://" + s.Addr()
	fetch := func(path string) (int, []byte) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}

	if code, body := fetch("/readyz"); code != 503 {
		t.Fatalf("/readyz before the pipelines run: %d %s", code, body)
	}
	changes, err := rt.Apply(context.Background(), pipes)
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]Reload{}
	for _, c := range changes {
		per[c.Pipeline] = Reload{Result: "success", Action: c.Action}
	}
	reloads.Record(Reload{Result: "success"}, per)
	s.SetRunning()
	select {
	case <-rt.Idle():
	case <-time.After(hang):
		t.Fatal("the pipeline did not finish")
	}
	defer rt.Stop()

	if code, body := fetch("/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	if code, body := fetch("/readyz"); code != 200 || string(body) != "ready\n" {
		t.Fatalf("/readyz: %d %s", code, body)
	}

	code, body := fetch("/api/pipelines")
	if code != 200 {
		t.Fatalf("/api/pipelines: %d %s", code, body)
	}
	var snap Snapshot
	if err := json.Unmarshal(body, &snap); err != nil {
		t.Fatalf("/api/pipelines: %v\n%s", err, body)
	}
	if snap.Version != "v9.9.9" || !snap.Ready || snap.LastReload == nil || snap.LastReload.Result != "success" || len(snap.Pipelines) != 1 {
		t.Fatalf("/api/pipelines: %+v", snap)
	}
	p := snap.Pipelines[0]
	if p.Name != "gen" || p.State != "finished" || p.LastReload == nil || p.LastReload.Action != "started" || len(p.Stages) != 3 {
		t.Fatalf("pipeline: %+v", p)
	}
	byID := map[string]engine.StageStatus{}
	for _, st := range p.Stages {
		byID[st.ID] = st
	}
	if st := byID["gen"]; st.Kind != "source" || st.Type != "generate" || st.Out != 500 {
		t.Errorf("source: %+v", st)
	}
	if st := byID["w"]; st.Kind != "worker" || st.In != 500 || st.Out != 400 || st.Dropped != 100 || st.Concurrency != 2 {
		t.Errorf("worker: %+v", st)
	}
	if st := byID["out"]; st.Kind != "sink" || st.In != 400 || st.Out != 400 || !st.Healthy {
		t.Errorf("sink: %+v", st)
	}
	for _, key := range []string{`"records_in"`, `"queue_length"`, `"last_reload"`, `"healthy"`, `"inputs"`} {
		if !bytes.Contains(body, []byte(key)) {
			t.Errorf("/api/pipelines lacks %s:\n%s", key, body)
		}
	}

	code, body = fetch("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f := fams[name]
		if f == nil {
			t.Fatalf("/metrics lacks %s", name)
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, labels) {
				switch {
				case m.Counter != nil:
					return m.Counter.GetValue()
				case m.Gauge != nil:
					return m.Gauge.GetValue()
				}
			}
		}
		t.Fatalf("/metrics: no %s with %v", name, labels)
		return 0
	}
	if v := value("etld_build_info", map[string]string{"version": "v9.9.9", "revision": "abc123"}); v != 1 {
		t.Errorf("etld_build_info = %v, want 1", v)
	}
	if v := value("etld_stage_records_out_total", map[string]string{"pipeline": "gen", "stage": "out"}); v != 400 {
		t.Errorf("sink records out = %v, want 400", v)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "etld_stage_queue_length"} {
		if fams[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func TestBusyAddressNamesIt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	s := newServer(t, &fakeRuntime{}, nil)
	err = s.Start(context.Background(), addr)
	if err == nil {
		s.Shutdown(context.Background())
		t.Fatalf("Start on a busy %s: no error", addr)
	}
	if msg := err.Error(); !strings.Contains(msg, addr) || !strings.Contains(msg, "address already in use") || strings.Count(msg, addr) != 1 {
		t.Fatalf("error %q: want the address once and the cause", msg)
	}
	// Nothing was started: Shutdown is a no-op.
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestStartBindsExactlyTheAddress(t *testing.T) {
	s := newServer(t, &fakeRuntime{}, nil)
	if err := s.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	host, _, err := net.SplitHostPort(s.Addr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("bound %q (%v); want 127.0.0.1", s.Addr(), err)
	}
	if err := s.Start(context.Background(), "127.0.0.1:0"); err == nil {
		t.Fatal("second Start: no error")
	}
	fresh := newServer(t, &fakeRuntime{}, nil)
	for _, bad := range []string{"not an address", "", "9300"} {
		if err := fresh.Start(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "invalid address") {
			t.Fatalf("address %q: %v; want invalid address", bad, err)
		}
	}
}

// TestShutdownWaitsForRequests: a request in flight finishes; a
// Shutdown whose context expires closes what is left and returns.
func TestShutdownWaitsForRequests(t *testing.T) {
	rt := &blockingRuntime{entered: make(chan struct{}), release: make(chan struct{})}
	s := newServer(t, rt, nil)
	s.SetRunning()
	if err := s.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: hang}
	defer client.CloseIdleConnections()

	type result struct {
		code int
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := client.Get("http://" + s.Addr() + "/api/pipelines")
		if err != nil {
			got <- result{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got <- result{code: resp.StatusCode}
	}()
	select {
	case <-rt.entered:
	case <-time.After(hang):
		t.Fatal("request never reached the handler")
	}

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), hang)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	// New connections are refused once the listener is closed; the
	// request in flight still completes.
	deadline := time.Now().Add(hang)
	for {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener stayed open during Shutdown")
		}
	}
	close(rt.release)
	if r := <-got; r.err != nil || r.code != 200 {
		t.Fatalf("request in flight: %+v", r)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}

	// A second server whose handler never returns: Shutdown gives up at
	// its deadline and closes the connection.
	rt2 := &blockingRuntime{entered: make(chan struct{}), release: make(chan struct{})}
	defer close(rt2.release)
	s2 := newServer(t, rt2, nil)
	s2.SetRunning()
	if err := s2.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		resp, err := client.Get("http://" + s2.Addr() + "/api/pipelines")
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-rt2.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s2.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown past its deadline: %v; want context.DeadlineExceeded", err)
	}
	if err := <-errc; err == nil {
		t.Fatal("the abandoned request succeeded")
	}
}

// blockingRuntime blocks Status until release is closed.
type blockingRuntime struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (b *blockingRuntime) Status() []engine.PipelineStatus {
	b.once.Do(func() { close(b.entered) })
	<-b.release
	return nil
}

func TestReloadTracker(t *testing.T) {
	var tr ReloadTracker
	if _, ok := tr.Last(); ok {
		t.Fatal("Last before any load: ok")
	}
	tr.Record(Reload{Result: "success"}, map[string]Reload{
		"a": {Result: "success", Action: "started"},
		"b": {Result: "success", Action: "started"},
	})
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tr.Record(Reload{Time: at, Result: "failure", Error: "b.yaml: invalid"}, map[string]Reload{
		"b": {Result: "failure", Action: "invalid", Error: "b.yaml:3:1: unknown key"},
		"c": {Result: "success", Action: "stopped"},
	})
	last, ok := tr.Last()
	if !ok || !last.Failed() || !last.Time.Equal(at) {
		t.Fatalf("Last = %+v, %v", last, ok)
	}
	per := tr.Pipelines()
	if len(per) != 2 || per["a"].Action != "started" || per["b"].Action != "invalid" || !per["b"].Time.Equal(at) {
		t.Fatalf("Pipelines = %+v", per)
	}
}

// flipRuntime answers Status with a healthy and a failing sink in turn.
type flipRuntime struct {
	mu sync.Mutex
	n  int
}

func (f *flipRuntime) Status() []engine.PipelineStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	return []engine.PipelineStatus{{Name: "p", State: engine.StateRunning,
		Stages: []engine.StageStatus{{ID: "out", Kind: "sink", Healthy: f.n%2 == 0}}}}
}

// TestSnapshotReadyMatchesItsStages: /api/pipelines judges readiness
// from the same status it shows, so ready and the stages never disagree
// (it used to take two snapshots).
func TestSnapshotReadyMatchesItsStages(t *testing.T) {
	s := newServer(t, &flipRuntime{}, nil)
	s.SetRunning()
	for range 4 {
		snap := s.Snapshot()
		healthy := snap.Pipelines[0].Stages[0].Healthy
		if snap.Ready != healthy {
			t.Fatalf("ready %v, but the sink it shows is healthy=%v (%q)", snap.Ready, healthy, snap.NotReady)
		}
	}
}
