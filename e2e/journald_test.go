package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/etld/etld/internal/stages/journald/journaltest"
)

// The journald source on real journal files (written by
// systemd-journal-remote, see journaltest): etld follows a journal
// directory while the test appends entries to it.

// journaldConfig is a pipeline reading the journal in jdir (options:
// more lines of the source) into out.jsonl, with frequent checkpoints.
func journaldConfig(jdir, options string) string {
	return fmt.Sprintf(`version: 1
checkpoint_interval: 100ms
sources:
  journal:
    type: journald
    directory: %s
%s
sinks:
  out:
    type: file
    inputs: [journal]
    path: out.jsonl
`, jdir, indentLines(options, "    "))
}

func indentLines(s, pfx string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString(pfx + line)
	}
	return b.String()
}

// journalKeys returns the keys (journaltest.Key) of the entries in the
// output file at path; a line that is not an entry fails the test.
func journalKeys(t testing.TB, path string) []string {
	t.Helper()
	var keys []string
	for i, line := range splitLines(t, filepath.Base(path), readFile(t, path)) {
		e, err := journaltest.Parse(line)
		if err != nil || e.Cursor == "" {
			t.Fatalf("%s:%d: not a journal entry (%v): %.200s", path, i+1, err, line)
		}
		keys = append(keys, journaltest.Key(e))
	}
	return keys
}

// Following a journal that grows, with a kill -9 in the middle and
// entries appended while etld is down: after the restart every entry is
// in the output exactly once. The journalctl of the killed etld does not
// outlive it.
func TestJournaldKill9ExactlyOnce(t *testing.T) {
	remote := journaltest.Remote(t)
	real, err := exec.LookPath("journalctl")
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	jfile := filepath.Join(dir, "journal", "test.journal")
	pids := filepath.Join(dir, "journalctl.pids")
	// journalctl itself, noting its pid.
	writeFile(t, dir, "journalctl", []byte("#!/bin/sh\necho $$ >> "+pids+"\nexec "+real+` "$@"`+"\n"))
	if err := os.Chmod(filepath.Join(dir, "journalctl"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, "journal.yaml", journaldConfig("journal", "journalctl_path: ./journalctl"))
	out, state := filepath.Join(dir, "out.jsonl"), filepath.Join(dir, "state")
	const round = 500
	next := 0
	add := func() {
		journaltest.Append(t, remote, jfile, journaltest.Boot1, next, round)
		next += round
	}
	lines := (&lineCounter{path: out}).count

	add()
	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.eventually("the first entries in out.jsonl", func() bool { return lines() > 0 })
	for range 4 {
		add()
	}
	p.eventually("most entries in out.jsonl", func() bool { return lines() >= next-round })
	add() // being read while etld is killed
	p.kill()
	killed := lines()
	first := readPids(t, pids)
	eventually(t, waitTimeout, func() bool { return gone(first[0]) }, "the killed etld's journalctl to exit")
	add()
	add() // while etld is down

	p = startEtld(t, dir, nil, runArgs(cfg, state)...)
	add()
	want := journaltest.Keys(journaltest.Boot1, 0, next)
	p.eventually(func() string { return fmt.Sprintf("%d entries in out.jsonl, have %d", next, lines()) },
		func() bool { return lines() >= next })
	p.expectExit(p.stop(), 0, "SIGTERM")
	checkExactlyOnce(t, "journald across kill -9", want, journalKeys(t, out))
	t.Logf("%d entries, %d in the output when etld was killed", next, killed)
}

// readPids reads the pids the journalctl wrapper noted.
func readPids(t testing.TB, path string) []int {
	t.Helper()
	var pids []int
	for _, f := range strings.Fields(string(readFile(t, path))) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		pids = append(pids, n)
	}
	if len(pids) == 0 {
		t.Fatalf("%s: no journalctl started", path)
	}
	return pids
}

// gone reports whether process pid has exited (a zombie nobody reaped
// counts: it runs no more).
func gone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || strings.HasPrefix(string(stat[i+1:]), " Z") || strings.HasPrefix(string(stat[i+1:]), " X")
}

// A journal with two boots: current_boot_only (the default) reads the
// last boot, false reads both, in order, each entry once.
func TestJournaldTwoBoots(t *testing.T) {
	remote := journaltest.Remote(t)
	for _, tc := range []struct {
		name    string
		options string
		want    []string
	}{
		{"current_boot_only", "", journaltest.Keys(journaltest.Boot2, 100, 150)},
		{"all_boots", "current_boot_only: false", append(journaltest.Keys(journaltest.Boot1, 0, 100), journaltest.Keys(journaltest.Boot2, 100, 150)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			jfile := filepath.Join(dir, "journal", "test.journal")
			journaltest.Append(t, remote, jfile, journaltest.Boot1, 0, 100)
			journaltest.Append(t, remote, jfile, journaltest.Boot2, 100, 100)
			cfg := writeConfig(t, dir, "journal.yaml", journaldConfig("journal", tc.options))
			out := filepath.Join(dir, "out.jsonl")
			p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
			journaltest.Append(t, remote, jfile, journaltest.Boot2, 200, 50) // while following
			p.eventually(fmt.Sprintf("%d entries in out.jsonl", len(tc.want)), func() bool {
				return (&lineCounter{path: out}).count() >= len(tc.want)
			})
			p.expectExit(p.stop(), 0, "SIGTERM")
			got := journalKeys(t, out)
			checkExactlyOnce(t, tc.name, tc.want, got)
			if len(got) == len(tc.want) {
				for i := range got {
					if got[i] != tc.want[i] {
						t.Errorf("entry %d is %s, want %s: out of journal order", i, got[i], tc.want[i])
						break
					}
				}
			}
		})
	}
}

// journalctl missing, then exiting with an error, keeps etld running but
// not ready, with journalctl's reason in /readyz and /api/pipelines; once
// journalctl works, entries flow and etld is ready again.
func TestJournaldUnhealthyThenRecovers(t *testing.T) {
	remote := journaltest.Remote(t)
	real, err := exec.LookPath("journalctl")
	if err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	journaltest.Append(t, remote, filepath.Join(dir, "journal", "test.journal"), journaltest.Boot1, 0, 20)
	bin := filepath.Join(dir, "bin", "journalctl")
	cfg := writeConfig(t, dir, "journal.yaml", journaldConfig("journal", "journalctl_path: bin/journalctl"))
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"), "--admin", "127.0.0.1:0")...)
	addr := rlAdminAddr(p)

	readyz := func() (int, string) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	problem := func() string {
		var v struct {
			Pipelines []struct {
				Stages []struct {
					ID      string `json:"id"`
					Healthy bool   `json:"healthy"`
					Problem string `json:"problem"`
				} `json:"stages"`
			} `json:"pipelines"`
		}
		rlAPIPipelines(t, addr, &v)
		for _, pl := range v.Pipelines {
			for _, s := range pl.Stages {
				if s.ID == "journal" && !s.Healthy {
					return s.Problem
				}
			}
		}
		return ""
	}
	unhealthy := func(why string) {
		t.Helper()
		var code int
		var body string
		p.eventually(func() string { return fmt.Sprintf("/readyz 503 naming %q; got %d %q", why, code, body) }, func() bool {
			code, body = readyz()
			return code == http.StatusServiceUnavailable && strings.Contains(body, why)
		})
		if pr := problem(); !strings.Contains(pr, why) {
			t.Errorf("/api/pipelines: stage journal's problem is %q, want it to name %q", pr, why)
		}
	}
	install := func(script string) { // a rename: never a half-written file
		t.Helper()
		writeFile(t, dir, "bin/journalctl.new", []byte("#!/bin/sh\n"+script))
		if err := os.Chmod(bin+".new", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(bin+".new", bin); err != nil {
			t.Fatal(err)
		}
	}

	unhealthy("start journalctl") // missing
	install("echo 'journalctl: cannot read the journal' >&2\nexit 3\n")
	unhealthy("exit status 3: journalctl: cannot read the journal")
	install("exec " + real + ` "$@"` + "\n")
	out := filepath.Join(dir, "out.jsonl")
	p.eventually("20 entries in out.jsonl", func() bool { return (&lineCounter{path: out}).count() >= 20 })
	p.eventually("/readyz 200 once journalctl works", func() bool { code, _ := readyz(); return code == http.StatusOK })
	if pr := problem(); pr != "" {
		t.Errorf("/api/pipelines: stage journal still unhealthy: %q", pr)
	}
	p.expectExit(p.stop(), 0, "SIGTERM")
	checkExactlyOnce(t, "journald after recovering", journaltest.Keys(journaltest.Boot1, 0, 20), journalKeys(t, out))
}
