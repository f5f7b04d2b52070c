// Package stagetest is the conformance suite of the stage contract
// (package stages): the rules every source, step and sink must keep
// whatever it talks to. Source, Step and Sink run the checks as subtests;
// internal/stages/builtin runs them on every registered type, so a new
// type gets them by adding a fixture there, and a stage package may call
// them directly on its own cases.
//
// The checks drive stages the way internal/engine does (one goroutine per
// source and sink, concurrent Process calls) and end each with
// goleak.VerifyNone, so a goroutine left behind by Close fails its check.
package stagetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
)

// hangTimeout is how long a call that must return promptly may take
// before the suite reports it as hung. It only bounds a failure (a
// call that never returns): a passing stage returns long before it.
const hangTimeout = 30 * time.Second

// Config decodes options, the YAML a pipeline file holds for a stage of
// type f, with the config loader itself (strict keys, defaults, Validate,
// paths resolved against dir), and returns the config for f's
// constructor. For a source or sink, options are the block mapping's
// lines besides `type` (e.g. "path: /tmp/x/out.jsonl\nfsync: never");
// for a step, the step's value (e.g. "[user, msg]" or "{}").
func Config(t testing.TB, f stages.Factory, dir, options string) any {
	t.Helper()
	reg := stages.NewRegistry()
	add := func(g stages.Factory) {
		if err := reg.Add(g); err != nil {
			t.Fatalf("stagetest: %v", err)
		}
	}
	add(f)
	// Placeholder types for the other ends of the pipeline.
	noConfig := func() any { return &struct{}{} }
	if f.Kind != stages.KindSource {
		add(stages.Factory{Kind: stages.KindSource, Type: "stagetest", NewConfig: noConfig,
			NewSource: func(stages.Settings, any) (stages.Source, error) { return nil, nil }})
	}
	if f.Kind != stages.KindSink {
		add(stages.Factory{Kind: stages.KindSink, Type: "stagetest", NewConfig: noConfig,
			NewSink: func(stages.Settings, any) (stages.Sink, error) { return nil, nil }})
	}
	var src, stage string
	switch f.Kind {
	case stages.KindSource:
		src = "sources:\n  s:\n    type: " + f.Type + "\n" + indent(options, 4) +
			"sinks:\n  out: {type: stagetest, inputs: [s]}\n"
		stage = "s"
	case stages.KindStep:
		src = "sources:\n  in: {type: stagetest}\nworkers:\n  w:\n    inputs: [in]\n    steps:\n      - " +
			f.Type + ": " + options + "\nsinks:\n  out: {type: stagetest, inputs: [w]}\n"
		stage = "w"
	case stages.KindSink:
		src = "sources:\n  in: {type: stagetest}\nsinks:\n  out:\n    type: " + f.Type + "\n    inputs: [in]\n" +
			indent(options, 4)
		stage = "out"
	}
	p, diags := config.Parse(dir+"/stagetest.yaml", []byte("version: 1\n"+src), config.Options{
		Registry: reg,
		Env:      func(string) (string, bool) { return "", false },
	})
	if p == nil || diags.HasErrors() {
		t.Fatalf("stagetest: the %s %q options do not load:\n%s\n%v", f.Kind, f.Type, options, diags)
	}
	st := p.Stage(stage)
	if f.Kind == stages.KindStep {
		return st.Worker.Steps[0].Config
	}
	return st.Config
}

func indent(s string, n int) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString(strings.Repeat(" ", n))
		b.WriteString(strings.TrimRight(line, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

// settings fills in what a case left empty.
func settings(s stages.Settings, id string) stages.Settings {
	if s.Pipeline == "" {
		s.Pipeline = "stagetest"
	}
	if s.ID == "" {
		s.ID = id
	}
	return s
}

// IgnoreLeaks are goroutines the leak checks ignore: those of test
// servers a fixture talks to (an in-process broker's per-connection
// goroutines end on the server's own time after the stage's client has
// closed). The stage's own goroutines are still checked.
var IgnoreLeaks []goleak.Option

// validState fails t unless state, what a Stateful stage's State
// returned (when: at which point), is valid JSON, or nil (null). The
// checkpoint embeds stage states as they are: a save with any other
// state fails.
func validState(t *testing.T, when string, state []byte) {
	t.Helper()
	if len(state) > 0 && !json.Valid(state) {
		t.Errorf("State %s returned invalid JSON: %.200q", when, state)
	}
}

// checkState asks s, a Stateful stage, for its State and checks it
// (validState); an error fails t.
func checkState(t *testing.T, s any, when string) {
	t.Helper()
	if st, err := s.(stages.Stateful).State(); err != nil {
		t.Errorf("State %s: %v", when, err)
	} else {
		validState(t, when, st)
	}
}

// check runs fn as a subtest that must leave no goroutine behind.
func check(t *testing.T, name string, fn func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		leak := goleak.IgnoreCurrent()
		fn(t)
		if !t.Failed() {
			goleak.VerifyNone(t, append([]goleak.Option{leak}, IgnoreLeaks...)...)
		}
	})
}

// within runs fn in its own goroutine and fails t if it does not return
// within hangTimeout; what names the call.
func within(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(hangTimeout):
		t.Fatalf("%s did not return within %v", what, hangTimeout)
	}
}

// cancelled returns a context that is already done.
func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// Lines are the sample records the suite sends through steps and sinks:
// JSON objects with a time, a level, a message, a user and a number.
func Lines(n int) []string {
	levels := []string{"info", "debug", "warn"}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"ts":"2024-01-01T00:00:%02d.%06dZ","level":%q,"msg":"record %d","user":"u%d","n":%d}`,
			i%60, i, levels[i%len(levels)], i, i%7, i)
	}
	return out
}

// batch builds a batch of lines, each Raw in its own buffer.
func batch(lines []string, parsed bool) *stages.Batch {
	b := &stages.Batch{Records: make([]stages.Record, len(lines))}
	origin := &stages.Origin{Source: "stagetest", Path: "stagetest"}
	for i, l := range lines {
		b.Records[i] = stages.Record{Raw: []byte(l), Parsed: parsed, Origin: origin, Offset: int64(i)}
	}
	return b
}

// runBatch builds a batch of lines as line runs of per lines each (see
// stages.Batch.AddLines), in one buffer the batch owns.
func runBatch(lines []string, per int) *stages.Batch {
	size := 0
	for _, l := range lines {
		size += len(l) + 1
	}
	buf := stages.NewBuffer(size)[:0]
	b := &stages.Batch{}
	origin := &stages.Origin{Source: "stagetest", Path: "stagetest"}
	for i := 0; i < len(lines); i += per {
		lo := len(buf)
		n := min(per, len(lines)-i)
		for _, l := range lines[i : i+n] {
			buf = append(append(buf, l...), '\n')
		}
		b.AddLines(buf[lo:len(buf):len(buf)], n, origin, int64(lo))
	}
	b.Own(buf)
	return b
}

// raws copies the Raw texts of records.
func raws(recs []stages.Record) []string {
	out := make([]string, len(recs))
	for i := range recs {
		out[i] = string(recs[i].Raw)
	}
	return out
}

// scribble overwrites every byte of the records' Raw (and of the rejects'),
// as the next user of reused buffers would.
func scribble(b *stages.Batch) {
	for i := range b.Records {
		for j := range b.Records[i].Raw {
			b.Records[i].Raw[j] = 'X'
		}
	}
	for i := range b.Rejects {
		for j := range b.Rejects[i].Record.Raw {
			b.Rejects[i].Record.Raw[j] = 'X'
		}
	}
}

// equal reports the first difference between two lists of lines.
func equal(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d records, want %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Errorf("%s: record %d is %q, want %q", what, i, got[i], want[i])
			return
		}
	}
}

// checkCommitter fails t when stage acknowledges commits (stages.Committer)
// but has no state to commit (stages.Stateful): the runtime notifies only
// stateful stages, so it would never hear of a commit.
func checkCommitter(t *testing.T, stage any) {
	t.Helper()
	if _, ok := stage.(stages.Committer); !ok {
		return
	}
	if _, ok := stage.(stages.Stateful); !ok {
		t.Errorf("%T implements stages.Committer but not stages.Stateful: only stateful stages are told of commits, so it never would be", stage)
	}
}

// ReadToEnd reads a finite source until stages.ErrEndOfInput, handing
// each batch to each. Another error fails the test, and so does an end
// that does not come within timeout (a hang detector, not a timing
// assertion). Stage packages' tests share it.
func ReadToEnd(t testing.TB, src stages.Source, timeout time.Duration, each func(*stages.Batch)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		b, err := src.Read(ctx)
		if errors.Is(err, stages.ErrEndOfInput) {
			return
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		each(b)
	}
}
