package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// TestGuard: open on loopback; elsewhere disabled without a token, and
// with one only for requests that bear it.
func TestGuard(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("secret")) })
	req := func(g Guard, auth string) (int, string, string) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/api/plan", nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		g.Wrap(ok).ServeHTTP(rec, r)
		return rec.Code, rec.Body.String(), rec.Header().Get("WWW-Authenticate")
	}
	onLoopback := func(*http.Request) bool { return true }
	offLoopback := func(*http.Request) bool { return false }
	for _, c := range []struct {
		name   string
		g      Guard
		auth   string
		code   int
		body   string
		bearer bool
	}{
		{"loopback, no token", Guard{Loopback: onLoopback}, "", 200, "secret", false},
		{"loopback ignores the token", Guard{Token: []byte("t0k"), Loopback: onLoopback}, "", 200, "secret", false},
		{"off loopback without a token: disabled", Guard{Loopback: offLoopback}, "Bearer anything", 403, "disabled", false},
		{"off loopback, no credentials", Guard{Token: []byte("t0k"), Loopback: offLoopback}, "", 401, "unauthorized", true},
		{"off loopback, wrong token", Guard{Token: []byte("t0k"), Loopback: offLoopback}, "Bearer t0K", 401, "unauthorized", true},
		{"off loopback, a prefix of the token", Guard{Token: []byte("t0k"), Loopback: offLoopback}, "Bearer t0", 401, "unauthorized", true},
		{"off loopback, basic auth", Guard{Token: []byte("t0k"), Loopback: offLoopback}, "Basic dDBr", 401, "unauthorized", true},
		{"off loopback, the token", Guard{Token: []byte("t0k"), Loopback: offLoopback}, "Bearer t0k", 200, "secret", false},
	} {
		code, body, www := req(c.g, c.auth)
		if code != c.code || !strings.Contains(body, c.body) || (www != "") != c.bearer {
			t.Errorf("%s: %d %q (WWW-Authenticate %q), want %d %q", c.name, code, body, www, c.code, c.body)
		}
	}
}

// TestGuardFollowsTheListenAddress: the server's guard judges by the
// address it listens on; /metrics, /healthz and /readyz stay open.
func TestGuardFollowsTheListenAddress(t *testing.T) {
	addr := nonLoopbackAddr(t)
	planned := 0
	s, err := New(Options{
		Runtime:  &fakeRuntime{},
		Registry: prometheus.NewRegistry(),
		Logger:   zerolog.New(zerolog.NewTestWriter(t)),
		Plan: func(context.Context, string) (*PlanResult, error) {
			planned++
			return &PlanResult{Path: "/x"}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), addr+":0"); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	base := "http://" + s.Addr()
	for path, want := range map[string]int{"/metrics": 200, "/healthz": 200, "/readyz": 503} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s off loopback: %d, want %d", path, resp.StatusCode, want)
		}
	}
	resp, err := http.Post(base+"/api/plan", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || planned != 0 {
		t.Errorf("POST /api/plan off loopback without a token: %d (planned %d times), want 403", resp.StatusCode, planned)
	}
}

// nonLoopbackAddr returns an IP address of this host that is not a
// loopback address, or skips the test.
func nonLoopbackAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("no interface addresses: %v", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	t.Skip("this host has no non-loopback IPv4 address")
	return ""
}

// TestPlanEndpoint: POST /api/plan passes the path to the planner and
// answers its result as JSON, or its error as 422; a request that does
// not say where it came in is not trusted as loopback.
func TestPlanEndpoint(t *testing.T) {
	var asked []string
	s, err := New(Options{
		Runtime:  &fakeRuntime{},
		Registry: prometheus.NewRegistry(),
		Logger:   zerolog.New(zerolog.NewTestWriter(t)),
		Token:    []byte("tok"),
		Plan: func(_ context.Context, path string) (*PlanResult, error) {
			asked = append(asked, path)
			if path == "/bad" {
				return nil, errors.New("config path /bad: no such file or directory")
			}
			return &PlanResult{Path: path, Pipelines: []PlanPipeline{{Name: "p", Action: "unchanged", Text: "pipeline p: unchanged\n"}}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	post := func(body, auth string) (int, string) {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodPost, "/api/plan", strings.NewReader(body))
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		s.Handler().ServeHTTP(rec, r)
		return rec.Code, rec.Body.String()
	}
	if code, _ := post(`{}`, ""); code != http.StatusUnauthorized {
		t.Errorf("no token, no local address: %d, want 401", code)
	}
	code, body := post(`{"path":"/etc/p"}`, "Bearer tok")
	var res PlanResult
	if code != 200 || json.Unmarshal([]byte(body), &res) != nil || res.Path != "/etc/p" || len(res.Pipelines) != 1 {
		t.Errorf("plan: %d %s", code, body)
	}
	if code, body := post(`{"path":"/bad"}`, "Bearer tok"); code != http.StatusUnprocessableEntity || !strings.Contains(body, "no such file") {
		t.Errorf("failing plan: %d %s", code, body)
	}
	if code, _ := post(`{"path":`, "Bearer tok"); code != http.StatusBadRequest {
		t.Errorf("bad JSON: %d, want 400", code)
	}
	if want := []string{"/etc/p", "/bad"}; !slices.Equal(asked, want) {
		t.Errorf("planner asked %q, want %q", asked, want)
	}
}
