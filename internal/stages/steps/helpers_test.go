package steps

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/stages"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// registry builds a registry of this package's factories, as the builtin
// package does.
func registry(t testing.TB) *stages.Registry {
	t.Helper()
	r := stages.NewRegistry()
	for _, f := range All() {
		if err := r.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// loadConfig decodes the step value src (YAML) the way the config loader
// does: through the node's Decode into the pointer from NewConfig, then
// Validate.
func loadConfig(t testing.TB, typ, src string) (any, error) {
	t.Helper()
	f, ok := registry(t).Lookup(stages.KindStep, typ)
	if !ok {
		t.Fatalf("step type %q is not registered", typ)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("bad test YAML %q: %v", src, err)
	}
	cfg := f.NewConfig()
	node := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	if len(doc.Content) > 0 {
		node = doc.Content[0]
	}
	if err := node.Decode(cfg); err != nil {
		return nil, err
	}
	if v, ok := cfg.(stages.Validator); ok {
		if err := v.Validate(); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// newStep builds a step from its YAML value, failing the test on errors.
func newStep(t testing.TB, typ, src string) stages.Step {
	t.Helper()
	cfg, err := loadConfig(t, typ, src)
	if err != nil {
		t.Fatalf("%s %s: %v", typ, src, err)
	}
	f, _ := registry(t).Lookup(stages.KindStep, typ)
	st, err := f.NewStep(stages.Settings{Pipeline: "p", ID: "w"}, cfg)
	if err != nil {
		t.Fatalf("NewStep %s: %v", typ, err)
	}
	return st
}

// writeLines writes lines to a file in a temp dir and reads them back as
// a batch, the way a file source hands records over: Raw slices of one
// read buffer, each capped at its own length.
func readBatch(t testing.TB, lines ...string) *stages.Batch {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	origin := &stages.Origin{Source: "in", Path: path}
	b := &stages.Batch{}
	off := 0
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		line := data[:i:i]
		b.Records = append(b.Records, stages.Record{Raw: line, Origin: origin, Offset: int64(off)})
		data = data[i+1:]
		off += i + 1
	}
	return b
}

// parsed returns a batch of lines that went through parse_json.
func parsed(t testing.TB, lines ...string) *stages.Batch {
	t.Helper()
	b := readBatch(t, lines...)
	newStep(t, "parse_json", "{}").Process(b)
	if len(b.Rejects) > 0 {
		t.Fatalf("parse_json rejected %q: %v", b.Rejects[0].Record.Raw, b.Rejects[0].Err)
	}
	return b
}

// decodeRecord checks that raw is one valid JSON object and returns it
// decoded by encoding/json.
func decodeRecord(t testing.TB, raw []byte) map[string]any {
	t.Helper()
	if !json.Valid(raw) {
		t.Fatalf("record is not valid JSON: %s", raw)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("record %s: %v", raw, err)
	}
	return m
}

func rawLines(rs []stages.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r.Raw)
	}
	return out
}

func rejectErrors(rs []stages.Reject) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Err.Error()
	}
	return out
}

// fieldErr returns the FieldError in err, failing when there is none.
func fieldErr(t testing.TB, err error) *stages.FieldError {
	t.Helper()
	var fe *stages.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *stages.FieldError", err, err)
	}
	return fe
}

func TestRegistered(t *testing.T) {
	r := registry(t)
	got := strings.Join(r.Types(stages.KindStep), ",")
	if got != "drop,eval,filter,keep,parse_csv,parse_json,parse_logfmt,parse_regex,parse_syslog,parse_timestamp,rename,set" {
		t.Fatalf("step types = %s", got)
	}
	for _, f := range All() {
		if f.Doc == "" || !strings.HasSuffix(f.Doc, ".") {
			t.Errorf("%s: Doc %q should be a sentence", f.Type, f.Doc)
		}
		if _, err := f.NewStep(stages.Settings{}, 42); err == nil {
			t.Errorf("%s: NewStep accepted a foreign config", f.Type)
		}
	}
}
