package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const routesYAML = `version: 1
sources:
  in: {type: stdin}
workers:
  w:
    inputs: [in]
    steps: [ { parse_json: {} } ]
    routes:
      errors: 'level == "error"'
      slow: 'int(duration_ms) > ${LIMIT}'
      spare: 'false'
sinks:
  a: {type: stdout, inputs: ["${A_INPUT}"]}
  b: {type: stdout, inputs: w._unmatched}
  c: {type: stdout, inputs: [w.slow]}
`

// loadRoutes loads routesYAML with the given variables.
func loadRoutes(t *testing.T, vars map[string]string) (*Pipeline, Diagnostics) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(path, []byte(routesYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	pipes, ds := Load(path, Options{Registry: testOptions().Registry, Env: mapEnv(vars)})
	if ds.HasErrors() {
		t.Fatalf("Load: %v", diagLines(ds))
	}
	return pipes[0], ds
}

func TestRoutesInputs(t *testing.T) {
	p, ds := loadRoutes(t, map[string]string{"LIMIT": "1000", "A_INPUT": "w.errors"})
	w := p.Stage("w")
	var names []string
	for _, r := range w.Worker.Routes {
		names = append(names, r.Name)
	}
	if !slices.Equal(names, []string{"errors", "slow", "spare"}) || w.Worker.Router == nil {
		t.Errorf("routes = %v (router %v), want errors, slow, spare compiled", names, w.Worker.Router)
	}
	for id, want := range map[string]string{"a": "errors", "b": Unmatched, "c": "slow"} {
		st := p.Stage(id)
		if !slices.Equal(st.Inputs, []string{"w"}) || !slices.Equal(st.InputRoutes, []string{want}) {
			t.Errorf("sink %s: inputs %v routes %v, want [w] [%s]", id, st.Inputs, st.InputRoutes, want)
		}
		if got := st.WrittenInputs(); !slices.Equal(got, []string{"w." + want}) {
			t.Errorf("sink %s: written inputs %v", id, got)
		}
	}
	if got := w.Worker.RouteIndex("slow"); got != 1 {
		t.Errorf("RouteIndex(slow) = %d, want 1", got)
	}
	if got := w.Worker.RouteIndex("nope"); got != -1 {
		t.Errorf("RouteIndex(nope) = %d, want -1", got)
	}
	lines := diagLines(ds)
	if len(lines) != 1 || !strings.Contains(lines[0], "11:7: warning: workers.w.routes.spare: no stage reads this route") {
		t.Errorf("diagnostics = %v, want one warning about the unread route spare", lines)
	}
}

// TestRoutesFingerprint: a sink moving from w to w.errors is replaced on
// reload, and so is a worker whose routes change; the others stay.
func TestRoutesFingerprint(t *testing.T) {
	base, _ := loadRoutes(t, map[string]string{"LIMIT": "1000", "A_INPUT": "w.errors"})
	plain, _ := loadRoutes(t, map[string]string{"LIMIT": "1000", "A_INPUT": "w"})
	limit, _ := loadRoutes(t, map[string]string{"LIMIT": "2000", "A_INPUT": "w.errors"})
	fp := func(p *Pipeline, id string) string { return p.Stage(id).Fingerprint }
	if fp(base, "a") == fp(plain, "a") {
		t.Error("sink a reading w.errors or w has the same fingerprint")
	}
	if fp(base, "w") != fp(plain, "w") || fp(base, "b") != fp(plain, "b") {
		t.Error("changing sink a's input changed another stage's fingerprint")
	}
	if fp(base, "w") == fp(limit, "w") {
		t.Error("changing a route's expression kept the worker's fingerprint")
	}
	if fp(base, "c") != fp(limit, "c") {
		t.Error("changing a route's expression changed the fingerprint of a sink reading it")
	}
}
