package engine

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"testing"
)

// declared returns the names of the package constants declared with the
// given type name, read from the package's source: a constant added
// later is found without anyone listing it here.
func declared(t *testing.T, typ string) []string {
	t.Helper()
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, path := range paths {
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, spec := range g.Specs {
				v := spec.(*ast.ValueSpec)
				if id, ok := v.Type.(*ast.Ident); ok && id.Name == typ {
					for _, n := range v.Names {
						names = append(names, n.Name)
					}
				}
			}
		}
	}
	if len(names) == 0 {
		t.Fatalf("no constant of type %s found in the package source", typ)
	}
	return names
}

// TestEveryActionHasAResult: every declared Action is listed by Actions
// and has its own case in the success rule (none falls to the default,
// which would report it as a failure), and only started, reconfigured,
// replaced and stopped count as a change.
func TestEveryActionHasAResult(t *testing.T) {
	all := Actions()
	names := declared(t, "Action")
	if len(names) != len(all) {
		t.Fatalf("declared actions %v, but Actions() returns %v", names, all)
	}
	changed := []Action{ActionStarted, ActionReconfigured, ActionReplaced, ActionStopped}
	for _, a := range all {
		if !a.Valid() {
			t.Errorf("action %q has no case in Action.result", a)
		}
		switch r := a.Result(); r {
		case ResultSuccess, ResultUnchanged, ResultFailure:
		default:
			t.Errorf("action %q: result %q is not a declared Result", a, r)
		}
		if got, want := a.Changed(), slices.Contains(changed, a); got != want {
			t.Errorf("%q.Changed() = %v; want %v", a, got, want)
		}
	}
	if Action("reconfigured").Result() != ResultSuccess {
		t.Errorf("reconfigured is not a success")
	}
	if a := Action("renamed"); a.Valid() || a.Result() != ResultFailure {
		t.Errorf("an undeclared action is valid (%v) or not a failure (%s)", a.Valid(), a.Result())
	}
	if (Change{Action: ActionReconfigured, Err: errors.New("boom")}).Result() != ResultFailure {
		t.Errorf("a change with an error is not a failure")
	}
}

// TestEveryStateIsJudged: every declared State is listed by States, and
// NotReady judges pipelines by it: running and finished are ready, the
// others are not and are named in the reason.
func TestEveryStateIsJudged(t *testing.T) {
	if names := declared(t, "State"); len(names) != len(States()) {
		t.Fatalf("declared states %v, but States() returns %v", names, States())
	}
	for _, s := range States() {
		reason := NotReady([]PipelineStatus{{Name: "p", State: s, Error: "disk on fire"}})
		ready := s == StateRunning || s == StateFinished
		if (reason == "") != ready {
			t.Errorf("state %s: NotReady = %q; want ready %v", s, reason, ready)
		}
	}
	if r := NotReady([]PipelineStatus{{Name: "p", State: StateRunning, Stages: []StageStatus{{ID: "out", Kind: "sink"}}}}); r == "" {
		t.Errorf("a pipeline with an unhealthy sink is ready")
	}
}
