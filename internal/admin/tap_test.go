package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/engine"
)

// tapServer runs a pipeline generating records forever (pipeline "gen",
// worker "w" with route "even", dead letters for every 10th record)
// behind a server with opts; it is stopped at the end of the test.
func tapServer(t *testing.T, opts Options) *Server {
	t.Helper()
	pipes := loadPipeline(t, "gen.yaml", `version: 1
dead_letter: bad
sources:
  gen: {type: generate, interval: 1ms}
workers:
  w:
    inputs: [gen]
    concurrency: 1
    steps: [ {parse_json: {}}, {filter: 'seq % 10 == 9 ? "not a bool" : true'}, {set: {seen: true}} ]
    routes:
      even: 'seq % 2 == 0'
sinks:
  out: {type: file, inputs: [w.even], path: out.jsonl}
  bad: {type: file, path: bad.jsonl}
`)
	rt, err := engine.New(engine.Options{Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Stop() })
	if _, err := rt.Apply(context.Background(), pipes); err != nil {
		t.Fatal(err)
	}
	opts.Runtime, opts.Registry, opts.Logger = rt, prometheus.NewRegistry(), zerolog.New(zerolog.NewTestWriter(t))
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tapLines reads GET path from h (a test server) to its end.
func tapLines(t *testing.T, url, token string) (int, []string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return resp.StatusCode, lines
}

func TestTapEndpoint(t *testing.T) {
	s := tapServer(t, Options{})
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	defer http.DefaultClient.CloseIdleConnections()

	code, lines := tapLines(t, ts.URL+"/api/tap?pipeline=gen&stage=w&route=even&limit=5", "")
	if code != 200 || len(lines) != 5 {
		t.Fatalf("route tap: %d, %q", code, lines)
	}
	for _, l := range lines {
		var v struct {
			Seq  int  `json:"seq"`
			Seen bool `json:"seen"`
		}
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.Seq%2 != 0 || !v.Seen {
			t.Errorf("route even: %s (%v)", l, err)
		}
	}
	code, lines = tapLines(t, ts.URL+"/api/tap?pipeline=gen&stage=w&limit=3&filter=seq+%25+3+%3D%3D+0", "")
	if code != 200 || len(lines) != 3 {
		t.Fatalf("filtered tap: %d, %q", code, lines)
	}
	for _, l := range lines {
		var v struct{ Seq int }
		if json.Unmarshal([]byte(l), &v) != nil || v.Seq%3 != 0 {
			t.Errorf("filter seq %% 3 == 0 let %s through", l)
		}
	}
	code, lines = tapLines(t, ts.URL+"/api/tap?pipeline=gen&dead_letter=true&limit=2", "")
	if code != 200 || len(lines) != 2 || !strings.Contains(lines[0], `"stage":"w"`) {
		t.Fatalf("dead-letter tap: %d, %q", code, lines)
	}

	for _, c := range []struct {
		query string
		code  int
	}{
		{"pipeline=gen", 400},
		{"pipeline=gen&stage=w&limit=-1", 400},
		{"pipeline=gen&stage=w&dead_letter=maybe", 400},
		{"pipeline=gen&stage=w&filter=seq+%3D%3D", 400},
		{"pipeline=gen&stage=out", 400},
		{"pipeline=nope&stage=w", 404},
		{"pipeline=gen&stage=nope", 404},
		{"pipeline=gen&stage=w&route=nope", 404},
	} {
		if code, lines := tapLines(t, ts.URL+"/api/tap?"+c.query, ""); code != c.code {
			t.Errorf("%s: %d %q, want %d", c.query, code, lines, c.code)
		}
	}
}

// TestTapGuard: without a token file the tap is served on loopback only;
// with one, only to the bearer of the token, on any address.
func TestTapGuard(t *testing.T) {
	const q = "/api/tap?pipeline=gen&stage=w&limit=1"
	t.Run("no token", func(t *testing.T) {
		s := tapServer(t, Options{})
		ts := httptest.NewServer(s.Handler())
		defer ts.Close()
		defer http.DefaultClient.CloseIdleConnections()
		if code, _ := tapLines(t, ts.URL+q, ""); code != 200 {
			t.Errorf("loopback, no token: %d, want 200", code)
		}
		s.exposed.Store(true) // as Start does on a non-loopback address
		if code, lines := tapLines(t, ts.URL+q, ""); code != 403 || !strings.Contains(strings.Join(lines, " "), "--admin-token-file") {
			t.Errorf("exposed, no token: %d %q, want 403 naming the flag", code, lines)
		}
		if code, _ := tapLines(t, ts.URL+"/api/pipelines", ""); code != 200 {
			t.Errorf("exposed: /api/pipelines %d, want 200", code)
		}
	})
	t.Run("token", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(file, []byte("  tok-1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := tapServer(t, Options{TokenFile: file})
		s.exposed.Store(true)
		ts := httptest.NewServer(s.Handler())
		defer ts.Close()
		defer http.DefaultClient.CloseIdleConnections()
		for _, tok := range []string{"", "tok", "tok-12", "TOK-1"} {
			if code, _ := tapLines(t, ts.URL+q, tok); code != 401 {
				t.Errorf("token %q: %d, want 401", tok, code)
			}
		}
		if code, lines := tapLines(t, ts.URL+q, "tok-1"); code != 200 || len(lines) != 1 {
			t.Errorf("right token: %d %q", code, lines)
		}
		// A new token takes effect without a restart.
		if err := os.WriteFile(file, []byte("tok-2"), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, _ := tapLines(t, ts.URL+q, "tok-1"); code != 401 {
			t.Errorf("old token after rotation: %d, want 401", code)
		}
		if code, _ := tapLines(t, ts.URL+q, "tok-2"); code != 200 {
			t.Errorf("new token: %d, want 200", code)
		}
	})
	t.Run("bad token file", func(t *testing.T) {
		empty := filepath.Join(t.TempDir(), "empty")
		if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{empty, filepath.Join(t.TempDir(), "missing")} {
			_, err := New(Options{Runtime: &fakeRuntime{}, Registry: prometheus.NewRegistry(), TokenFile: f})
			if err == nil || !strings.Contains(err.Error(), "admin token") {
				t.Errorf("token file %s: %v, want an admin token error", f, err)
			}
		}
	})
}

// TestShutdownEndsTaps: a tap streams until the client goes, but a
// graceful stop ends it rather than waiting for it.
func TestShutdownEndsTaps(t *testing.T) {
	s := tapServer(t, Options{})
	if err := s.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + s.Addr() + "/api/tap?pipeline=gen&stage=w")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if _, err := r.ReadString('\n'); err != nil {
		t.Fatalf("first record: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a tap open: %v", err)
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatalf("the tap's stream did not end cleanly: %v", err)
	}
}

// TestLivePageAndGraph: / is the live page with its assets embedded, and
// /api/graph draws every pipeline.
func TestLivePageAndGraph(t *testing.T) {
	s := tapServer(t, Options{})
	h := s.Handler()
	code, body := get(t, h, "/")
	if code != 200 || !strings.Contains(body, `<script src="/live/live.js">`) {
		t.Fatalf("/: %d %q", code, body)
	}
	for _, asset := range []string{"/live/live.js", "/live/live.css"} {
		if code, body := get(t, h, asset); code != 200 || len(body) < 100 {
			t.Errorf("%s: %d, %d bytes", asset, code, len(body))
		}
	}
	if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
		t.Error("the page refers to an external resource")
	}
	code, body = get(t, h, "/api/graph")
	var graphs []Graph
	if err := json.Unmarshal([]byte(body), &graphs); code != 200 || err != nil || len(graphs) != 1 {
		t.Fatalf("/api/graph: %d %v %q", code, err, body)
	}
	g := graphs[0]
	if g.Pipeline != "gen" || g.Shape != "gen<source|w<worker<gen|out<sink<w.even|bad<sink" {
		t.Errorf("graph %q, shape %q", g.Pipeline, g.Shape)
	}
	for _, want := range []string{`data-stage="gen"`, `data-stage="w"`, `data-stage="out"`, `class="node sink dead-letter-sink"`, `>even<`} {
		if !strings.Contains(g.SVG, want) {
			t.Errorf("the graph has no %s", want)
		}
	}
}
