package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/builtin"
)

// capsOptions loads with the built-in types plus fake steps that exist
// only by their capabilities: the loader must know parsing from Caps,
// never from a step's name.
func capsOptions(t *testing.T) Options {
	t.Helper()
	reg := builtin.Registry()
	errFake := errors.New("fake step is never built")
	for typ, caps := range map[string]stages.Caps{
		"parse_fake": {Parses: true},
		"needs_fake": {NeedsFields: true},
	} {
		err := reg.Add(stages.Factory{
			Kind: stages.KindStep, Type: typ, Doc: "fake", Caps: caps,
			NewConfig: func() any { return &struct{}{} },
			NewStep:   func(stages.Settings, any) (stages.Step, error) { return nil, errFake },
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	opts := testOptions()
	opts.Registry = reg
	return opts
}

// TestCapsParsingStep: a parsing step that is not parse_json feeds an
// ordered merge and lets steps that need fields follow, without a
// diagnostic.
func TestCapsParsingStep(t *testing.T) {
	const src = `version: 1
sources: {in: {type: stdin}}
workers:
  w:
    inputs: [in]
    ordered: true
    steps: [parse_fake: {}, set: {a: 1}, needs_fake: {}]
  after:
    inputs: [w]
    ordered: true
    steps: [drop: [a]]
sinks:
  out: {type: file, inputs: [after], path: out.jsonl, merge: {order_by: ts}}
`
	p, ds := Parse("caps.yaml", []byte(src), capsOptions(t))
	if p == nil || len(ds) != 0 {
		t.Fatalf("Parse: want no diagnostics, got %v", diagLines(ds))
	}
	if !p.Stage("w").Parses || !p.Stage("after").Parses {
		t.Errorf("Parses: w %v, after %v; want both true", p.Stage("w").Parses, p.Stage("after").Parses)
	}
}

// TestCapsNeedsFields: the warning and the merge error come from Caps and
// name the registered parsing steps.
func TestCapsNeedsFields(t *testing.T) {
	const src = `version: 1
sources: {in: {type: stdin}}
workers:
  w:
    inputs: [in]
    ordered: true
    steps: [needs_fake: {}, filter: 'true']
sinks:
  out: {type: file, inputs: [w], path: out.jsonl, merge: {order_by: ts}}
`
	_, ds := Parse("caps.yaml", []byte(src), capsOptions(t))
	want := []string{
		"caps.yaml:7:13: warning: workers.w.steps[0].needs_fake: records reaching this step are not parsed yet, so it will reject them; add a parsing step (parse_csv, parse_fake, parse_json, parse_logfmt, parse_regex, parse_syslog) before it",
		`caps.yaml:9:30: sinks.out.inputs: "w" does not parse records: merge.order_by reads a field, so every input of a merging sink must be a worker with a parsing step (parse_csv, parse_fake, parse_json, parse_logfmt, parse_regex, parse_syslog)`,
	}
	equalLines(t, "diagnostics", diagLines(ds), want)
}

// fieldsSourceConfig is a fake source config that produces fields and
// checks a file once paths are resolved.
type fieldsSourceConfig struct {
	Cert string `yaml:"cert"`
	dir  string
}

func (c *fieldsSourceConfig) ProducesFields() bool  { return true }
func (c *fieldsSourceConfig) ResolvePaths(d string) { c.dir = d }
func (c *fieldsSourceConfig) CheckFiles() error {
	if c.dir == "" {
		return errors.New("CheckFiles before ResolvePaths")
	}
	return stages.FieldErr("cert", errors.New("no such file: "+c.Cert))
}

// TestSourceProducesFieldsAndChecksFiles: a source whose records have
// fields lets a step that needs fields follow it without a warning, and
// a file check runs after ResolvePaths and is reported at its option.
func TestSourceProducesFieldsAndChecksFiles(t *testing.T) {
	opts := capsOptions(t)
	if err := opts.Registry.Add(stages.Factory{
		Kind: stages.KindSource, Type: "fields_fake", Doc: "fake",
		NewConfig: func() any { return &fieldsSourceConfig{} },
		NewSource: func(stages.Settings, any) (stages.Source, error) { return nil, errors.New("never built") },
	}); err != nil {
		t.Fatal(err)
	}
	const src = `version: 1
sources:
  in:
    type: fields_fake
    cert: c.pem
workers:
  w: {inputs: [in], steps: [needs_fake: {}]}
sinks:
  out: {type: stdout, inputs: [w]}
`
	_, ds := Parse("fields.yaml", []byte(src), opts)
	got := diagLines(ds)
	if len(got) != 1 || got[0] != "fields.yaml:5:11: sources.in.cert: no such file: c.pem" {
		t.Fatalf("diagnostics = %q, want only the file check at the cert option", got)
	}
}

// InlineShared is a group of options shared by two stage types.
type InlineShared struct {
	URL  string `yaml:"url"`
	User string `yaml:"user"`
}

type inlineConfig struct {
	InlineShared `yaml:",inline"`
	Stream       string `yaml:"stream"`
}

// TestInlineOptions: the options of an inline struct are decoded at the
// level of the stage's own, and listed with them for an unknown option.
func TestInlineOptions(t *testing.T) {
	opts := capsOptions(t)
	var got *inlineConfig
	if err := opts.Registry.Add(stages.Factory{
		Kind: stages.KindSource, Type: "inline_fake", Doc: "fake",
		NewConfig: func() any { got = &inlineConfig{}; return got },
		NewSource: func(stages.Settings, any) (stages.Source, error) { return nil, errors.New("never built") },
	}); err != nil {
		t.Fatal(err)
	}
	const src = `version: 1
sources:
  in: {type: inline_fake, url: "nats://x", user: u, stream: s, usr: v}
sinks:
  out: {type: stdout, inputs: [in]}
`
	_, ds := Parse("inline.yaml", []byte(src), opts)
	lines := diagLines(ds)
	if len(lines) != 1 || !strings.Contains(lines[0], `unknown option "usr"`) || !strings.Contains(lines[0], `"user"`) {
		t.Fatalf("diagnostics = %q, want only the unknown usr, suggesting user", lines)
	}
	if got.URL != "nats://x" || got.User != "u" || got.Stream != "s" {
		t.Fatalf("decoded %+v", *got)
	}
}
