package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/admin"
	"github.com/etld/etld/internal/fswatch"
)

// TestWatchFallsBackToPolling: when no inotify instance can be had (the
// per-user limit: inotify_init fails with EMFILE), the config is polled,
// the mode says so, and an edit is still reported.
func TestWatchFallsBackToPolling(t *testing.T) {
	p := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(p, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	log := zerolog.New(&logs)
	fail := func(log zerolog.Logger) (*fswatch.Watcher, error) {
		return fswatch.NewWith(func() (*fsnotify.Watcher, error) { return nil, syscall.EMFILE }, log)
	}
	fs, cw, mode := openWatchers(p, runFlags{watchMode: watchAuto, reloadDebounce: time.Millisecond}, fail, log)
	defer fs.Close()
	if cw == nil {
		t.Fatal("no config watcher")
	}
	defer cw.Close()
	if mode != "poll" || fs.Active() {
		t.Fatalf("mode %q, shared watcher active %v; want poll and inactive", mode, fs.Active())
	}
	if !strings.Contains(logs.String(), `"level":"warn"`) || !strings.Contains(logs.String(), "too many open files") {
		t.Errorf("the fallback is not logged as a warning with its cause:\n%s", logs.String())
	}
	if err := os.WriteFile(p, []byte("v2, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cw.C:
	case <-time.After(20 * time.Second):
		t.Fatal("an edit was not reported while polling")
	}

	_, cw2, mode := openWatchers(p, runFlags{watchMode: watchAuto, noWatch: true}, fail, log)
	if cw2 != nil || mode != "off" {
		t.Errorf("--no-watch: watcher %v, mode %q; want none and off", cw2, mode)
	}
}

// TestStatusShowsConfigWatch: etld status prints how the config is watched.
func TestStatusShowsConfigWatch(t *testing.T) {
	snap := snapshotAt(0, 1)
	snap.ConfigWatch = "poll"
	srv := fakeAdmin(t, []admin.Snapshot{snap}, nil)
	code, out, _ := etld(t, "status", "--admin", srv.URL)
	if code != 0 || !strings.Contains(out, "\nconfig watch: poll\n") {
		t.Errorf("status: exit %d, output lacks the line %q:\n%s", code, "config watch: poll", out)
	}
}

func TestUnknownWatchModeExits2(t *testing.T) {
	code, _, errOut := etld(t, "run", "--watch", "fanotify", "-c", t.TempDir())
	if code != exitUsage || !strings.Contains(errOut, `unknown --watch "fanotify" (valid: auto, fsnotify, poll)`) {
		t.Errorf("exit %d, stderr %q; want 2 and the valid values", code, errOut)
	}
}
