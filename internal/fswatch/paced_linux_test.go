package fswatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// TestFsnotifyBackend runs the watcher's tests again over fsnotify (the
// others use New, the paced reader on Linux).
func TestFsnotifyBackend(t *testing.T) {
	tests := map[string]func(*testing.T){
		"FanOutByDirectory":      TestFanOutByDirectory,
		"SlowSubscriberCoalesce": TestSlowSubscriberCoalesces,
		"ReferenceCounted":       TestReferenceCounted,
		"MatchFilters":           TestMatchFilters,
		"NamesOfChangedFiles":    TestNamesOfChangedFiles,
		"NamesLostMeansAll":      TestNamesLostMeansAll,
		"NamesBounded":           TestNamesBounded,
		"NamesMoves":             TestNamesMoves,
	}
	for name, test := range tests {
		t.Run(name, func(t *testing.T) {
			open = NewFsnotify
			defer func() { open = New }()
			test(t)
		})
	}
}

// eventsOf returns b's events as the watcher dispatches them: fsnotify's
// are converted (From from renamedFrom) by a goroutine that ends when b
// is closed, dropping events nobody reads so that b's Close never waits
// for it.
func eventsOf(b backend) <-chan Event {
	fs, own := b.Events()
	if own != nil {
		return own
	}
	c := make(chan Event, 1024)
	go func() {
		defer close(c)
		for ev := range fs {
			select {
			case c <- Event{Event: ev, From: renamedFrom(ev)}:
			default:
			}
		}
	}()
	return c
}

// collect reads events until one names the file stop, and returns them
// as "OP name" (name relative to dir), with " <- from" for a rename whose
// old name is known.
func collect(t *testing.T, events <-chan Event, errs <-chan error, dir, stop string) []string {
	t.Helper()
	var got []string
	deadline := time.After(wait)
	for {
		select {
		case ev := <-events:
			rel, _ := filepath.Rel(dir, ev.Name)
			if rel == stop {
				return got
			}
			e := ev.Op.String() + " " + rel
			if ev.From != "" {
				from, _ := filepath.Rel(dir, ev.From)
				e += " <- " + from
			}
			got = append(got, e)
		case err := <-errs:
			t.Fatalf("error event: %v", err)
		case <-deadline:
			t.Fatalf("no event for %s within %v; so far %q", stop, wait, got)
		}
	}
}

// TestPacedGivesFsnotifysEvents: the same changes, watched by the paced
// reader and by fsnotify at once, give the same events in the same order
// up to repeats (creation, write, attributes, renames within and out of
// the directory, removal, a subdirectory's creation and removal, and the
// watched directory's own move and deletion); a rename within the
// directory names the file's old name (Event.From) in both.
func TestPacedGivesFsnotifysEvents(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := newPaced()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	f := fsnotifyBackend{fw}
	defer f.Close()
	fEvents, pEvents := eventsOf(f), eventsOf(p)
	for _, b := range []backend{p, f} {
		if err := b.Add(dir); err != nil {
			t.Fatal(err)
		}
	}
	in := func(name string) string { return filepath.Join(dir, name) }
	steps := []func() error{
		func() error { return os.WriteFile(in("a"), []byte("1\n"), 0o644) },
		func() error {
			f, err := os.OpenFile(in("a"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			f.WriteString("2\n")
			return f.Close()
		},
		func() error { return os.Chmod(in("a"), 0o600) },
		func() error { return os.Rename(in("a"), in("b")) },
		func() error { return os.Rename(in("b"), filepath.Join(root, "out")) },
		func() error { return os.WriteFile(in("c"), nil, 0o644) },
		func() error { return os.Remove(in("c")) },
		func() error { return os.Mkdir(in("sub"), 0o755) },
		func() error { return os.Remove(in("sub")) },
		func() error { return os.WriteFile(in("stop"), nil, 0o644) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel merges an event into an identical one still queued, so
	// how many of two consecutive writes show depends on when each reader
	// read: compare with repeats collapsed.
	want := slices.Compact(collect(t, fEvents, f.Errors(), dir, "stop"))
	got := slices.Compact(collect(t, pEvents, p.Errors(), dir, "stop"))
	if !slices.Equal(got, want) {
		t.Fatalf("paced reader's events:\n%q\nfsnotify's:\n%q", got, want)
	}
	if len(want) < 10 {
		t.Fatalf("only %d events: %q", len(want), want)
	}
	// renamedFrom reads fsnotify's Event.String: this fails if a new
	// fsnotify words it otherwise.
	if !slices.Contains(want, "CREATE b <- a") {
		t.Fatalf("no rename of a to b with its old name among fsnotify's events: %q", want)
	}
	// The directory itself, deleted.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for name, events := range map[string]<-chan Event{"paced": pEvents, "fsnotify": fEvents} {
		for deadline := time.After(wait); ; {
			select {
			case ev := <-events:
				if ev.Name == dir && ev.Op&fsnotify.Remove != 0 {
					goto next
				}
			case <-deadline:
				t.Fatalf("%s: no Remove of the watched directory within %v", name, wait)
			}
		}
	next:
	}
	// The kernel dropped the watch with the directory: IN_IGNORED removed it.
	deadline := time.Now().Add(wait)
	for len(p.WatchList()) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("watch list after the directory's deletion: %q", p.WatchList())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPacedBurst: more events than one read takes, from files written all
// at once, all arrive.
func TestPacedBurst(t *testing.T) {
	dir := t.TempDir()
	p, err := newPaced()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Add(dir); err != nil {
		t.Fatal(err)
	}
	const n = 5000 // ~45 bytes an event: more than 3 reads of 64 KiB
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("file-%05d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for deadline := time.After(wait); len(seen) < n; {
		select {
		case ev := <-p.(*paced).events:
			if ev.Op&fsnotify.Create != 0 {
				seen[ev.Name] = true
			}
		case err := <-p.Errors():
			t.Fatalf("error: %v", err) // the kernel's default queue (16,384) holds them
		case <-deadline:
			t.Fatalf("%d of %d creations within %v", len(seen), n, wait)
		}
	}
}

// TestPacedCloseIdle: Close wakes a reader blocked in poll(2), and the
// channels close (goleak checks the goroutine is gone).
func TestPacedCloseIdle(t *testing.T) {
	p, err := newPaced()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Add(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(wait):
		t.Fatal("Close did not return: the reader stayed in poll(2)")
	}
	if _, ok := <-p.(*paced).events; ok {
		t.Fatal("Events still open after Close")
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// rawEvent encodes one inotify event as the kernel writes it.
func rawEvent(wd int32, mask uint32, name string) []byte {
	n := 0
	if name != "" {
		n = (len(name) + 1 + 15) / 16 * 16 // NUL-terminated and padded
	}
	b := make([]byte, unix.SizeofInotifyEvent+n)
	binary.NativeEndian.PutUint32(b[0:], uint32(wd))
	binary.NativeEndian.PutUint32(b[4:], mask)
	binary.NativeEndian.PutUint32(b[12:], uint32(n))
	copy(b[unix.SizeofInotifyEvent:], name)
	return b
}

// TestPacedParse: an overflow becomes fsnotify's ErrEventOverflow (the
// watcher then tells every subscriber that anything may have changed),
// IN_IGNORED forgets the watch, an unknown watch's events are dropped,
// and names lose their padding.
func TestPacedParse(t *testing.T) {
	p := &paced{events: make(chan Event, 8), errs: make(chan error, 1), done: make(chan struct{}),
		wds: map[int32]string{1: "/d", 2: "/"}, paths: map[string]int32{"/d": 1, "/": 2}}
	var b []byte
	b = append(b, rawEvent(1, unix.IN_MODIFY, "f.log")...)
	b = append(b, rawEvent(2, unix.IN_CREATE, "top")...)
	b = append(b, rawEvent(-1, unix.IN_Q_OVERFLOW, "")...)
	b = append(b, rawEvent(9, unix.IN_MODIFY, "unknown")...)
	b = append(b, rawEvent(1, unix.IN_IGNORED, "")...)
	b = append(b, rawEvent(1, unix.IN_MODIFY, "after")...)
	if !p.parse(b) {
		t.Fatal("parse reported closed")
	}
	close(p.events)
	var got []string
	for ev := range p.events {
		got = append(got, ev.String())
	}
	want := []string{fsnotify.Event{Name: "/d/f.log", Op: fsnotify.Write}.String(), fsnotify.Event{Name: "/top", Op: fsnotify.Create}.String()}
	if !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if err := <-p.errs; !errors.Is(err, fsnotify.ErrEventOverflow) {
		t.Errorf("error %v, want ErrEventOverflow", err)
	}
	if _, ok := p.paths["/d"]; ok || len(p.wds) != 1 {
		t.Errorf("after IN_IGNORED: paths %v, wds %v", p.paths, p.wds)
	}
}

// TestNewIsPaced: on Linux, New's instance is the paced reader.
func TestNewIsPaced(t *testing.T) {
	w, err := New(zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, ok := w.fw.(*paced); !ok {
		t.Fatalf("New gave a %T, want the paced reader", w.fw)
	}
}

// TestPacedJoinReuses: a name seen again gives the path made the first
// time (no allocation per event), under the right directory, and the
// cache is bounded.
func TestPacedJoinReuses(t *testing.T) {
	p := &paced{}
	a := p.join(1, "/d", []byte("f.log"))
	b := p.join(1, "/d", []byte("f.log"))
	if a != "/d/f.log" || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Fatalf("join gave %q then %q (same memory: %v)", a, b, unsafe.StringData(a) == unsafe.StringData(b))
	}
	if c := p.join(2, "/", []byte("f.log")); c != "/f.log" {
		t.Fatalf("under /: %q", c)
	}
	for i := range maxJoined + 10 {
		p.join(1, "/d", []byte(strconv.Itoa(i)))
	}
	if n := len(p.joined[1]); n > maxJoined {
		t.Fatalf("%d paths kept, bound %d", n, maxJoined)
	}
	if allocs := testing.AllocsPerRun(100, func() { p.join(1, "/d", []byte("9")) }); allocs != 0 {
		t.Errorf("%v allocations to join a name seen before", allocs)
	}
}

// TestRenamedFromOddNames: renamedFrom reads the old name back from
// fsnotify's Event.String whatever the names hold (quotes, the arrow
// fsnotify writes between them, a newline, a backslash, bytes that are
// not UTF-8), and the paced reader gives the same.
func TestRenamedFromOddNames(t *testing.T) {
	dir := t.TempDir()
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	f := fsnotifyBackend{fw}
	defer f.Close()
	p, err := newPaced()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, b := range []backend{f, p} {
		if err := b.Add(dir); err != nil {
			t.Fatal(err)
		}
	}
	fEvents, pEvents := eventsOf(f), eventsOf(p)
	names := []string{`a"b`, `c ← "d"`, "e\nf", `g\h`, "i\xffj", "plain"}
	for i := 1; i < len(names); i++ {
		if i == 1 {
			touch(t, filepath.Join(dir, names[0]))
		}
		if err := os.Rename(filepath.Join(dir, names[i-1]), filepath.Join(dir, names[i])); err != nil {
			t.Fatal(err)
		}
	}
	touch(t, filepath.Join(dir, "stop"))
	var want []string
	for i := 1; i < len(names); i++ {
		want = append(want, names[i-1]+" -> "+names[i])
	}
	for name, events := range map[string]<-chan Event{"fsnotify": fEvents, "paced": pEvents} {
		var got []string
		for deadline := time.After(wait); ; {
			select {
			case ev := <-events:
				if filepath.Base(ev.Name) == "stop" {
					goto done
				}
				if ev.From != "" {
					got = append(got, filepath.Base(ev.From)+" -> "+filepath.Base(ev.Name))
				}
				continue
			case <-deadline:
				t.Fatalf("%s: no event for stop within %v; renames so far %q", name, wait, got)
			}
		}
	done:
		if !slices.Equal(got, want) {
			t.Errorf("%s: renames %q, want %q", name, got, want)
		}
	}
}
