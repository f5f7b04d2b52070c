package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestStartFailureExit1: a sink that cannot be opened at start is a
// runtime failure: exit 1, with the pipeline name and the stage id in the
// logged error, and nothing is read.
func TestStartFailureExit1(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) // makes out/sink.jsonl unusable
	}{
		{"path is a directory", func(t *testing.T, dir string) {
			if err := os.MkdirAll(filepath.Join(dir, "out", "sink.jsonl"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"parent is a regular file", func(t *testing.T, dir string) {
			writeFile(t, dir, "out", []byte("not a directory\n"))
		}},
		{"parent is not writable", func(t *testing.T, dir string) {
			if os.Geteuid() == 0 {
				t.Skip("root ignores directory permissions")
			}
			if err := os.MkdirAll(filepath.Join(dir, "out"), 0o555); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = os.Chmod(filepath.Join(dir, "out"), 0o755) })
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tc.setup(t, dir)
			in, _ := feed("in", 0, 100)
			writeFile(t, dir, "in/in.jsonl", in)
			cfg := writeConfig(t, dir, "orders-pipe.yaml", `version: 1
sources:
  reader: { type: file, path: in/in.jsonl, follow: false }
sinks:
  broken_sink: { type: file, inputs: [reader], path: out/sink.jsonl }
`)
			state := filepath.Join(dir, "state")
			p := startEtld(t, dir, nil, runArgs(cfg, state)...)
			p.expectExit(p.wait(), 1, "sink that cannot be opened")
			if !errorLogged(p.stderr.String(), `pipeline "orders-pipe"`, `stage "broken_sink"`) {
				t.Errorf("no error log names the pipeline and the stage (want `pipeline \"orders-pipe\"` and `stage \"broken_sink\"`)")
			}
			if b, err := os.ReadFile(filepath.Join(state, "orders-pipe.json")); err == nil {
				t.Errorf("a checkpoint was saved although nothing ran: %s", b)
			}
		})
	}
}

// errorLogged reports whether one JSON log line of level error mentions
// every one of subs in its message or error.
func errorLogged(stderr string, subs ...string) bool {
	for _, line := range strings.Split(stderr, "\n") {
		var e struct {
			Level   string `json:"level"`
			Message string `json:"message"`
			Error   string `json:"error"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.Level != "error" {
			continue
		}
		all := true
		for _, s := range subs {
			all = all && strings.Contains(e.Message+" "+e.Error, s)
		}
		if all {
			return true
		}
	}
	return false
}

// TestInvalidConfigExit2: an invalid config stops `run` before anything
// starts: exit 2, every problem on stderr as FILE:LINE:COL: message, with
// FILE as given on the command line. `validate` says the same.
func TestInvalidConfigExit2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, "in/in.jsonl", []byte(`{"key":"a"}`+"\n"))
	cfg := writeConfig(t, dir, "bad.yaml", `version: 1
sources:
  reader:
    type: file
    pathh: in/in.jsonl
sinks:
  out:
    type: file
    inputs: [reader, nosuch]
    path: out/out.jsonl
`)
	// line 5 col 5: the unknown option; line 9 col 22: the unknown input.
	wantPos := []string{cfg + ":5:5: ", cfg + ":9:22: "}
	for _, cmd := range []string{"run", "validate"} {
		t.Run(cmd, func(t *testing.T) {
			args := []string{"validate", "-c", cfg}
			if cmd == "run" {
				args = runArgs(cfg, filepath.Join(dir, "state"))
			}
			p := startEtld(t, dir, nil, args...)
			p.expectExit(p.wait(), 2, "invalid config")
			stderr := p.stderr.String()
			for _, pos := range wantPos {
				if !hasLinePrefix(stderr, pos) {
					t.Errorf("stderr has no line starting with %q:\n%s", pos, stderr)
				}
			}
			if !regexp.MustCompile(`(?m):5:5: .*pathh`).MatchString(stderr) {
				t.Errorf("the unknown option is not named in its message:\n%s", stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, "out")); err == nil {
				t.Errorf("%s created the output although the config is invalid", cmd)
			}
		})
	}
}

func hasLinePrefix(s, prefix string) bool {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// TestValidateExamples: every example pipeline of the repository is
// valid: `etld validate -c examples/` run from the repository root exits
// 0 with its one-line summary on stdout.
func TestValidateExamples(t *testing.T) {
	t.Parallel()
	if fi, err := os.Stat(filepath.Join(repoRoot, "examples")); err != nil || !fi.IsDir() {
		t.Skip("no examples/ directory yet")
	}
	p := startEtld(t, repoRoot, nil, "validate", "-c", "examples/")
	p.expectExit(p.wait(), 0, "validate examples/")
	if out := p.stdout.String(); !strings.HasPrefix(out, "examples/: ok: ") || strings.Count(out, "\n") != 1 {
		t.Errorf("stdout = %q, want one line starting with %q", out, "examples/: ok: ")
	}
}

// TestBusyAdminAddress: a busy --admin address is a start-up error: exit
// 1 with the address in the message, and no pipeline runs.
func TestBusyAdminAddress(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "admin.yaml", `version: 1
sources:
  gen: { type: generate, count: 10 }
sinks:
  out: { type: file, inputs: [gen], path: out/out.jsonl }
`)
	args := []string{"run", "-c", cfg, "--state-dir", filepath.Join(dir, "state"), "--admin", addr, "--log-format", "json"}
	p := startEtld(t, dir, nil, args...)
	p.expectExit(p.wait(), 1, "busy admin address")
	if !errorLogged(p.stderr.String(), addr) {
		t.Errorf("no error log names the address %s", addr)
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "out.jsonl")); err == nil {
		t.Errorf("the pipeline ran although etld could not start")
	}
}

// TestStateDirInUse: a second etld on the same state dir would roll back
// the first one's output at its next start; it refuses to start instead
// (exit 1, naming the dir and the owner), and the first one runs on. Once
// the first is gone (even by kill -9), the dir is free again.
func TestStateDirInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "live.yaml", `version: 1
sources:
  gen: { type: generate, interval: 10ms }
sinks:
  out: { type: file, inputs: [gen], path: out/out.jsonl, fsync: batch }
`)
	state := filepath.Join(dir, "state")
	args := []string{"run", "-c", cfg, "--state-dir", state, "--admin", "off", "--log-format", "json"}
	first := startEtld(t, dir, nil, args...)
	first.eventually("the first etld runs", func() bool { return first.logged("pipeline started") })

	second := startEtld(t, dir, nil, args...)
	second.expectExit(second.wait(), 1, "a second etld on the same state dir")
	if !errorLogged(second.stderr.String(), state, "in use by another etld", fmt.Sprintf("pid %d", first.cmd.Process.Pid)) {
		t.Errorf("no error log names the state dir and the owner:\n%s", second.stderr.String())
	}
	if first.exited() {
		t.Fatalf("the first etld stopped")
	}
	first.kill()
	third := startEtld(t, dir, nil, args...)
	third.eventually("the third etld writes after the first was killed", func() bool { return third.logged("pipeline started") })
	third.expectExit(third.stop(), 0, "the third etld")
}
