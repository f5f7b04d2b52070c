package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// What etld watches (issue 12): only pipeline files cause a reload check,
// polling takes over when inotify is not available, and the whole daemon
// uses one inotify instance.

// TestWatchIgnoresWritesNextToConfig: the input, the output and the state
// dir live next to the pipeline file, and a writer keeps them busy.
// Their writes cause no reload check (before the fix every write made one,
// each overwriting last_reload); a real edit is still picked up, and it is
// the only reload. Writes are proved by the records that come out, not by
// waiting for some time.
func TestWatchIgnoresWritesNextToConfig(t *testing.T) {
	t.Parallel()
	for _, k := range []struct {
		name  string
		dir   bool // config path is a directory
		extra []string
		mode  string // config_watch in /api/pipelines
	}{
		{name: "file", mode: "inotify"},
		{name: "directory", dir: true, mode: "inotify"},
		{name: "directory, polling", dir: true, extra: []string{"--watch", "poll"}, mode: "poll"},
	} {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			in, out := filepath.Join(dir, "app.log"), filepath.Join(dir, "out.jsonl")
			cfg := writeConfig(t, dir, "p.yaml", rlConfig(in, out, "v1"))
			path := cfg
			if k.dir {
				path = dir
			}
			// A short debounce: before the fix, a write next to the
			// config made a reload check within 100 ms.
			args := append([]string{"--state-dir", dir, "--reload-debounce", "10ms"}, k.extra...)
			r := rlStartRun(t, dir, path, in, out, args...)
			if got := watchMode(t, r.addr); got != k.mode {
				t.Errorf("/api/pipelines config_watch = %q, want %q", got, k.mode)
			}
			// 2000 more records (a second at the writer's rate; five
			// checkpoints) written, read and written out.
			r.awaitSeq(r.w.n() + rlRate)
			if n := rlCount(r.p, "config reloaded"); n != 0 {
				t.Fatalf("writes next to the config caused %d reload checks, want none: %v", n, rlLogged(r.p, "config reloaded"))
			}

			rlSaveRename(t, cfg, rlConfig(in, out, "v2"))
			rlAwaitCount(r.p, "pipeline reconfigured in place", 0)
			after := r.w.n()
			r.awaitSeq(after + rlRate)
			if n := rlCount(r.p, "config reloaded"); n != 1 {
				t.Errorf("logged %q %d times, want 1 (the edit): %v", "config reloaded", n, rlLogged(r.p, "config reloaded"))
			}

			total := r.finish()
			checkExactlyOnce(t, "output", r.w.keys(total), r.o.keys())
			rlCheckSwitch(t, "output", r.o.poll(), "v1", "v2", after)
			r.checkInPlace(1)
		})
	}
}

// watchMode returns config_watch from /api/pipelines.
func watchMode(t testing.TB, addr string) string {
	t.Helper()
	var v struct {
		ConfigWatch string `json:"config_watch"`
	}
	rlAPIPipelines(t, addr, &v)
	return v.ConfigWatch
}

// TestWatchManyPipelines: a directory of 200 pipelines, each following its
// own file, starts and moves a line through each, and hot reload still
// works. The daemon uses one inotify instance for all of them and the
// config (before, one per source: 200 is past the default per-user limit
// of 128, and the config watcher, created last, silently got none).
func TestWatchManyPipelines(t *testing.T) {
	t.Parallel()
	const n = 200
	dir := t.TempDir()
	conf := filepath.Join(dir, "pipelines")
	pipeline := func(i int, version string) string {
		return fmt.Sprintf(`version: 1
sources:
  app: { type: file, path: %q, follow: true }
workers:
  w:
    inputs: [app]
    concurrency: 1
    steps:
      - parse_json: {}
      - set: { version: %q }
sinks:
  out: { type: file, inputs: [w], path: %q }
`, filepath.Join(dir, "in", strconv.Itoa(i)+".log"), version, filepath.Join(dir, "out", strconv.Itoa(i)+".jsonl"))
	}
	for i := range n {
		writeConfig(t, conf, fmt.Sprintf("p%03d.yaml", i), pipeline(i, "v1"))
		writeFile(t, dir, filepath.Join("in", strconv.Itoa(i)+".log"), nil)
	}
	p := startEtld(t, dir, nil, runArgs(conf, filepath.Join(dir, "state"), "--admin", "127.0.0.1:0")...)
	p.eventually(func() string { return fmt.Sprintf("%d pipelines started, want %d", rlCount(p, "pipeline started"), n) },
		func() bool { return rlCount(p, "pipeline started") == n })
	addr := rlAdminAddr(p)
	for i := range n {
		line, _ := feed("f"+strconv.Itoa(i), 0, 1)
		appendFile(t, filepath.Join(dir, "in", strconv.Itoa(i)+".log"), line)
	}
	for i := range n {
		out := rlFollow(t, filepath.Join(dir, "out", strconv.Itoa(i)+".jsonl"))
		p.eventually(func() string { return fmt.Sprintf("pipeline %d's line in its output; %s", i, out.describe()) },
			func() bool { return len(out.poll()) == 1 })
	}
	if got := inotifyInstances(t, p.cmd.Process.Pid); got != 1 {
		t.Errorf("etld holds %d inotify instances, want 1 (shared by the config watcher and every file source)", got)
	}
	if got := watchMode(t, addr); got != "inotify" {
		t.Errorf("/api/pipelines config_watch = %q, want inotify", got)
	}
	if rlCount(p, "cannot watch the files' directory; polling it") != 0 {
		t.Errorf("a file source could not watch its directory: %v", rlLogged(p, "cannot watch the files' directory; polling it"))
	}

	// Hot reload works: an edit of one pipeline is applied.
	rlSaveRename(t, filepath.Join(conf, "p007.yaml"), pipeline(7, "v2"))
	rlAwaitCount(p, "pipeline reconfigured in place", 0)
	line, _ := feed("f7", 1, 1)
	appendFile(t, filepath.Join(dir, "in", "7.log"), line)
	out := rlFollow(t, filepath.Join(dir, "out", "7.jsonl"))
	p.eventually(func() string { return "the line written after the edit, with v2; " + out.describe() }, func() bool {
		recs := out.poll()
		return len(recs) == 2 && recs[1].Version == "v2"
	})
	p.expectExit(p.stop(), 0, "SIGTERM")
}

// inotifyInstances counts the inotify file descriptors of process pid.
func inotifyInstances(t testing.TB, pid int) int {
	t.Helper()
	fds := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(fds)
	if err != nil {
		t.Fatalf("list the fds of etld: %v", err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join(fds, e.Name())); err == nil && strings.HasPrefix(target, "anon_inode:inotify") {
			n++
		}
	}
	return n
}
