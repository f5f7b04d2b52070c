package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/admin"
	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/engine"
	"github.com/etld/etld/internal/notify/notifytest"
	"github.com/etld/etld/internal/stages/builtin"
)

// hangTimeout bounds waits that only fail when something hangs; no
// assertion depends on speed.
const hangTimeout = 60 * time.Second

func loadFile(t *testing.T, path string) []*config.Pipeline {
	t.Helper()
	pipes, diags := config.Load(path, config.Options{Registry: builtin.Registry()})
	if diags.HasErrors() {
		t.Fatalf("load %s: %v", path, diags)
	}
	return pipes
}

// httpGet returns the status code and body of url.
func httpGet(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestOpsLifecycle drives ops the way cmdRun does, in-process: the
// admin server answers from the start, systemd gets READY=1, RELOADING=1
// with MONOTONIC_USEC and READY=1 around a reload (a failed one too),
// STATUS= lines, and STOPPING=1; /readyz follows.
func TestOpsLifecycle(t *testing.T) {
	_, msgs := notifytest.Listen(t, true)
	t.Setenv("WATCHDOG_USEC", "")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gen.yaml")
	if err := os.WriteFile(cfg, []byte(`version: 1
sources:
  gen: {type: generate, count: 0, interval: 1ms}
sinks:
  out: {type: file, inputs: [gen], path: out.jsonl}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(zerolog.NewTestWriter(t))
	rt, err := engine.New(engine.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	o, err := startOps(ctx, rt, runFlags{admin: "127.0.0.1:0"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	o.statusEvery = 5 * time.Millisecond
	client := &http.Client{Timeout: hangTimeout}
	defer client.CloseIdleConnections()
	base := "http://" + o.admin.Addr()

	if code, body := httpGet(t, client, base+"/readyz"); code != 503 || !strings.Contains(body, "starting") {
		t.Fatalf("/readyz before start: %d %q", code, body)
	}
	changes, err := rt.Apply(ctx, loadFile(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	o.Started(changes)
	m := notifytest.Next(t, msgs, "READY=1", notifytest.Lifecycle)
	if !strings.HasPrefix(m, "READY=1\nSTATUS=1 pipeline running; last config load ") || !strings.HasSuffix(m, ": ok") {
		t.Fatalf("first message %q; want READY=1 with a status", m)
	}
	if code, body := httpGet(t, client, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz once running: %d %q", code, body)
	}
	// The periodic STATUS= gets rates once it has two samples.
	st := notifytest.Next(t, msgs, "STATUS= with rates", func(m string) bool { return strings.Contains(m, "records/s") })
	if !strings.HasPrefix(st, "STATUS=1 pipeline running; ") || !strings.Contains(st, "records/s read, ") {
		t.Fatalf("status %q", st)
	}

	// A reload that fails: the pipeline file became invalid.
	o.Reloading()
	m = notifytest.Next(t, msgs, "RELOADING=1", notifytest.Lifecycle)
	if lines := strings.Split(m, "\n"); len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("got %q; want RELOADING=1 and MONOTONIC_USEC", m)
	}
	o.Reloaded([]engine.Change{{Pipeline: "gen", Action: "unchanged"}}, map[string][]string{"gen": {"gen.yaml:4:3: sources.x: unknown key"}}, nil)
	if m = notifytest.Next(t, msgs, "READY=1 after the reload", notifytest.Lifecycle); !strings.HasPrefix(m, "READY=1\nSTATUS=") || !strings.HasSuffix(m, ": FAILED") {
		t.Fatalf("after a failed reload: %q; want READY=1 with the failure in STATUS", m)
	}
	code, body := httpGet(t, client, base+"/api/pipelines")
	var snap admin.Snapshot
	if err := json.Unmarshal([]byte(body), &snap); code != 200 || err != nil {
		t.Fatalf("/api/pipelines: %d %v\n%s", code, err, body)
	}
	if snap.LastReload == nil || snap.LastReload.Result != "failure" || len(snap.Pipelines) != 1 ||
		snap.Pipelines[0].LastReload == nil || snap.Pipelines[0].LastReload.Action != "invalid" ||
		!strings.Contains(snap.Pipelines[0].LastReload.Error, "gen.yaml:4:3: sources.x: unknown key") {
		t.Fatalf("/api/pipelines after a failed reload: %s", body)
	}
	if code, _ := httpGet(t, client, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz after a failed reload (the old pipeline runs): %d", code)
	}

	o.Stopping()
	if m = notifytest.Next(t, msgs, "STOPPING=1", notifytest.Lifecycle); m != "STOPPING=1" {
		t.Fatalf("got %q; want STOPPING=1", m)
	}
	if code, body := httpGet(t, client, base+"/readyz"); code != 503 || !strings.Contains(body, "stopping") {
		t.Fatalf("/readyz while stopping: %d %q", code, body)
	}
	if err := rt.Stop(); err != nil {
		t.Fatal(err)
	}
	o.Close()
	o.Close() // idempotent
	if _, err := client.Get(base + "/healthz"); err == nil {
		t.Fatal("the admin server still answers after Close")
	}
}

func TestOpsAdminOffAndNil(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	rt, err := engine.New(engine.Options{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	o, err := startOps(context.Background(), rt, runFlags{admin: "off"}, zerolog.Nop())
	if err != nil || o.admin != nil {
		t.Fatalf("--admin off: %v, server %v", err, o.admin)
	}
	o.Started(nil)
	o.Reloading()
	o.Reloaded(nil, nil, errors.New("x"))
	o.Stopping()
	o.Close()

	var none *ops // the state of cmdRun when startOps failed
	none.Started(nil)
	none.Reloading()
	none.Reloaded(nil, nil, nil)
	none.Stopping()
	none.Close()
}

// TestOpsBusyAdminExits1: `etld run` with a busy --admin exits 1 and
// names the address, before any pipeline runs.
func TestOpsBusyAdminExits1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dir := t.TempDir()
	p := writePipeline(t, "gen.yaml", `version: 1
sources:
  gen: {type: generate, count: 10}
sinks:
  out: {type: file, inputs: [gen], path: out.jsonl}
`)
	code, _, errOut := etld(t, "run", "-c", p, "--state-dir", filepath.Join(dir, "state"), "--admin", ln.Addr().String())
	if code != 1 || !strings.Contains(errOut, "cannot listen on "+ln.Addr().String()) || !strings.Contains(errOut, "address already in use") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 naming %s", code, errOut, ln.Addr())
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(p), "out.jsonl")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a pipeline ran although the admin address was busy (%v)", err)
	}
}

func TestHealthCheckFollowsHeartbeat(t *testing.T) {
	o := &ops{log: zerolog.New(zerolog.NewTestWriter(t))}
	check := o.healthCheck(time.Minute)
	o.beat.Store(time.Now().UnixNano())
	if !check() {
		t.Fatal("fresh heartbeat: unhealthy")
	}
	o.beat.Store(time.Now().Add(-2 * time.Minute).UnixNano())
	if check() {
		t.Fatal("heartbeat 2 minutes old: healthy")
	}
	o.beat.Store(time.Now().UnixNano())
	if !check() {
		t.Fatal("heartbeat back: unhealthy")
	}
}

func TestReloadRecord(t *testing.T) {
	for _, tc := range []struct {
		name     string
		changes  []engine.Change
		invalid  map[string][]string
		err      error
		overall  engine.Result
		errorHas string
		per      map[string]string // pipeline -> action/result
	}{
		{"initial", []engine.Change{{Pipeline: "a", Action: "started"}}, nil, nil, "success", "",
			map[string]string{"a": "started/success"}},
		{"unchanged", []engine.Change{{Pipeline: "a", Action: "unchanged"}}, nil, nil, "unchanged", "",
			map[string]string{"a": "unchanged/unchanged"}},
		{"reconfigured in place", []engine.Change{{Pipeline: "a", Action: "reconfigured"}, {Pipeline: "b", Action: "unchanged"}}, nil, nil, "success", "",
			map[string]string{"a": "reconfigured/success", "b": "unchanged/unchanged"}},
		{"stop timed out", []engine.Change{{Pipeline: "a", Action: "stopped", Err: errors.New("shutdown timeout")}}, nil, errors.New("shutdown timeout"), "failure", "timeout",
			map[string]string{"a": "stopped/failure"}},
		{"replaced and stopped", []engine.Change{{Pipeline: "a", Action: "replaced"}, {Pipeline: "b", Action: "stopped"}}, nil, nil, "success", "",
			map[string]string{"a": "replaced/success", "b": "stopped/success"}},
		{"invalid file", []engine.Change{{Pipeline: "a", Action: "unchanged"}}, map[string][]string{"a": {"a.yaml:1:1: bad"}}, nil, "failure", "failed: a",
			map[string]string{"a": "invalid/failure"}},
		{"failed to open", []engine.Change{{Pipeline: "a", Action: "failed", Err: errors.New("open out: denied")}}, nil, errors.New("open out: denied"), "failure", "denied",
			map[string]string{"a": "failed/failure"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			overall, per := reloadRecord(tc.changes, tc.invalid, tc.err)
			if overall.Result != tc.overall || !strings.Contains(overall.Error, tc.errorHas) {
				t.Errorf("overall = %+v; want %s with %q", overall, tc.overall, tc.errorHas)
			}
			got := map[string]string{}
			for n, r := range per {
				got[n] = string(r.Action) + "/" + string(r.Result)
			}
			if len(got) != len(tc.per) {
				t.Errorf("per = %v; want %v", got, tc.per)
			}
			for n, want := range tc.per {
				if got[n] != want {
					t.Errorf("%s: %s; want %s", n, got[n], want)
				}
			}
		})
	}
}

// TestReloadRecordEveryAction: every action the engine declares is
// recorded with the result the engine gives it, and the whole load with
// the matching result, so that no action passes for another outcome.
func TestReloadRecordEveryAction(t *testing.T) {
	for _, a := range engine.Actions() {
		overall, per := reloadRecord([]engine.Change{{Pipeline: "p", Action: a}}, nil, nil)
		want := a.Result()
		if got := per["p"]; got.Action != a || got.Result != want {
			t.Errorf("%s: recorded %s/%s; want %s/%s", a, got.Action, got.Result, a, want)
		}
		if overall.Result != want {
			t.Errorf("%s: whole load %s; want %s", a, overall.Result, want)
		}
		if got := statusWord(overall.Result); (got == "FAILED") != want.Failed() {
			t.Errorf("%s: STATUS= says %q for a load whose result is %s", a, got, want)
		}
	}
}

func TestFormatRate(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 7.5: "7.5", 0.25: "0.25", 12: "12", 950: "950", 12345: "12.3k", 2687118: "2.69M", 100000: "100k"} {
		if got := formatRate(in); got != want {
			t.Errorf("formatRate(%v) = %q; want %q", in, got, want)
		}
	}
}

func zerologFor(t *testing.T) zerolog.Logger { return zerolog.New(zerolog.NewTestWriter(t)) }

// TestSystemdFiles pins what the unit promises (SPEC §4) and that the
// example pipeline `make install` puts in place is valid.
func TestSystemdFiles(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "..", "systemd", "etld.service"))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	for _, l := range strings.Split(string(unit), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			keys[k] = append(keys[k], v)
		}
	}
	for k, want := range map[string]string{
		"Type":                   "notify",
		"ExecStart":              "/usr/local/bin/etld run -c /etc/etld/pipelines --log-format json",
		"ExecReload":             "/bin/kill -HUP $MAINPID",
		"Restart":                "on-failure",
		"StateDirectory":         "etld",
		"ConfigurationDirectory": "etld",
		"User":                   "etld",
		"ProtectSystem":          "strict",
		"CapabilityBoundingSet":  "",
		"NoNewPrivileges":        "yes",
	} {
		if got := keys[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q; want %q", k, got, want)
		}
	}
	// The stop timeout must leave room for the default graceful stop,
	// as `etld run -h` states it.
	_, _, help := etld(t, "run", "-h")
	_, after, _ := strings.Cut(help, "-shutdown-timeout")
	_, after, _ = strings.Cut(after, "(default ")
	defText, _, _ := strings.Cut(after, ")")
	def, err := time.ParseDuration(defText)
	if err != nil {
		t.Fatalf("no --shutdown-timeout default in `etld run -h`: %v\n%s", err, help)
	}
	for _, k := range []string{"TimeoutStopSec", "WatchdogSec"} {
		if len(keys[k]) != 1 {
			t.Fatalf("%s: %q", k, keys[k])
		}
		d, err := time.ParseDuration(keys[k][0])
		if err != nil {
			t.Fatalf("%s=%s: %v", k, keys[k][0], err)
		}
		if k == "TimeoutStopSec" && d <= def {
			t.Errorf("TimeoutStopSec=%v is not above the default --shutdown-timeout %v", d, def)
		}
	}

	code, out, errOut := etld(t, "validate", "-c", filepath.Join("..", "..", "systemd", "example.yaml"))
	if code != 0 {
		t.Fatalf("systemd/example.yaml: exit %d\n%s%s", code, out, errOut)
	}
}
