package pipetest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/builtin"
	"github.com/etld/etld/internal/stages/sources"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSameLine(t *testing.T) {
	for _, c := range []struct {
		want, got string
		same      bool
	}{
		{`plain text`, `plain text`, true},
		{`plain text`, `plain  text`, false},
		{`{"a":1,"b":"x"}`, `{"b":"x","a":1}`, true},
		{`{"a":1.50}`, `{"a":1.5}`, true},
		{`{"a":1}`, `{"a":1.0}`, true},
		{`{"a":1}`, `{"a":"1"}`, false},
		{`{"a":12345678901234567890}`, `{"a":12345678901234567891}`, false},
		{`{"a":[1,2]}`, `{"a":[2,1]}`, false},
		{`{"a":{"x":null,"y":true}}`, `{ "a" : { "y":true, "x":null } }`, true},
		{`{"a":1}`, `{"a":1,"b":2}`, false},
		{`{"a":1}`, `{"a":1} trailing`, false},
		{`42`, `42.0`, false}, // not an object or array: text
		{`{"a":1`, `{"a":1`, true},
	} {
		w, g := lines([]string{c.want}), lines([]string{c.got})
		if got := same(w[0], g[0]); got != c.same {
			t.Errorf("same(%s, %s) = %v, want %v", c.want, c.got, got, c.same)
		}
	}
}

func TestDiff(t *testing.T) {
	d, ok := diff([]string{"a", "b", "c", "d"}, []string{"a", "c", "x", "d", "e"})
	if ok {
		t.Fatal("diff of different lines says they match")
	}
	var got []string
	for _, l := range d {
		got = append(got, string(l.Op)+l.Text)
	}
	want := []string{" a", "-b", " c", "+x", " d", "+e"}
	if !slices.Equal(got, want) {
		t.Errorf("diff = %q, want %q", got, want)
	}
	if _, ok := diff([]string{`{"a":1,"b":2}`}, []string{`{"b":2,"a":1}`}); !ok {
		t.Error("JSON lines with members in another order do not match")
	}
	if d, ok := diff(nil, []string{}); !ok || len(d) != 0 {
		t.Errorf("diff of nothing = %v, %v", d, ok)
	}
	d, _ = diff([]string{"x"}, []string{"y"})
	if len(d) != 2 || d[0].Op != Want || d[1].Op != Got {
		t.Errorf("a changed line shows as %v, want - then +", d)
	}
}

// TestParseErrors: every problem of a test file, at its position.
func TestParseErrors(t *testing.T) {
	src := `pipeline: p.yaml
tests:
  - name: one
    input:
      a: '{"not": "a list"}'
    expect:
      out:
        - {"a": 1}
    extra: true
  - name: one
    input: {}
    expect: {}
  - input:
      a: [x]
    expect:
      out: []
bogus: 1
`
	f, diags := Parse("t.test.yaml", []byte(src))
	if f != nil {
		t.Fatal("an invalid file parsed")
	}
	var got []string
	for _, d := range diags {
		got = append(got, d.String())
	}
	want := []string{
		`t.test.yaml:5:10: source "a": want a list of lines, got "{\"not\": \"a list\"}"`,
		`t.test.yaml:8:11: sink "out": a line is a string, got a mapping (quote JSON lines: '{"a": 1}')`,
		`t.test.yaml:9:5: unknown key "extra" in a test (valid: expect, input, name)`,
		`t.test.yaml:10:11: test name "one" is used twice (first at line 3)`,
		`t.test.yaml:12:13: expect names no sink: a test checks at least one`,
		`t.test.yaml:13:5: a test: missing name`,
		`t.test.yaml:17:1: unknown key "bogus" in the test file (valid: pipeline, tests)`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, bad := range []struct{ src, want string }{
		{"", "t.test.yaml:1:1: empty test file (want pipeline and tests)"},
		{"pipeline: [\n", "t.test.yaml:2:1: invalid YAML"},
		{"tests: []\n", "t.test.yaml:1:8: tests must be a non-empty list"},
		{"- a\n", "t.test.yaml:1:1: the test file must be a mapping, got a list"},
	} {
		_, diags := Parse("t.test.yaml", []byte(bad.src))
		if len(diags) == 0 || !strings.HasPrefix(diags[0].String(), bad.want) {
			t.Errorf("Parse(%q) = %v, want a diagnostic starting %q", bad.src, diags, bad.want)
		}
	}
}

// writeFiles writes name -> content under a temporary directory.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// runFile parses and runs one test file of dir.
func runFile(t *testing.T, dir, name string) ([]Result, []string) {
	t.Helper()
	path := filepath.Join(dir, name)
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := Parse(path, src)
	if f == nil {
		t.Fatalf("parse: %v", diags)
	}
	res, diags := RunFile(context.Background(), f, Options{Registry: builtin.Registry()})
	var ds []string
	for _, d := range diags {
		ds = append(ds, strings.TrimPrefix(d.String(), dir+"/"))
	}
	return res, ds
}

// pipeline reads two files through a worker with several goroutines
// into a CSV file and a dead-letter file. None of its files exists: a
// test must not need them, nor create them.
const pipeline = `version: 1
dead_letter: rejects
sources:
  a: { type: file, path: in/a.log, follow: true }
  b: { type: file, path: in/b.log, max_line_bytes: 20 }
workers:
  w:
    inputs: [a, b]
    concurrency: 4
    steps:
      - parse_json: {}
      - eval: { n2: 'n * 2' }
sinks:
  out: { type: file, inputs: [w], path: out/out.csv, encoding: csv, columns: [n, n2], header: true }
  rejects: { type: file, path: out/rejects.jsonl }
`

func TestRunFile(t *testing.T) {
	var in strings.Builder
	in.WriteString("pipeline: p.yaml\ntests:\n  - name: many\n    input:\n      b:\n")
	var want strings.Builder
	want.WriteString("    expect:\n      out:\n        - n,n2\n")
	// Source a comes first in the pipeline file: its records are
	// expected first, whatever the scheduling.
	var aIn, aWant strings.Builder
	for i := range 3000 {
		line := `{"n":` + itoa(i) + `}`
		exp := "        - '" + itoa(i) + "," + itoa(2*i) + "'\n"
		if i%2 == 0 {
			aIn.WriteString("        - '" + line + "'\n")
			aWant.WriteString(exp)
		} else {
			in.WriteString("        - '" + line + "'\n")
		}
	}
	// b's expectations after a's.
	want.WriteString(aWant.String())
	for i := 1; i < 3000; i += 2 {
		want.WriteString("        - '" + itoa(i) + "," + itoa(2*i) + "'\n")
	}
	in.WriteString("        - '{\"n\": 1, \"too\": \"long\"}'\n") // over max_line_bytes: 20
	in.WriteString("      a:\n" + aIn.String())
	want.WriteString("      rejects:\n")
	want.WriteString(`        - '{"error":"line of 23 bytes exceeds max_line_bytes (20)","stage":"b","source":"b","origin":"b:LEN","record":"{\"n\": 1, \"too\": \"lon","length":23}'` + "\n")
	test := in.String() + want.String()
	dir := writeFiles(t, map[string]string{"p.yaml": pipeline})
	// The offset of the long line: every line of b before it.
	off := 0
	for i := 1; i < 3000; i += 2 {
		off += len(`{"n":`+itoa(i)+`}`) + 1
	}
	test = strings.Replace(test, "b:LEN", "b:"+itoa(off), 1)
	if err := os.WriteFile(filepath.Join(dir, "p.test.yaml"), []byte(test), 0o644); err != nil {
		t.Fatal(err)
	}
	res, diags := runFile(t, dir, "p.test.yaml")
	if len(diags) > 0 || len(res) != 1 {
		t.Fatalf("diags %v, %d results", diags, len(res))
	}
	if !res[0].Passed() {
		var b bytes.Buffer
		Report(&b, res[0])
		t.Fatalf("test failed:\n%s", tail(b.String(), 30))
	}
	for _, p := range []string{"in", "out"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !os.IsNotExist(err) {
			t.Errorf("the test touched %s: %v", p, err)
		}
	}
}

func TestRunFileReportsMismatchAndBadIDs(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"p.yaml": pipeline,
		"fail.test.yaml": `pipeline: p.yaml
tests:
  - name: wrong value
    input:
      a: ['{"n":1}', '{"n":2}']
    expect:
      out: ['n,n2', '1,2', '2,5']
      rejects: []
`,
		"ids.test.yaml": `pipeline: p.yaml
tests:
  - name: bad ids
    input:
      w: []
      nope: []
    expect:
      a: []
`,
		"missing.test.yaml": "pipeline: gone.yaml\ntests:\n  - { name: x, input: {}, expect: { out: [] } }\n",
	})
	res, diags := runFile(t, dir, "fail.test.yaml")
	if len(diags) > 0 || len(res) != 1 || res[0].Passed() {
		t.Fatalf("diags %v, results %+v", diags, res)
	}
	var b bytes.Buffer
	Report(&b, res[0])
	want := `FAIL ` + filepath.Join(dir, "fail.test.yaml") + `:3: wrong value
    sink out: 1 line missing, 1 line not expected (-want +got):
        n,n2
        1,2
      - 2,5
      + 2,4
`
	if b.String() != want {
		t.Errorf("report:\n%s\nwant:\n%s", b.String(), want)
	}

	_, diags = runFile(t, dir, "ids.test.yaml")
	wantDiags := []string{
		`ids.test.yaml:5:7: input: "w" is a worker of pipeline ` + filepath.Join(dir, "p.yaml") + `, want a source (sources: a, b)`,
		`ids.test.yaml:6:7: input: "nope" is not a stage of pipeline ` + filepath.Join(dir, "p.yaml") + ` (sources: a, b)`,
		`ids.test.yaml:8:7: expect: "a" is a source of pipeline ` + filepath.Join(dir, "p.yaml") + `, want a sink (sinks: out, rejects)`,
	}
	if !slices.Equal(diags, wantDiags) {
		t.Errorf("diagnostics:\n%s\nwant:\n%s", strings.Join(diags, "\n"), strings.Join(wantDiags, "\n"))
	}
	_, diags = runFile(t, dir, "missing.test.yaml")
	if len(diags) != 1 || !strings.HasPrefix(diags[0], "missing.test.yaml:1:11: pipeline ") || !strings.HasSuffix(diags[0], "no such file or directory") {
		t.Errorf("missing pipeline: %v", diags)
	}
}

func TestFind(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"a.yaml": pipeline, "a.test.yaml": "", "b.yaml": pipeline, "b.test.yml": "", ".c.test.yaml": "", "notes.txt": "",
	})
	got, err := NextTo(dir)
	if err != nil || !slices.Equal(got, []string{filepath.Join(dir, "a.test.yaml"), filepath.Join(dir, "b.test.yml")}) {
		t.Errorf("NextTo(dir) = %v, %v", got, err)
	}
	got, err = NextTo(filepath.Join(dir, "b.yaml"))
	if err != nil || !slices.Equal(got, []string{filepath.Join(dir, "b.test.yml")}) {
		t.Errorf("NextTo(b.yaml) = %v, %v", got, err)
	}
	if _, err := NextTo(filepath.Join(dir, "nope")); err == nil {
		t.Error("NextTo of a missing path: no error")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestFieldsSource: a source whose records come with fields gets one
// JSON object per test line; another line is a bad record.
func TestFieldsSource(t *testing.T) {
	in := sources.NewReaderSource(stages.Settings{ID: "j"}, nil, strings.NewReader("{\"a\":1}\nnot json\n {\"b\":2} \n"), "j")
	src := &fieldsSource{Source: in}
	defer src.Close()
	ctx := context.Background()
	if err := src.Open(ctx); err != nil {
		t.Fatal(err)
	}
	var got, bad []string
	for {
		b, err := src.Read(ctx)
		if b != nil {
			for _, r := range b.Records {
				if !r.Parsed {
					t.Errorf("record %q is not parsed", r.Raw)
				}
				got = append(got, string(r.Raw)+" from "+string(r.Original()))
			}
			for _, r := range b.Rejects {
				bad = append(bad, string(r.Record.Raw)+": "+r.Err.Error())
			}
		}
		if err != nil {
			break
		}
	}
	if want := []string{`{"a":1} from {"a":1}`, `{"b":2} from  {"b":2} `}; !slices.Equal(got, want) {
		t.Errorf("records %q, want %q", got, want)
	}
	if len(bad) != 1 || !strings.HasPrefix(bad[0], "not json: invalid JSON: ") {
		t.Errorf("rejects %q", bad)
	}
}
