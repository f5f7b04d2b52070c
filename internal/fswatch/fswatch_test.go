package fswatch

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second // deadline for a notification that must come

// open is the constructor newWatcher uses: New (paced on Linux), or
// NewFsnotify under TestFsnotifyBackend.
var open = New

func newWatcher(t *testing.T) *Watcher {
	t.Helper()
	w, err := open(zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func touch(t *testing.T, p string) {
	t.Helper()
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// expect waits for s to fire and returns the operations taken.
func expect(t *testing.T, s *Sub, what string) fsnotify.Op {
	t.Helper()
	select {
	case <-s.C():
		return s.Take()
	case <-time.After(wait):
		t.Fatalf("%s: no notification within %v", what, wait)
		return 0
	}
}

// TestFanOutByDirectory: each subscriber hears about its own directories
// only; a directory two subscribers watch notifies both.
func TestFanOutByDirectory(t *testing.T) {
	w := newWatcher(t)
	a, b := t.TempDir(), t.TempDir()
	sa, sb, sab := w.Subscribe(nil), w.Subscribe(nil), w.Subscribe(nil)
	for _, x := range []struct {
		s   *Sub
		dir string
	}{{sa, a}, {sb, b}, {sab, a}, {sab, b}} {
		if err := x.s.Add(x.dir); err != nil {
			t.Fatal(err)
		}
	}
	touch(t, filepath.Join(a, "f")) // a Create, then a Write
	for op := fsnotify.Op(0); !op.Has(fsnotify.Create) || !op.Has(fsnotify.Write); {
		op |= expect(t, sa, "a's subscriber")
	}
	expect(t, sab, "the subscriber of both")
	touch(t, filepath.Join(b, "f"))
	expect(t, sb, "b's subscriber")
	expect(t, sab, "the subscriber of both")
	if op := sa.Take(); op != 0 {
		t.Errorf("a's subscriber was told %v about b", op)
	}
}

// TestSlowSubscriberCoalesces: a subscriber that does not read is not a
// problem for the others, and what it missed is one pending notification
// with the union of the operations.
func TestSlowSubscriberCoalesces(t *testing.T) {
	w := newWatcher(t)
	dir := t.TempDir()
	slow, fast := w.Subscribe(nil), w.Subscribe(nil)
	for _, s := range []*Sub{slow, fast} {
		if err := s.Add(dir); err != nil {
			t.Fatal(err)
		}
	}
	var seen fsnotify.Op // by fast
	for i := range 100 {
		p := filepath.Join(dir, "f")
		touch(t, p)
		if i == 99 {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		seen |= expect(t, fast, "the reading subscriber") // it keeps up while slow does not read
	}
	// fast saw the Remove too: every event has been dispatched by now,
	// so slow's pending notification covers all of them.
	for !seen.Has(fsnotify.Remove) {
		seen |= expect(t, fast, "the Remove")
	}
	if len(slow.C()) != 1 {
		t.Fatalf("the slow subscriber has %d notifications pending, want 1", len(slow.C()))
	}
	if op := slow.Take(); !op.Has(fsnotify.Create) || !op.Has(fsnotify.Write) || !op.Has(fsnotify.Remove) {
		t.Errorf("the slow subscriber's operations are %v, want Create, Write and Remove", op)
	}
}

// TestReferenceCounted: a directory stays watched while a subscriber
// wants it, under whatever name it was added.
func TestReferenceCounted(t *testing.T) {
	w := newWatcher(t)
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	s1, s2, s3 := w.Subscribe(nil), w.Subscribe(nil), w.Subscribe(nil)
	if err := s1.Add(dir); err != nil {
		t.Fatal(err)
	}
	if err := s2.Add(link); err != nil { // the same directory by another name
		t.Fatal(err)
	}
	t.Chdir(filepath.Dir(dir))
	if err := s3.Add(filepath.Base(dir)); err != nil { // and a relative one
		t.Fatal(err)
	}
	touch(t, filepath.Join(dir, "e"))
	for _, s := range []*Sub{s1, s2, s3} {
		expect(t, s, "each name's subscriber")
	}
	s3.Close()
	s1.Remove(dir)
	if got := len(w.fw.WatchList()); got != 1 {
		t.Fatalf("%d kernel watches after one of two subscribers left, want 1", got)
	}
	touch(t, filepath.Join(dir, "f"))
	expect(t, s2, "the remaining subscriber")
	s2.Close()
	if got := len(w.fw.WatchList()); got != 0 {
		t.Fatalf("%d kernel watches after every subscriber left, want 0", got)
	}
	s2.Close() // idempotent
	if err := s2.Add(dir); err == nil {
		t.Error("Add on a closed subscription succeeded")
	}
}

// TestMatchFilters: events a subscriber's match rejects do not fire it.
// The rejected event (a Remove) comes first: events are dispatched in
// order, so once the wanted ones arrived it would have been seen.
func TestMatchFilters(t *testing.T) {
	w := newWatcher(t)
	dir := t.TempDir()
	touch(t, filepath.Join(dir, "other"))
	s := w.Subscribe(func(ev fsnotify.Event) bool { return filepath.Base(ev.Name) == "wanted" })
	if err := s.Add(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "other")); err != nil {
		t.Fatal(err)
	}
	touch(t, filepath.Join(dir, "wanted"))
	var op fsnotify.Op
	for !op.Has(fsnotify.Create) || !op.Has(fsnotify.Write) {
		op |= expect(t, s, "the filtered subscriber")
	}
	if op.Has(fsnotify.Remove) {
		t.Errorf("the filtered subscriber was told of the Remove of another file")
	}
}

// TestInactive: without inotify (the per-user instance limit reached)
// there is no subscription, and the nil one is harmless.
func TestInactive(t *testing.T) {
	_, err := NewWith(func() (*fsnotify.Watcher, error) { return nil, syscall.EMFILE }, zerolog.Nop())
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("NewWith with a failing constructor: %v, want EMFILE", err)
	}
	for _, w := range []*Watcher{nil, Disabled()} {
		if w.Active() {
			t.Error("an inactive watcher reports itself active")
		}
		s := w.Subscribe(nil)
		if s != nil {
			t.Fatal("an inactive watcher gave a subscription")
		}
		if err := s.Add(t.TempDir()); !errors.Is(err, ErrInactive) {
			t.Errorf("Add on the nil subscription: %v, want ErrInactive", err)
		}
		if s.C() != nil || s.Take() != 0 {
			t.Error("the nil subscription fires")
		}
		s.Remove("x")
		s.Close()
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	}
}
