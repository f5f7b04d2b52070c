package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etld/etld/internal/admin"
	"github.com/etld/etld/internal/engine"
)

// snapshotAt is a fixed /api/pipelines body: one pipeline whose sink has
// written out records at t0 + secs.
func snapshotAt(secs int, out uint64) admin.Snapshot {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	return admin.Snapshot{
		Version:    "v1.2.3",
		Time:       t0.Add(time.Duration(secs) * time.Second),
		Ready:      true,
		LastReload: &admin.Reload{Time: t0, Result: "success"},
		Pipelines: []admin.Pipeline{{
			PipelineStatus: engine.PipelineStatus{Name: "orders", File: "orders.yaml", State: "running", Stages: []engine.StageStatus{
				{ID: "files", Kind: "source", Type: "file", In: out, Out: out, Healthy: true},
				{ID: "enrich", Kind: "worker", Type: "worker", Inputs: []string{"files"}, Concurrency: 4,
					Steps: []string{"parse_json", "filter"}, In: out, Out: out, QueueLength: 3, Healthy: true},
				{ID: "merged", Kind: "sink", Type: "file", Inputs: []string{"enrich"}, In: out, Out: out, QueueLength: 1, Healthy: out != 600},
			}},
			LastReload: &admin.Reload{Time: t0, Result: "success", Action: "started"},
		}},
	}
}

// fakeAdmin serves the given snapshots in turn from /api/pipelines (the
// last one again once they run out); onRequest, if set, runs first with
// the request number (from 1).
func fakeAdmin(t *testing.T, snaps []admin.Snapshot, onRequest func(n int, r *http.Request)) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/pipelines" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		n++
		i := n
		mu.Unlock()
		if onRequest != nil {
			onRequest(i, r)
		}
		json.NewEncoder(w).Encode(snaps[min(i, len(snaps))-1])
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestStatusOnce(t *testing.T) {
	srv := fakeAdmin(t, []admin.Snapshot{snapshotAt(0, 1200)}, nil)
	for _, addr := range []string{strings.TrimPrefix(srv.URL, "http://"), srv.URL, srv.URL + "/"} {
		code, out, errOut := etld(t, "status", "--admin", addr)
		if code != 0 || errOut != "" {
			t.Fatalf("status --admin %s: exit %d, stderr %q", addr, code, errOut)
		}
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		want := []string{
			"PIPELINE  STATE    STAGE   KIND    TYPE                    IN   OUT  OUT/s  QUEUE  HEALTH",
			"orders    running  files   source  file                     -  1200      -      -  ok",
			"                   enrich  worker  x4 parse_json,filter  1200  1200      -      3  ok",
			"                   merged  sink    file                  1200  1200      -      1  ok",
		}
		if len(lines) != 7 || !strings.HasPrefix(lines[0], "etld v1.2.3 at ") || !strings.HasSuffix(lines[0], ", ready") ||
			!strings.HasPrefix(lines[1], "last config load ") || lines[2] != "" {
			t.Fatalf("status output:\n%s", out)
		}
		for i, w := range want {
			if lines[3+i] != w {
				t.Errorf("line %d:\n got %q\nwant %q", 3+i, lines[3+i], w)
			}
		}
	}
}

func TestStatusErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens there now
	code, _, errOut := etld(t, "status", "--admin", addr)
	if code != 1 || !strings.Contains(errOut, "cannot reach etld") || !strings.Contains(errOut, addr) {
		t.Fatalf("unreachable: exit %d, stderr %q", code, errOut)
	}

	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	if code, _, errOut := etld(t, "status", "--admin", srv.URL); code != 1 || !strings.Contains(errOut, "404") {
		t.Fatalf("not an etld: exit %d, stderr %q", code, errOut)
	}
	for _, args := range [][]string{{"status", "--interval", "0s"}, {"status", "extra"}, {"status", "--nope"}} {
		if code, _, _ := etld(t, args...); code != 2 {
			t.Errorf("etld %q: exit %d, want 2", args, code)
		}
	}
}

// TestStatusWatch: --watch redraws (clearing the screen) and computes
// rates from consecutive snapshots' counters and times; it stops when
// interrupted.
func TestStatusWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snaps := []admin.Snapshot{snapshotAt(0, 0), snapshotAt(2, 200), snapshotAt(4, 600)}
	srv := fakeAdmin(t, snaps, func(n int, r *http.Request) {
		if n == len(snaps)+1 { // three frames drawn: interrupt
			cancel()
			<-r.Context().Done()
		}
	})
	c := &statusClient{url: srv.URL + "/api/pipelines", http: &http.Client{Timeout: hangTimeout}}
	defer c.http.CloseIdleConnections()
	var out strings.Builder
	done := make(chan struct{})
	go func() {
		c.watch(ctx, time.Millisecond, &out)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(hangTimeout):
		t.Fatal("watch did not stop when interrupted")
	}
	frames := strings.Split(out.String(), "\x1b[H\x1b[2J")
	if len(frames) != 4 || frames[0] != "" {
		t.Fatalf("got %d frames, want 3:\n%s", len(frames)-1, out.String())
	}
	rate := func(frame, stage string) string {
		for _, l := range strings.Split(frame, "\n") {
			if f := strings.Fields(l); len(f) >= 8 && (f[0] == stage || (len(f) > 2 && f[2] == stage)) {
				return f[len(f)-3]
			}
		}
		t.Fatalf("no row for %s in:\n%s", stage, frame)
		return ""
	}
	for i, want := range []string{"-", "100", "200"} {
		if got := rate(frames[i+1], "merged"); got != want {
			t.Errorf("frame %d: merged OUT/s = %s, want %s\n%s", i+1, got, want, frames[i+1])
		}
	}
	if !strings.Contains(frames[3], "FAILING") {
		t.Errorf("frame 3 does not show the failing sink:\n%s", frames[3])
	}
}

// TestStatusAgainstAdminServer reads a real admin server over a real
// runtime: the JSON of the server is what the command decodes.
func TestStatusAgainstAdminServer(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	p := writePipeline(t, "gen.yaml", `version: 1
sources:
  gen: {type: generate, count: 50}
workers:
  w: {inputs: [gen], concurrency: 1, steps: [ {parse_json: {}} ]}
sinks:
  out: {type: file, inputs: [w], path: out.jsonl}
`)
	rt, err := engine.New(engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	o, err := startOps(ctx, rt, runFlags{admin: "127.0.0.1:0"}, zerologFor(t))
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	changes, err := rt.Apply(ctx, loadFile(t, p))
	if err != nil {
		t.Fatal(err)
	}
	o.Started(changes)
	select {
	case <-rt.Idle():
	case <-time.After(hangTimeout):
		t.Fatal("the pipeline did not finish")
	}
	defer rt.Stop()
	code, out, errOut := etld(t, "status", "--admin", o.admin.Addr())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{", ready\n", "gen       finished  gen    source  generate", "  w      worker  x1 parse_json  50   50", "  out    sink    file           50   50"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestMergeNote(t *testing.T) {
	got := mergeNote("logs", "timeline", &engine.MergeStatus{OrderBy: "ts", Buffered: 12, Newest: "2026-11-27T10:00:01Z", Late: 3,
		Feeds: []engine.FeedStatus{
			{Feed: "/var/log/app.log", Watermark: "2026-11-27T10:00:02Z", Late: 3},
			{Feed: "stdin-src"},
		}})
	want := "logs/timeline: merge by ts, 12 buffered, newest written 2026-11-27T10:00:01Z, 3 late; " +
		"feeds: app.log at 2026-11-27T10:00:02Z (3 late), stdin-src at nothing yet"
	if got != want {
		t.Errorf("mergeNote =\n%s\nwant\n%s", got, want)
	}
}
