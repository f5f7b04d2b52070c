package e2e

import (
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// etldCmd runs a short etld command (test, plan) in dir and returns its
// exit code, stdout and stderr.
func etldCmd(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	p := startEtld(t, dir, nil, args...)
	code := p.wait()
	return code, p.stdout.String(), p.stderr.String()
}

// tree lists the files under dir with their sizes.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %d", strings.TrimPrefix(path, dir), fi.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTestExamples: the tests of examples/ pass, every one of them runs,
// and running them creates or changes no file (no output, no state).
func TestTestExamples(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(repoRoot, "examples"))); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "out")) // a local run's leftovers
	before := tree(t, dir)
	files, err := filepath.Glob(filepath.Join(dir, "*.test.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no test files in examples/: %v", err)
	}
	tests := 0
	for _, f := range files {
		tests += strings.Count(string(readFile(t, f)), "\n  - name: ")
	}
	code, stdout, stderr := etldCmd(t, dir, "test", "-c", ".")
	if code != 0 {
		t.Fatalf("etld test -c examples: exit %d\n%s%s", code, stdout, stderr)
	}
	oks := regexp.MustCompile(`(?m)^ok   \S+\.test\.yaml:\d+: `).FindAllString(stdout, -1)
	if len(oks) != tests || !strings.Contains(stdout, fmt.Sprintf("ok: %d tests passed in %d files", tests, len(files))) {
		t.Errorf("want %d tests ok in %d files, got %d ok lines:\n%s", tests, len(files), len(oks), stdout)
	}
	if after := tree(t, dir); !slices.Equal(before, after) {
		t.Errorf("etld test changed the files:\nbefore %v\nafter  %v", before, after)
	}
}

const authoringPipeline = `version: 1
dead_letter: rejects
sources:
  in: { type: file, path: in.log }
workers:
  w: { inputs: [in], steps: [ parse_json: {}, eval: { double: 'n * 2' } ] }
sinks:
  out: { type: file, inputs: [w], path: out.jsonl }
  rejects: { type: file, path: rejects.jsonl }
`

// TestTestFailureShowsTheDiff: a failing test prints FAIL, the sink and
// a line diff, exits 1; the passing one in the same file prints ok.
func TestTestFailureShowsTheDiff(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, "p.yaml", authoringPipeline)
	writeFile(t, dir, "p.test.yaml", []byte(`pipeline: p.yaml
tests:
  - name: doubles
    input:
      in: ['{"n":1}', '{"n":2}']
    expect:
      out: ['{"double":2,"n":1}', '{"n":2,"double":4}']
      rejects: []
  - name: wrong expectation
    input:
      in: ['{"n":1}', 'oops']
    expect:
      out: ['{"n":1,"double":3}']
      rejects: []
`))
	code, stdout, stderr := etldCmd(t, dir, "test", "-c", "p.yaml")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, stdout, stderr)
	}
	want := `ok   p.test.yaml:3: doubles
FAIL p.test.yaml:9: wrong expectation
    sink out: 1 line missing, 1 line not expected (-want +got):
      - {"n":1,"double":3}
      + {"n":1,"double":2}
    sink rejects: 0 lines missing, 1 line not expected (-want +got):
      + {"error":"invalid JSON: want an object, got character 'o' at offset 0","stage":"w","source":"in","origin":"in:8","record":"oops"}
FAIL: 1 of 2 tests failed`
	if !strings.HasPrefix(stdout, want) {
		t.Errorf("stdout:\n%s\nwant it to start with:\n%s", stdout, want)
	}
	for _, f := range []string{"in.log", "out.jsonl", "rejects.jsonl", ".etld-state"} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("etld test touched %s", f)
		}
	}
}

// TestTestInvalidFiles: a test file or a pipeline with errors exits 2
// with FILE:LINE:COL on stderr.
func TestTestInvalidFiles(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, "p.yaml", authoringPipeline)
	writeConfig(t, dir, "bad.yaml", strings.Replace(authoringPipeline, "parse_json: {}", "parse_jsn: {}", 1))
	writeFile(t, dir, "t.test.yaml", []byte(`pipeline: p.yaml
tests:
  - name: unknown sink
    input: { in: [] }
    expect: { outt: [] }
`))
	writeFile(t, dir, "bad.test.yaml", []byte("pipeline: bad.yaml\ntests:\n  - { name: x, input: {}, expect: { out: [] } }\n"))
	code, stdout, stderr := etldCmd(t, dir, "test", "t.test.yaml", "bad.test.yaml")
	if code != 2 {
		t.Fatalf("exit %d, want 2\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"t.test.yaml:5:15: expect: \"outt\" is not a stage of pipeline p.yaml (sinks: out, rejects)\n",
		"bad.yaml:6:31: workers.w.steps[0]: unknown step type \"parse_jsn\" (did you mean \"parse_json\"?)\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(stdout, "FAIL: 2 test files invalid") {
		t.Errorf("stdout:\n%s", stdout)
	}
}

// planPipeline follows a.log and b.log into out.jsonl.
const planPipeline = `version: 1
sources:
  a: { type: file, path: a.log }
  b: { type: file, path: b.log }
workers:
  w: { inputs: [a, b], steps: [ parse_json: {} ] }
sinks:
  out: { type: file, inputs: [w], path: out.jsonl }
`

// TestPlan: etld plan shows what a reload of a new version would do
// (a renamed source resets its checkpoint), the problems of an invalid
// file, and changes nothing: the daemon reads on with its config, and
// every line is written once.
func TestPlan(t *testing.T) {
	dir := t.TempDir()
	cfgDir := filepath.Join(dir, "pipelines")
	writeConfig(t, cfgDir, "p.yaml", planPipeline)
	a := writeFile(t, cfgDir, "a.log", []byte("{\"k\":\"a-1\"}\n"))
	writeFile(t, cfgDir, "b.log", []byte("{\"k\":\"b-1\"}\n"))
	out := filepath.Join(cfgDir, "out.jsonl")
	p := startEtld(t, dir, nil, "run", "-c", cfgDir, "--state-dir", filepath.Join(dir, "state"), "--admin", "127.0.0.1:0", "--no-watch")
	addr := rlAdminAddr(p)
	p.eventually("2 lines out", func() bool { return strings.Count(string(readFile(t, out)), "\n") == 2 })

	// The next version, elsewhere: source a renamed a2, a sink added.
	next := filepath.Join(dir, "next")
	writeConfig(t, next, "p.yaml", strings.NewReplacer("  a: {", "  a2: {", "[a, b]", "[a2, b]").Replace(planPipeline)+
		"  copy: { type: file, inputs: [w], path: copy.jsonl }\n")
	code, stdout, stderr := etldCmd(t, dir, "plan", "-c", "next", "--admin", addr)
	if code != 0 {
		t.Fatalf("etld plan: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"pipeline p: reconfigured\n",
		"  keep     source b\n",
		"  keep     sink out\n",
		"  replace  worker w: its inputs changed ([a b] -> [a2 b])\n",
		"  add      source a2: new in the config\n",
		"  add      sink copy: new in the config\n",
		"  remove   source a: not in the new config\n",
		"  checkpoint reset source a2: renamed from \"a\"",
		"  checkpoint keep  source b: keeps running\n",
		"  checkpoint drop  source a: removed",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, stdout)
		}
	}

	// Its own config: nothing to do.
	code, stdout, _ = etldCmd(t, dir, "plan", "--admin", addr)
	if code != 0 || stdout != "pipeline p: unchanged\n" {
		t.Errorf("plan of the running config: exit %d\n%s", code, stdout)
	}

	// An invalid file: its problems at FILE:LINE:COL, as given.
	writeConfig(t, next, "q.yaml", "version: 1\nsources:\n  x: { type: fiel, path: x.log }\nsinks:\n  o: { type: stdout, inputs: [x] }\n")
	code, stdout, stderr = etldCmd(t, dir, "plan", "-c", "next/", "--admin", addr)
	if code != 2 || !strings.Contains(stderr, "next/q.yaml:3:14: sources.x.type: unknown source type \"fiel\"") ||
		!strings.Contains(stdout, "pipeline q: invalid") || !strings.Contains(stdout, "pipeline p: reconfigured") {
		t.Errorf("plan of an invalid file: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	// Nothing changed: the running stages are those of the first config,
	// a keeps its position (a2 would read a.log again) and no copy is made.
	var stages []string
	for _, st := range rlStages(t, addr, "p") {
		stages = append(stages, st.ID)
	}
	slices.Sort(stages)
	if !slices.Equal(stages, []string{"a", "b", "out", "w"}) {
		t.Errorf("stages after plan: %v", stages)
	}
	appendFile(t, a, []byte("{\"k\":\"a-2\"}\n"))
	p.eventually("3 lines out", func() bool { return strings.Count(string(readFile(t, out)), "\n") == 3 })
	p.expectExit(p.stop(), 0, "stop")
	lines := strings.Split(strings.TrimSuffix(string(readFile(t, out)), "\n"), "\n")
	slices.Sort(lines)
	if want := []string{`{"k":"a-1"}`, `{"k":"a-2"}`, `{"k":"b-1"}`}; !slices.Equal(lines, want) {
		t.Errorf("output %q, want each line once: %q", lines, want)
	}
	if _, err := os.Stat(filepath.Join(cfgDir, "copy.jsonl")); !os.IsNotExist(err) {
		t.Error("the planned sink was created")
	}
}

// TestPlanNeedsTheTokenOffLoopback: on a non-loopback admin address the
// plan needs --admin-token-file; /metrics does not.
func TestPlanNeedsTheTokenOffLoopback(t *testing.T) {
	ip := ""
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				ip = ipn.IP.String()
				break
			}
		}
	}
	if ip == "" {
		t.Skip("this host has no non-loopback IPv4 address")
	}
	dir := t.TempDir()
	writeConfig(t, dir, "p.yaml", planPipeline)
	writeFile(t, dir, "a.log", nil)
	writeFile(t, dir, "b.log", nil)
	tok := writeFile(t, dir, "token", []byte("s3cret\n"))
	wrong := writeFile(t, dir, "wrong", []byte("s3cre7\n"))
	p := startEtld(t, dir, nil, "run", "-c", "p.yaml", "--state-dir", "state", "--admin", ip+":0", "--admin-token-file", tok, "--no-watch")
	addr := rlAdminAddr(p)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/metrics off loopback: %d", resp.StatusCode)
	}
	code, _, stderr := etldCmd(t, dir, "plan", "--admin", addr)
	if code != 1 || !strings.Contains(stderr, "401 Unauthorized") {
		t.Errorf("plan without the token: exit %d\n%s", code, stderr)
	}
	code, _, stderr = etldCmd(t, dir, "plan", "--admin", addr, "--admin-token-file", wrong)
	if code != 1 || !strings.Contains(stderr, "401 Unauthorized") {
		t.Errorf("plan with a wrong token: exit %d\n%s", code, stderr)
	}
	code, stdout, stderr := etldCmd(t, dir, "plan", "--admin", addr, "--admin-token-file", tok)
	if code != 0 || stdout != "pipeline p: unchanged\n" {
		t.Errorf("plan with the token: exit %d\n%s%s", code, stdout, stderr)
	}
	p.expectExit(p.stop(), 0, "stop")
}

// TestAuthoringExitCodes: the remaining exit codes and messages of test
// and plan.
func TestAuthoringExitCodes(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, "p.yaml", authoringPipeline)
	for _, c := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"test", "-c", "p.yaml"}, 0, "p.yaml: no test files (*.test.yaml)\n", ""},
		{[]string{"test", "-c", "nope"}, 2, "", "etld test: stat nope: no such file or directory\n"},
		{[]string{"test", "--timeout", "0s", "-c", "."}, 2, "", "etld test: --timeout must be positive, got 0s\n"},
		{[]string{"plan", "--admin", "127.0.0.1:1"}, 1, "", "etld plan: cannot reach etld: "},
		{[]string{"plan", "--admin-token-file", "missing"}, 2, "", "etld plan: admin token file: open missing: no such file or directory\n"},
		{[]string{"plan", "extra"}, 2, "", "etld plan: unexpected argument \"extra\"\n"},
	} {
		code, stdout, stderr := etldCmd(t, dir, c.args...)
		if code != c.code || stdout != c.stdout || !strings.HasPrefix(stderr, c.stderr) {
			t.Errorf("etld %s: exit %d, stdout %q, stderr %q; want %d, %q, %q...", strings.Join(c.args, " "), code, stdout, stderr, c.code, c.stdout, c.stderr)
		}
	}
}
