package refdoc

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/builtin"
)

func TestReferenceIsUpToDate(t *testing.T) {
	want, err := Markdown(builtin.Registry())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(ReferencePath)))
	if err != nil {
		t.Fatalf("%s: %v; run go generate ./internal/refdoc", ReferencePath, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date; run go generate ./internal/refdoc\n%s", ReferencePath, firstDiff(got, want))
	}
}

// firstDiff shows the first line where the checked-in file differs.
func firstDiff(got, want []byte) string {
	g := strings.Split(string(got), "\n")
	w := strings.Split(string(want), "\n")
	for i := 0; i < max(len(g), len(w)); i++ {
		if i >= len(g) || i >= len(w) || g[i] != w[i] {
			var gl, wl string
			if i < len(g) {
				gl = g[i]
			}
			if i < len(w) {
				wl = w[i]
			}
			return "first difference at line " + strconv.Itoa(i+1) + ":\n  checked in: " + gl + "\n  generated:  " + wl
		}
	}
	return ""
}

func TestEveryOptionIsDocumented(t *testing.T) {
	for _, p := range Problems(builtin.Registry()) {
		t.Error(p)
	}
}

// Configs with the mistakes Problems must catch.
type undocumented struct {
	Good    string `yaml:"good" doc:"fine"`
	NoDoc   string `yaml:"no_doc"`
	NoTag   int    `doc:"the loader reads this as notag"`
	Nested  inner  `yaml:"nested" doc:"fine"`
	Skipped string `yaml:"-"`
	//lint:ignore U1000 the test checks that unexported fields are left out
	internal int
}

type inner struct {
	Deep bool `yaml:"deep"`
}

type undocumentedValue struct {
	Fields []string `yaml:"-"`
}

func (c *undocumentedValue) UnmarshalYAML(n *yaml.Node) error { return n.Decode(&c.Fields) }

func TestProblemsFindsUndocumentedOptions(t *testing.T) {
	reg := stages.NewRegistry()
	add(t, reg, stages.Factory{Kind: stages.KindSource, Type: "bad", Doc: "",
		NewConfig: func() any { return &undocumented{} }})
	add(t, reg, stages.Factory{Kind: stages.KindStep, Type: "badvalue", Doc: "Has a value.",
		NewConfig: func() any { return &undocumentedValue{} }})
	got := Problems(reg)
	want := []string{
		`source "bad": Factory.Doc is empty`,
		`source "bad": undocumented.NoDoc (option no_doc) has no doc tag`,
		`source "bad": undocumented.NoTag has no yaml tag (the loader reads it as "notag")`,
		`source "bad": undocumented.Nested.Deep (option deep) has no doc tag`,
		`step "badvalue": undocumentedValue.Fields (the step's value) has no doc tag`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("Problems:\n  got  %q\n  want %q", got, want)
	}
}

func add(t *testing.T, reg *stages.Registry, f stages.Factory) {
	t.Helper()
	fail := errors.New("not built in tests")
	switch f.Kind {
	case stages.KindSource:
		f.NewSource = func(stages.Settings, any) (stages.Source, error) { return nil, fail }
	case stages.KindStep:
		f.NewStep = func(stages.Settings, any) (stages.Step, error) { return nil, fail }
	case stages.KindSink:
		f.NewSink = func(stages.Settings, any) (stages.Sink, error) { return nil, fail }
	}
	if err := reg.Add(f); err != nil {
		t.Fatal(err)
	}
}

// allTypes exercises every type name and default format.
type allTypes struct {
	Path   string            `yaml:"path" doc:"d"`
	Mode   string            `yaml:"mode" doc:"d"`
	Quoted string            `yaml:"quoted" doc:"d"`
	On     bool              `yaml:"on" doc:"d"`
	N      int               `yaml:"n" doc:"d"`
	Ratio  float64           `yaml:"ratio" doc:"d"`
	Wait   time.Duration     `yaml:"wait" doc:"d"`
	Size   stages.ByteSize   `yaml:"size" doc:"d"`
	Tags   []string          `yaml:"tags" doc:"d"`
	Labels map[string]string `yaml:"labels" doc:"d"`
	Limit  *int              `yaml:"limit" doc:"d"`
	Sub    struct {
		Keep int `yaml:"keep" doc:"d"`
	} `yaml:"sub" doc:"d"`
	Hidden string `yaml:"-" doc:"not an option"`
}

func (c *allTypes) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, stages.FieldErr("path", errors.New("is required")))
	}
	if c.Sub.Keep == 0 {
		errs = append(errs, stages.FieldErr("sub.keep", errors.New("must be set")))
	}
	return errors.Join(errs...)
}

func TestOptionsTypesDefaultsAndRequired(t *testing.T) {
	newCfg := func() any {
		return &allTypes{Mode: "beginning", Quoted: "true", On: true, N: 3, Ratio: 0.5,
			Wait: 90 * time.Second, Size: 1 << 20, Tags: []string{"a", "b"}}
	}
	req, _ := required(newCfg)
	got := options(newCfg(), req)
	type row struct{ name, typ, def string }
	want := []row{
		{"path", "string", "required"},
		{"mode", "string", "beginning"},
		{"quoted", "string", `"true"`},
		{"on", "bool", "true"},
		{"n", "integer", "3"},
		{"ratio", "number", "0.5"},
		{"wait", "duration", "1m30s"},
		{"size", "byte size", "1MiB"},
		{"tags", "list of strings", "[a, b]"},
		{"labels", "map of string to string", "{}"},
		{"limit", "integer", "null"},
		{"sub", "mapping", ""},
		{"sub.keep", "integer", "required"},
	}
	var rows []row
	for _, o := range got {
		def := o.Default
		if o.Required {
			def = "required"
		}
		rows = append(rows, row{o.Name, o.Type, def})
	}
	if !slices.Equal(rows, want) {
		t.Errorf("options:\n  got  %v\n  want %v", rows, want)
	}
	if got[len(got)-1].Field != "allTypes.Sub.Keep" {
		t.Errorf("Field of sub.keep = %q, want allTypes.Sub.Keep", got[len(got)-1].Field)
	}
}

func TestFormatValues(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{formatDuration(0), "0"},
		{formatDuration(250 * time.Millisecond), "250ms"},
		{formatDuration(time.Minute), "1m"},
		{formatDuration(2 * time.Hour), "2h"},
		{formatDuration(time.Hour + 30*time.Second), "1h0m30s"},
		{formatByteSize(0), "0"},
		{formatByteSize(1 << 20), "1MiB"},
		{formatByteSize(256 << 10), "256KiB"},
		{formatByteSize(10e6), "10MB"},
		{formatByteSize(1000), "1KB"},
		{formatByteSize(1500), "1500"},
		{formatString(""), `""`},
		{formatString("emit"), "emit"},
		{formatString("10"), `"10"`},
		{formatString(`{"seq":{{seq}}}`), `'{"seq":{{seq}}}'`},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
}

func TestStepValueShapes(t *testing.T) {
	reg := builtin.Registry()
	for typ, want := range map[string]string{
		"filter": "a string",
		"drop":   "a list of strings or a string",
		"keep":   "a list of strings or a string",
		"set":    "a mapping",
		"eval":   "a mapping",
		"rename": "a mapping",
	} {
		f, ok := reg.Lookup(stages.KindStep, typ)
		if !ok {
			t.Errorf("step %q is not registered", typ)
			continue
		}
		d := describe(f)
		if d.Value == nil {
			t.Errorf("step %q: not described as written `%s: VALUE`", typ, typ)
			continue
		}
		if d.Value.Shape != want {
			t.Errorf("step %q: shape %q, want %q", typ, d.Value.Shape, want)
		}
		if wantReq := want != ""; d.Value.Required != wantReq {
			t.Errorf("step %q: required = %v, want %v", typ, d.Value.Required, wantReq)
		}
	}
}

// TestMergeDefaultsFollowSpec checks the probe against SPEC §5.
func TestMergeDefaultsFollowSpec(t *testing.T) {
	opts, err := mergeOptions()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range opts {
		got[o.Name] = o.Default
		if o.Required {
			got[o.Name] = "required"
		}
		if o.Doc == "" {
			t.Errorf("%s has no doc", o.Name)
		}
	}
	want := map[string]string{
		"merge.order_by": "required", "merge.max_lateness": "1s",
		"merge.idle_timeout": "30s", "merge.late": "emit",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: default %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("merge keys %v, want those of %v", got, want)
	}
}

var validList = regexp.MustCompile(`\(valid: ([^)]*)\)`)

// TestHandListsMatchLoader checks the keys this package lists by hand
// against the loader: an unknown key's message lists the valid ones.
func TestHandListsMatchLoader(t *testing.T) {
	reg, err := probeRegistry()
	if err != nil {
		t.Fatal(err)
	}
	const bogus = "zzzzzzzzzzzzzzzzzzzz"
	src := `version: 1
` + bogus + `: 1
sources:
  in: {type: probe, ` + bogus + `: 1}
workers:
  w: {inputs: [in], ` + bogus + `: 1}
sinks:
  out: {type: probe, inputs: [w], ` + bogus + `: 1}
`
	_, diags := config.Parse("hand.yaml", []byte(src), config.Options{Registry: reg})
	for _, tc := range []struct {
		prefix string // start of the unknown-key message
		want   []option
	}{
		{"unknown top-level key", topKeys()},
		{"sources.in:", commonKeys(reg, stages.KindSource)},
		{"workers.w:", workerKeys()},
		{"sinks.out:", commonKeys(reg, stages.KindSink)},
	} {
		var got []string
		for _, d := range diags {
			if m := validList.FindStringSubmatch(d.Msg); m != nil && strings.HasPrefix(d.Msg, tc.prefix) {
				got = strings.Split(m[1], ", ")
			}
		}
		if got == nil {
			t.Errorf("no unknown-key message starting %q in:\n%v", tc.prefix, diags)
			continue
		}
		var names []string
		for _, o := range tc.want {
			names = append(names, o.Name)
		}
		if !slices.Equal(names, got) {
			t.Errorf("%s: refdoc lists %v, the loader accepts %v", tc.prefix, names, got)
		}
	}
	if len(diags) != 4 {
		t.Errorf("want exactly the 4 unknown-key errors, got:\n%v", diags)
	}
}

// TestCapsInReference: what the reference says about parsing comes from
// the steps' Caps, so another parser is offered wherever parse_json is.
func TestCapsInReference(t *testing.T) {
	reg := stages.NewRegistry()
	noConfig := func() any { return &struct{}{} }
	add(t, reg, stages.Factory{Kind: stages.KindSource, Type: "in", Doc: "In.", NewConfig: noConfig})
	add(t, reg, stages.Factory{Kind: stages.KindStep, Type: "parse_fake", Doc: "Parses.", NewConfig: noConfig,
		Caps: stages.Caps{Parses: true}})
	add(t, reg, stages.Factory{Kind: stages.KindStep, Type: "needs_fake", Doc: "Needs fields.", NewConfig: noConfig,
		Caps: stages.Caps{NeedsFields: true}})
	add(t, reg, stages.Factory{Kind: stages.KindSink, Type: "out", Doc: "Out.", NewConfig: noConfig})
	md, err := Markdown(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"### Step `parse_fake`\n\nParses.\n\n**Parses records**:",
		"### Step `needs_fake`\n\nNeeds fields.\n\n**Needs parsed records**: a record that no parsing step (such as [`parse_fake`](#step-parse_fake)) accepted is a bad record.",
		"merging sink must be a worker with a parsing step (such as [`parse_fake`](#step-parse_fake))",
	} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("reference lacks %q", want)
		}
	}
	// The one mention left is the static example of a steps list.
	if n := bytes.Count(md, []byte("parse_json")); n != 1 {
		t.Errorf("the reference of a registry without parse_json names it %d times, want 1 (the steps example)", n)
	}
}
