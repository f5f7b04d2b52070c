package config

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzLoad loads arbitrary bytes as a pipeline file. Whatever the input,
// Load must not panic, must point every diagnostic at a position in that
// file on one line, and must return a pipeline exactly when there is no
// error, whose graph is consistent and renders. Seeds: the corpus in
// testdata/fuzz/FuzzLoad plus every testdata pipeline file.
//
//	go test -run='^$' -fuzz=FuzzLoad -fuzztime=2m ./internal/config
func FuzzLoad(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "*", "*.y*ml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	opts := testOptions()
	// One file per fuzzing process: the fuzz function is not run in
	// parallel within a process.
	path := filepath.Join(f.TempDir(), "fuzz.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		pipes, ds := Load(path, opts)
		checkLoadInvariants(t, path, pipes, ds)

		// Load is deterministic.
		_, again := Load(path, opts)
		if !reflect.DeepEqual(diagLines(again), diagLines(ds)) {
			t.Fatalf("second Load differs:\n%s\nvs\n%s", strings.Join(diagLines(ds), "\n"), strings.Join(diagLines(again), "\n"))
		}
	})
}

func checkLoadInvariants(t *testing.T, path string, pipes []*Pipeline, ds Diagnostics) {
	t.Helper()
	for i, d := range ds {
		if d.File != path || d.Line < 1 || d.Col < 1 || d.Msg == "" {
			t.Fatalf("diagnostic without FILE:LINE:COL or message: %+v", d)
		}
		if strings.ContainsAny(d.Msg, "\n\r") {
			t.Fatalf("diagnostic is not one line: %q", d.String())
		}
		if i > 0 {
			p := ds[i-1]
			if p.Line > d.Line || (p.Line == d.Line && p.Col > d.Col) {
				t.Fatalf("diagnostics out of order: %q before %q", p.String(), d.String())
			}
		}
	}
	if ds.HasErrors() {
		if pipes != nil {
			t.Fatalf("Load returned %d pipelines along with errors", len(pipes))
		}
		return
	}
	if len(pipes) != 1 {
		t.Fatalf("Load returned %d pipelines and no error", len(pipes))
	}
	p := pipes[0]
	if p.Name != "fuzz" || p.File != path || len(p.Hash) != 64 || len(p.Stages) == 0 || p.CheckpointInterval <= 0 {
		t.Fatalf("pipeline = %+v", p)
	}
	index := map[string]int{}
	for i, st := range p.Stages {
		if _, dup := index[st.ID]; dup {
			t.Fatalf("stage %q twice", st.ID)
		}
		index[st.ID] = i
		if p.Stage(st.ID) != st || len(st.Fingerprint) != 16 || st.Pos.Line < 1 {
			t.Fatalf("stage %+v", st)
		}
		switch st.Kind {
		case Source:
			if st.Config == nil || len(st.Inputs) != 0 {
				t.Fatalf("source %+v", st)
			}
		case Worker:
			if st.Worker == nil || len(st.Inputs) == 0 {
				t.Fatalf("worker %+v", st)
			}
		case Sink:
			if st.Config == nil || (len(st.Inputs) == 0) != (st.ID == p.DeadLetter) {
				t.Fatalf("sink %+v (dead letter %q)", st, p.DeadLetter)
			}
		default:
			t.Fatalf("stage kind %q", st.Kind)
		}
		for _, in := range st.Inputs {
			j, ok := index[in]
			if !ok || p.Stages[j].Kind == Sink {
				t.Fatalf("%s reads %q, which is not an earlier source or worker", st.ID, in)
			}
		}
	}
	for _, st := range p.Stages {
		for _, out := range st.Outputs {
			if r := p.Stage(out); r == nil || !contains(r.Inputs, st.ID) {
				t.Fatalf("%s.Outputs has %q, which does not read it", st.ID, out)
			}
		}
	}
	if err := WriteDOT(io.Discard, pipes); err != nil {
		t.Fatal(err)
	}
	if err := WriteMermaid(io.Discard, pipes); err != nil {
		t.Fatal(err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
