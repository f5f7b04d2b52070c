package sources

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/fswatch"
)

// inotifyInstances counts this process's inotify file descriptors.
func inotifyInstances(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, "anon_inode:inotify") {
			n++
		}
	}
	return n
}

// TestFollowSharesOneInotifyInstance: following sources given the
// daemon's watcher add no inotify instance of their own (the per-user
// limit is 128 by default), and still see their files grow; given an
// inactive watcher (no inotify) they poll; given none, each opens its own.
func TestFollowSharesOneInotifyInstance(t *testing.T) {
	const n = 8
	shared, err := fswatch.New(testSettings(t).Logger)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	for _, c := range []struct {
		name string
		fsw  *fswatch.Watcher
		want int // inotify instances added by opening n sources
	}{
		{"shared", shared, 0},
		{"inactive", fswatch.Disabled(), 0},
		{"none", nil, n},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := inotifyInstances(t)
			srcs := make([]*FileSource, n)
			paths := make([]string, n)
			for i := range srcs {
				paths[i] = filepath.Join(t.TempDir(), "app.log")
				writeFile(t, paths[i], "")
				cfg := followConfig(paths[i])
				srcs[i] = openFile(t, cfg, func(s *FileSource) { s.settings.Watcher = c.fsw })
			}
			if got := inotifyInstances(t) - before; got != c.want {
				t.Errorf("%d following sources added %d inotify instances, want %d", n, got, c.want)
			}
			for i, src := range srcs {
				line := fmt.Sprintf("line of source %d", i)
				appendFile(t, paths[i], line+"\n")
				g := &got{}
				readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 1 })
				if g.lines[0] != line {
					t.Errorf("source %d read %q, want %q", i, g.lines, line)
				}
			}
		})
	}
}

// TestFollowLogsUnwatchableDir: a directory the shared watcher cannot
// watch (here: the watcher is closed; in production the inotify watch
// limit) is logged once, not silently left to polling; a directory that
// does not exist yet is not logged.
func TestFollowLogsUnwatchableDir(t *testing.T) {
	shared, err := fswatch.New(testSettings(t).Logger)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "app.log")
	writeFile(t, p, "")
	var logs bytes.Buffer
	src := openFile(t, followConfig(p), func(s *FileSource) {
		s.settings.Watcher = shared
		s.log = zerolog.New(&logs)
	})
	if err := shared.Close(); err != nil {
		t.Fatal(err)
	}
	const msg = "cannot watch the files' directory"
	src.mu.Lock()
	src.watch(filepath.Join(t.TempDir(), "not-yet"))
	src.mu.Unlock()
	if strings.Contains(logs.String(), msg) {
		t.Errorf("a missing directory was logged as unwatchable:\n%s", logs.String())
	}
	dir := t.TempDir()
	for range 2 {
		src.mu.Lock()
		src.watch(dir)
		src.mu.Unlock()
	}
	if n := strings.Count(logs.String(), msg); n != 1 {
		t.Errorf("an unwatchable directory was logged %d times, want once:\n%s", n, logs.String())
	}
}
