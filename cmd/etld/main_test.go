package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// etld runs the CLI in-process and returns its exit code, stdout and stderr.
func etld(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writePipeline(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const valid = `version: 1
sources:
  gen: {type: generate, count: 3}
workers:
  w:
    inputs: [gen]
    concurrency: 2
    steps: [ {parse_json: {}} ]
sinks:
  out: {type: stdout, inputs: [w]}
`

func TestValidate(t *testing.T) {
	p := writePipeline(t, "demo.yaml", valid)
	code, out, errOut := etld(t, "validate", "-c", p)
	if code != 0 || errOut != "" {
		t.Fatalf("validate valid file: exit %d, stderr %q", code, errOut)
	}
	if want := p + ": ok: 1 pipeline (1 source, 1 worker, 1 sink)\n"; out != want {
		t.Fatalf("stdout = %q, want %q", out, want)
	}

	bad := writePipeline(t, "bad.yaml", "version: 1\nsources:\n  gen: {type: generat}\nsinks:\n  out: {type: stdout, inputs: [gne]}\n")
	code, out, errOut = etld(t, "validate", "-c", bad)
	if code != 2 || out != "" {
		t.Fatalf("validate invalid file: exit %d, stdout %q; want 2 and nothing", code, out)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
		if !strings.Contains(l, ": warning: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], bad+":3:") || !strings.HasPrefix(lines[1], bad+":5:") {
		t.Fatalf("stderr = %q; want two problems, at lines 3 and 5", errOut)
	}
	if !strings.Contains(lines[0], `did you mean "generate"`) || !strings.Contains(lines[1], `did you mean "gen"`) {
		t.Fatalf("stderr lacks suggestions: %q", errOut)
	}
}

func TestGraphFormats(t *testing.T) {
	p := writePipeline(t, "demo.yaml", valid)
	code, out, _ := etld(t, "graph", "-c", p)
	if code != 0 || !strings.HasPrefix(out, "digraph") || !strings.Contains(out, `worker x2`) {
		t.Fatalf("graph dot: exit %d, out %q", code, out)
	}
	code, out, _ = etld(t, "graph", "-c", p, "--format", "mermaid")
	if code != 0 || !strings.HasPrefix(out, "flowchart") {
		t.Fatalf("graph mermaid: exit %d, out %q", code, out)
	}
	if code, _, errOut := etld(t, "graph", "-c", p, "--format", "svg"); code != 2 || !strings.Contains(errOut, "valid: dot, mermaid") {
		t.Fatalf("graph --format svg: exit %d, stderr %q", code, errOut)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	p := writePipeline(t, "demo.yaml", valid)
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"validate", "--nope"},
		{"validate", "-c", p, "extra"},
		{"run", "-c", p, "--log-level", "loud"},
		{"run", "-c", p, "--log-format", "xml"},
		{"run", "-c", p, "--shutdown-timeout", "0s"},
		{"run", "-c", writePipeline(t, "bad.yaml", "version: 2\n")},
	} {
		if code, _, _ := etld(t, args...); code != 2 {
			t.Errorf("etld %q: exit %d, want 2", args, code)
		}
	}
}

func TestVersionAndHelp(t *testing.T) {
	if code, out, _ := etld(t, "version"); code != 0 || !strings.HasPrefix(out, "etld ") {
		t.Fatalf("version: exit %d, out %q", code, out)
	}
	if code, out, _ := etld(t, "help"); code != 0 || !strings.Contains(out, "etld validate") {
		t.Fatalf("help: exit %d, out %q", code, out)
	}
}

func TestRunFinitePipelineExitsZero(t *testing.T) {
	dir := t.TempDir()
	p := writePipeline(t, "gen.yaml", `version: 1
sources:
  gen: {type: generate, count: 1000}
sinks:
  out: {type: file, inputs: [gen], path: out.jsonl}
`)
	code, _, errOut := etld(t, "run", "-c", p, "--state-dir", filepath.Join(dir, "state"), "--admin", "off")
	if code != 0 {
		t.Fatalf("run: exit %d\n%s", code, errOut)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(p), "out.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte("\n")); n != 1000 {
		t.Fatalf("output has %d lines, want 1000", n)
	}
}

func TestStateDirPrecedence(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/var/lib/etld:/var/lib/other")
	if got := stateDir("/flag"); got != "/flag" {
		t.Errorf("flag: got %q", got)
	}
	if got := stateDir(""); got != "/var/lib/etld" {
		t.Errorf("$STATE_DIRECTORY: got %q", got)
	}
	t.Setenv("STATE_DIRECTORY", "")
	if got := stateDir(""); got != ".etld-state" {
		t.Errorf("default: got %q", got)
	}
}

func TestNoTimestampUnderJournald(t *testing.T) {
	var b bytes.Buffer
	log, err := newLogger(&b, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info().Msg("x")
	if !strings.Contains(b.String(), `"time":`) {
		t.Fatalf("no timestamp outside journald: %s", b.String())
	}
	t.Setenv("JOURNAL_STREAM", "8:12345")
	b.Reset()
	log, _ = newLogger(&b, "info", "json")
	log.Info().Msg("x")
	if strings.Contains(b.String(), `"time":`) {
		t.Fatalf("timestamp under journald (it adds its own): %s", b.String())
	}
}
