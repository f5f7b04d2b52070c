package fswatch

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// takeUntil collects TakeChanges results until every name in want was seen.
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
			c := s.TakeChanges()
			if c.All {
				t.Fatal("TakeChanges said everything changed; want names")
			}
			for n, op := range c.Names {
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

// TestNamesLostMeansAll: after lost events (a watcher error) TakeChanges
// says anything may have changed, once.
func TestNamesLostMeansAll(t *testing.T) {
	w := newWatcher(t)
	s := w.SubscribeNames(nil)
	defer s.Close()
	w.mu.Lock()
	s.notify(AllOps) // what dispatch does on an inotify error
	w.mu.Unlock()
	if c := s.TakeChanges(); !c.All {
		t.Fatal("TakeChanges after lost events: All = false")
	}
	if c := s.TakeChanges(); c.All || len(c.Names) != 0 {
		t.Fatalf("second TakeChanges = %v, %v; want nothing", c.Names, c.All)
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
		s.notifyName(real, real, Event{Event: fsnotify.Event{Name: filepath.Join(real, "f"+strconv.Itoa(i)), Op: fsnotify.Write}})
	}
	w.mu.Unlock()
	c := s.TakeChanges()
	if !c.All || len(c.Names) != 0 {
		t.Fatalf("TakeChanges = %d names, all %v; want none, all", len(c.Names), c.All)
	}
}

// TestNamesMoves: a SubscribeNames subscriber learns what its
// directories' names held, in order, under the directory names it added:
// renames with the old name when it was in a watched directory, a file
// moved in from a directory nobody watches as a creation, removals and
// creations.
func TestNamesMoves(t *testing.T) {
	w := newWatcher(t)
	real := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	touch(t, filepath.Join(real, "a"))
	touch(t, filepath.Join(outside, "x"))
	s := w.SubscribeNames(nil)
	defer s.Close()
	if err := s.Add(link); err != nil {
		t.Fatal(err)
	}
	for _, mv := range [][2]string{
		{filepath.Join(real, "a"), filepath.Join(real, "b")},
		{filepath.Join(real, "b"), filepath.Join(real, "c")},
		{filepath.Join(outside, "x"), filepath.Join(real, "x")},
	} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(real, "c")); err != nil {
		t.Fatal(err)
	}
	touch(t, filepath.Join(real, "stop"))
	var moves []Move
	names := map[string]fsnotify.Op{}
	for deadline := time.After(wait); names[filepath.Join(link, "stop")] == 0; {
		select {
		case <-s.C():
			c := s.TakeChanges()
			if c.All {
				t.Fatal("TakeChanges said everything changed; want names")
			}
			moves = append(moves, c.Moves...)
			for n, op := range c.Names {
				names[n] |= op
			}
		case <-deadline:
			t.Fatalf("no event for stop within %v; names %v", wait, names)
		}
	}
	want := []Move{
		{From: filepath.Join(link, "a"), To: filepath.Join(link, "b")},
		{From: filepath.Join(link, "b"), To: filepath.Join(link, "c")},
		{To: filepath.Join(link, "x")},
		{From: filepath.Join(link, "c")},
		{To: filepath.Join(link, "stop")},
	}
	if !slices.Equal(moves, want) {
		t.Fatalf("moves %q, want %q", moves, want)
	}
}
