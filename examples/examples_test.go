// Package examples holds etld's example pipelines; its tests keep them
// loading cleanly and covering every registered stage type.
package examples

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/refdoc"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/builtin"
)

// load loads PATH (a file or this directory) with the built-in types and
// no environment, so that ${VAR:-default} takes its default.
func load(t *testing.T, path string) []*config.Pipeline {
	t.Helper()
	pipes, diags := config.Load(path, config.Options{
		Registry: builtin.Registry(),
		Env:      func(string) (string, bool) { return "", false },
	})
	for _, d := range diags {
		t.Errorf("%s", d) // warnings too: an example shows no warning
	}
	if len(diags) > 0 {
		t.FailNow()
	}
	return pipes
}

func TestExamplesLoadWithoutDiagnostics(t *testing.T) {
	pipes := load(t, ".")
	files, err := config.PipelineFiles(".")
	if err != nil {
		t.Fatal(err)
	}
	if len(pipes) != len(files) || len(pipes) == 0 {
		t.Fatalf("loaded %d pipelines from %d files", len(pipes), len(files))
	}
}

// used lists the stage types a pipeline uses, as "kind type".
func used(p *config.Pipeline) []string {
	var out []string
	for _, st := range p.Stages {
		switch st.Kind {
		case config.Source:
			out = append(out, string(stages.KindSource)+" "+st.Type)
		case config.Sink:
			out = append(out, string(stages.KindSink)+" "+st.Type)
		case config.Worker:
			for _, s := range st.Worker.Steps {
				out = append(out, string(stages.KindStep)+" "+s.Type)
			}
		}
	}
	return out
}

// TestEveryStageTypeHasAnExample fails when a newly registered type has
// no example: each type needs examples/<kind>-<type>.yaml (the file the
// config reference links to) that uses it.
func TestEveryStageTypeHasAnExample(t *testing.T) {
	reg := builtin.Registry()
	for _, k := range []stages.Kind{stages.KindSource, stages.KindStep, stages.KindSink} {
		for _, typ := range reg.Types(k) {
			file := strings.TrimPrefix(refdoc.ExamplePath(k, typ), "examples/")
			if _, err := os.Stat(file); err != nil {
				t.Errorf("%s type %q has no example: add examples/%s using it (%v)", k, typ, file, err)
				continue
			}
			pipes := load(t, file)
			if !slices.Contains(used(pipes[0]), string(k)+" "+typ) {
				t.Errorf("examples/%s does not use the %s type %q (uses %v)", file, k, typ, used(pipes[0]))
			}
		}
	}
}

// unending are source types that wait for clients or read a broker and
// never end by themselves: an example using one says how to feed it and
// stop it.
var unending = map[string]bool{"http_server": true, "journald": true, "kafka": true, "nats": true, "syslog": true}

// TestExamplesAreFinite keeps `etld run -c examples/` ending by itself,
// except for the examples of unending source types.
func TestExamplesAreFinite(t *testing.T) {
	for _, p := range load(t, ".") {
		for _, s := range p.Sources() {
			if !s.Finite && !unending[s.Type] {
				t.Errorf("%s: source %q never ends; use follow: false, a generate count, or stdin", p.File, s.ID)
			}
		}
	}
}

// TestExampleOutputsStayInOut keeps every output under examples/out/,
// which .gitignore covers, and each one distinct.
func TestExampleOutputsStayInOut(t *testing.T) {
	out, err := filepath.Abs("out")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range load(t, ".") {
		for _, s := range p.Sinks() {
			op, ok := s.Config.(stages.OutputPather)
			if !ok || op.OutputPath() == "" {
				continue
			}
			if rel, err := filepath.Rel(out, op.OutputPath()); err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s: sink %q writes %s, outside examples/out/", p.File, s.ID, op.OutputPath())
			}
		}
	}
}

// TestFeedsAreSortedJSON checks what the quickstart and ordered-merge
// examples rely on: every line of data/*.jsonl is a JSON object with an
// RFC 3339 ts, in order within its file, and a numeric amount.
func TestFeedsAreSortedJSON(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("data", "*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 4 {
		t.Errorf("want 4 feeds in data/, got %v", files)
	}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		var prev time.Time
		sc := bufio.NewScanner(f)
		for line := 1; sc.Scan(); line++ {
			var rec struct {
				TS     string   `json:"ts"`
				Level  string   `json:"level"`
				Amount *float64 `json:"amount"`
			}
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Errorf("%s:%d: %v", file, line, err)
				continue
			}
			ts, err := time.Parse(time.RFC3339, rec.TS)
			switch {
			case err != nil:
				t.Errorf("%s:%d: ts: %v", file, line, err)
			case ts.Before(prev):
				t.Errorf("%s:%d: ts %s is before the previous line's", file, line, rec.TS)
			default:
				prev = ts
			}
			if rec.Amount == nil || rec.Level == "" {
				t.Errorf("%s:%d: want level and a numeric amount", file, line)
			}
		}
		if err := sc.Err(); err != nil {
			t.Errorf("%s: %v", file, err)
		}
		f.Close()
	}
}
