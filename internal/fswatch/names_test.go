package fswatch

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// takeUntil collects TakeNames results until every name in want was seen.
func takeUntil(t *testing.T, s *Sub, want ...string) map[string]fsnotify.Op {
	t.Helper()
	got := map[string]fsnotify.Op{}
	deadline := time.After(wait)
	for {
		missing := false
		for _, n := range want {
			missing = missing || got[n] == 0
		}
		if !missing {
			return got
		}
		select {
		case <-s.C():
			_, names, all := s.TakeNames()
			if all {
				t.Fatal("TakeNames said everything changed; want names")
			}
			for n, op := range names {
				got[n] |= op
			}
		case <-deadline:
			t.Fatalf("names seen %v, want %v", got, want)
		}
	}
}

// TestNamesOfChangedFiles: a SubscribeNames subscriber learns which files
// changed, under the directory name it added (a symlink's name included),
// and only those.
func TestNamesOfChangedFiles(t *testing.T) {
	w := newWatcher(t)
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	touch(t, filepath.Join(real, "a"))
	touch(t, filepath.Join(real, "b"))
	s := w.SubscribeNames(nil)
	defer s.Close()
	if err := s.Add(link); err != nil {
		t.Fatal(err)
	}
	touch(t, filepath.Join(real, "b"))
	got := takeUntil(t, s, filepath.Join(link, "b"))
	if got[filepath.Join(link, "b")]&fsnotify.Write == 0 {
		t.Fatalf("names %v: want a write of b", got)
	}
	if _, ok := got[filepath.Join(link, "a")]; ok {
		t.Fatalf("names %v: a did not change", got)
	}
}

// TestNamesLostMeansAll: after lost events (a watcher error) TakeNames
// says anything may have changed, once.
func TestNamesLostMeansAll(t *testing.T) {
	w := newWatcher(t)
	s := w.SubscribeNames(nil)
	defer s.Close()
	w.mu.Lock()
	s.notify(AllOps) // what dispatch does on an inotify error
	w.mu.Unlock()
	if _, _, all := s.TakeNames(); !all {
		t.Fatal("TakeNames after lost events: all = false")
	}
	if _, names, all := s.TakeNames(); all || len(names) != 0 {
		t.Fatalf("second TakeNames = %v, %v; want nothing", names, all)
	}
}

// TestNamesBounded: beyond MaxNames changed names the subscriber is told
// that anything may have changed instead of holding them all.
func TestNamesBounded(t *testing.T) {
	w := newWatcher(t)
	dir := t.TempDir()
	s := w.SubscribeNames(nil)
	defer s.Close()
	if err := s.Add(dir); err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(dir)
	w.mu.Lock()
	for i := range MaxNames + 1 {
		s.notifyName(real, real, fsnotify.Event{Name: filepath.Join(real, "f"+strconv.Itoa(i)), Op: fsnotify.Write})
	}
	w.mu.Unlock()
	_, names, all := s.TakeNames()
	if !all || len(names) != 0 {
		t.Fatalf("TakeNames = %d names, all %v; want none, all", len(names), all)
	}
}
