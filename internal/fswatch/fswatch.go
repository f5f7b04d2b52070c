// Package fswatch shares one inotify instance (one fsnotify.Watcher) among
// everything in the daemon that watches directories: the config watcher and
// every file source. The kernel limits inotify instances per user (128 by
// default, /proc/sys/fs/inotify/max_user_instances), not watches, so one
// instance per file source stops working at about a hundred pipelines.
//
// Subscribers add the directories they care about (reference-counted: a
// directory stays watched while a subscriber wants it) and get the events
// of those directories, each through its own coalescing notification: a
// slow subscriber never blocks the others and never loses the fact that
// something changed, only the detail of how many times.
//
// A Watcher may be inactive (no inotify: Disabled, or New failed and the
// caller chose to go on): then Subscribe returns nil and the nil *Sub
// never fires, so callers poll.
package fswatch

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
)

// AllOps is what a subscriber is told when events may have been lost (an
// inotify queue overflow): anything may have happened.
const AllOps = fsnotify.Create | fsnotify.Write | fsnotify.Remove | fsnotify.Rename | fsnotify.Chmod

// ErrInactive is returned by Add on a subscription of an inactive watcher.
var ErrInactive = errors.New("fswatch: no inotify instance; polling only")

// Watcher is one inotify instance and its subscribers. Its methods are safe
// for concurrent use.
type Watcher struct {
	fw   backend // nil: inactive
	log  zerolog.Logger
	done chan struct{} // closed when dispatch returns

	mu     sync.Mutex
	dirs   map[string]map[*Sub]bool // watched directory (real path) -> its subscribers
	subs   map[*Sub]bool
	closed bool
}

// New opens an inotify instance read in paced bulk reads (see Pace) on
// Linux, and through fsnotify elsewhere.
func New(log zerolog.Logger) (*Watcher, error) {
	fw, err := newPaced()
	if errors.Is(err, errNoPaced) {
		return NewFsnotify(log)
	}
	if err != nil {
		return nil, err
	}
	return start(fw, log), nil
}

// NewFsnotify opens an inotify instance read by fsnotify, which hands
// over each event as the kernel queues it: the daemon's --watch fsnotify.
func NewFsnotify(log zerolog.Logger) (*Watcher, error) { return NewWith(fsnotify.NewWatcher, log) }

// NewWith is NewFsnotify with the fsnotify constructor given (a failing
// one shows what the daemon does without inotify).
func NewWith(newWatcher func() (*fsnotify.Watcher, error), log zerolog.Logger) (*Watcher, error) {
	fw, err := newWatcher()
	if err != nil {
		return nil, err
	}
	return start(fsnotifyBackend{fw}, log), nil
}

func start(fw backend, log zerolog.Logger) *Watcher {
	w := &Watcher{fw: fw, log: log, done: make(chan struct{}), dirs: map[string]map[*Sub]bool{}, subs: map[*Sub]bool{}}
	go w.dispatch()
	return w
}

// Event is a change in a watched directory: fsnotify's event, and for
// the Create of a file renamed within the instance's watched directories,
// From, the name it had (the kernel pairs the two halves of a rename by a
// cookie). A file source needs From to find a file that matched its glob
// and was renamed to a name it does not match before it looked.
type Event struct {
	fsnotify.Event
	From string
}

// backend is an inotify instance: fsnotify's Watcher, or paced.
type backend interface {
	Add(path string) error
	Remove(path string) error
	Close() error
	// Events gives the events on one of its two channels, the other nil:
	// fsnotify's own, or Events with From set by the backend.
	Events() (<-chan fsnotify.Event, <-chan Event)
	Errors() <-chan error
	WatchList() []string
}

type fsnotifyBackend struct{ *fsnotify.Watcher }

func (f fsnotifyBackend) Events() (<-chan fsnotify.Event, <-chan Event) { return f.Watcher.Events, nil }
func (f fsnotifyBackend) Errors() <-chan error                          { return f.Watcher.Errors }

// renamedFrom returns the name a file created by a rename had, from an
// fsnotify event. fsnotify pairs the halves of a rename (Create of the
// new name) but shows the old name only in Event.String, as
// `CREATE        "new" ← "old"`; TestPacedGivesFsnotifysEvents and
// TestRenamedFromOddNames fail if a new fsnotify words it otherwise.
func renamedFrom(ev fsnotify.Event) string {
	if !ev.Has(fsnotify.Create) {
		return ""
	}
	s := ev.String()
	i := strings.Index(s, `"`)
	if i < 0 {
		return ""
	}
	q, err := strconv.QuotedPrefix(s[i:])
	if err != nil {
		return ""
	}
	rest, ok := strings.CutPrefix(s[i+len(q):], " ← ")
	if !ok {
		return ""
	}
	from, err := strconv.Unquote(rest)
	if err != nil {
		return ""
	}
	return from
}

// Disabled returns an inactive watcher: its users poll.
func Disabled() *Watcher { return &Watcher{} }

// Active reports whether w has an inotify instance. A nil w is inactive.
func (w *Watcher) Active() bool { return w != nil && w.fw != nil }

// Subscribe returns a new subscription with no directory yet; nil when w
// is inactive or closed. match, if not nil, selects the events that
// notify it; it is called from the dispatching goroutine with w's lock
// held, so it must be quick and must not call w.
func (w *Watcher) Subscribe(match func(fsnotify.Event) bool) *Sub {
	return w.subscribe(match, false)
}

func (w *Watcher) subscribe(match func(fsnotify.Event) bool, names bool) *Sub {
	if !w.Active() {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	s := &Sub{w: w, match: match, c: make(chan struct{}, 1), dirs: map[string]string{}, wantNames: names}
	if names {
		s.names = map[string]fsnotify.Op{}
	}
	w.subs[s] = true
	return s
}

// SubscribeNames is Subscribe for a subscriber that also wants to know
// which files changed and how they were renamed: TakeChanges returns
// them. The names and the renames are each bounded by MaxNames; beyond it
// the subscriber is told that anything may have changed.
func (w *Watcher) SubscribeNames(match func(fsnotify.Event) bool) *Sub {
	return w.subscribe(match, true)
}

// MaxNames bounds the changed names a subscription holds between two
// TakeChanges; more than that are reported as "anything may have changed".
const MaxNames = 1 << 16

// Close closes the inotify instance; subscriptions stop firing. It is safe
// on an inactive watcher and more than once.
func (w *Watcher) Close() error {
	if !w.Active() {
		return nil
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	err := w.fw.Close()
	<-w.done
	return err
}

// dispatch hands every event to the subscribers of its directory (and of
// the path itself, for an event on a watched directory), and an error to
// every subscriber as "anything may have changed".
func (w *Watcher) dispatch() {
	defer close(w.done)
	events, own := w.fw.Events()
	errs := w.fw.Errors()
	for events != nil || own != nil || errs != nil {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			w.deliver(Event{Event: ev, From: renamedFrom(ev)})
		case ev, ok := <-own:
			if !ok {
				own = nil
				continue
			}
			w.deliver(ev)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			w.log.Warn().Err(err).Msg("file watcher error (events may be lost); every watcher checks for changes")
			w.mu.Lock()
			for s := range w.subs {
				s.notify(AllOps)
			}
			w.mu.Unlock()
		}
	}
}

// deliver hands ev to the subscribers of its directory, and of the path
// itself for an event on a watched directory.
func (w *Watcher) deliver(ev Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	dir := filepath.Dir(ev.Name)
	for _, p := range []string{dir, ev.Name} {
		for s := range w.dirs[p] {
			if s.match == nil || s.match(ev.Event) {
				s.notifyName(p, dir, ev)
			}
		}
	}
}

// Sub is one subscriber's view of a Watcher. A nil *Sub is valid: it never
// fires and Add fails with ErrInactive.
type Sub struct {
	w     *Watcher
	match func(fsnotify.Event) bool
	c     chan struct{}

	wantNames bool // SubscribeNames

	mu       sync.Mutex
	ops      fsnotify.Op            // accumulated since the last Take
	names    map[string]fsnotify.Op // SubscribeNames: changed names (as added) and their ops; nil otherwise
	moves    []Move                 // SubscribeNames: creations, removals and renames in its directories, in order
	overflow bool                   // names lost (too many, or events lost): anything may have changed

	dirs map[string]string // as added -> real path; guarded by w.mu
}

// C receives a value when events arrived since the last Take: any number
// of events make one pending value. Nil for a nil *Sub.
func (s *Sub) C() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.c
}

// Take returns the operations of the events since the last Take (their
// union; AllOps after lost events) and clears them.
func (s *Sub) Take() fsnotify.Op {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ops := s.ops
	s.ops = 0
	return ops
}

// Changes are the events a SubscribeNames subscription got since the
// last Take or TakeChanges. Names are under the directory names given to
// Add, so a directory added through a symlink gives names through that
// symlink.
type Changes struct {
	Ops   fsnotify.Op            // the union of the events' operations
	Names map[string]fsnotify.Op // the files they were about, each with its operations
	// Moves are the files created in, removed from and renamed into
	// the subscription's directories, in the order it happened (see
	// Move): what a name held over time, which Names cannot tell.
	Moves []Move
	// All: names were lost (too many, or an inotify overflow), and
	// anything may have changed.
	All bool
}

// Move is a change of what a name holds: a rename (the file now at To
// was at From, a name in a directory the instance watches), a creation
// (From empty: a new file, or one moved in from a directory not
// watched) or a removal (To empty). A file renamed out to a directory
// not watched leaves no Move.
type Move struct{ From, To string }

// TakeChanges returns the changes since the last Take or TakeChanges and
// clears them; the map and the slice are the caller's.
func (s *Sub) TakeChanges() Changes {
	if s == nil {
		return Changes{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := Changes{Ops: s.ops, Names: s.names, Moves: s.moves, All: s.overflow}
	s.ops, s.overflow, s.moves = 0, false, nil
	if s.wantNames {
		s.names = make(map[string]fsnotify.Op, min(len(c.Names), 64))
	}
	return c
}

// notifyName records ev, seen in the watched directory real (or on real
// itself), under each name s added real as; dir is ev.Name's directory.
// w.mu is held.
func (s *Sub) notifyName(real, dir string, ev Event) {
	if !s.wantNames {
		s.notify(ev.Op)
		return
	}
	s.mu.Lock()
	s.ops |= ev.Op
	if !s.overflow {
		for added, r := range s.dirs {
			if r != real {
				continue
			}
			name := added // an event on the directory itself
			if real == dir {
				name = under(added, real, ev.Name)
			}
			s.names[name] |= ev.Op
			if real == dir {
				switch {
				case ev.Has(fsnotify.Create) && ev.From != "":
					s.moves = append(s.moves, Move{From: s.addedName(ev.From), To: name})
				case ev.Has(fsnotify.Create):
					s.moves = append(s.moves, Move{To: name})
				case ev.Has(fsnotify.Remove):
					s.moves = append(s.moves, Move{From: name})
				}
			}
		}
		if len(s.names) > MaxNames || len(s.moves) > MaxNames {
			s.overflow, s.names, s.moves = true, map[string]fsnotify.Op{}, nil
		}
	}
	s.mu.Unlock()
	s.signal()
}

// addedName returns path, a real path, under the directory name s added
// its directory as; path itself when s does not watch its directory.
// w.mu is held.
func (s *Sub) addedName(path string) string {
	dir := filepath.Dir(path)
	for added, r := range s.dirs {
		if r == dir {
			return under(added, r, path)
		}
	}
	return path
}

// under returns path, a file in the real directory real, under the name
// added that directory was added as.
func under(added, real, path string) string {
	if added == real {
		return path // real joined with the file's name already
	}
	return filepath.Join(added, filepath.Base(path))
}

func (s *Sub) notify(op fsnotify.Op) {
	s.mu.Lock()
	s.ops |= op
	if op == AllOps && s.wantNames {
		s.overflow = true
		clear(s.names)
		s.moves = nil
	}
	s.mu.Unlock()
	s.signal()
}

// signal makes C ready.
func (s *Sub) signal() {
	select {
	case s.c <- struct{}{}:
	default: // one pending value covers any number of events
	}
}

// Add watches dir (made absolute, symlinks resolved) for s. Adding it again renews the
// kernel watch, which a directory replaced under the same name needs, and
// follows dir to a new target when it is a swapped symlink.
func (s *Sub) Add(dir string) error {
	if s == nil {
		return ErrInactive
	}
	// One name per directory: the kernel gives one watch per inode, which
	// fsnotify names after the first path it was added by, so every
	// subscriber must use that path.
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return err
	}
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || !w.subs[s] {
		return fsnotify.ErrClosed
	}
	if err := w.fw.Add(real); err != nil {
		return err
	}
	old, had := s.dirs[dir]
	s.dirs[dir] = real
	if had && old != real {
		w.drop(s, old)
	}
	if w.dirs[real] == nil {
		w.dirs[real] = map[*Sub]bool{}
	}
	w.dirs[real][s] = true
	return nil
}

// Remove stops watching dir for s; the kernel watch goes when no
// subscriber wants the directory.
func (s *Sub) Remove(dir string) {
	if s == nil {
		return
	}
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if real, ok := s.dirs[dir]; ok {
		delete(s.dirs, dir)
		w.drop(s, real)
	}
}

// wants reports whether s still watches real under another name.
func (s *Sub) wants(real string) bool {
	for _, r := range s.dirs {
		if r == real {
			return true
		}
	}
	return false
}

// drop removes s from the subscribers of real, and the kernel watch with
// the last one. w.mu is held.
func (w *Watcher) drop(s *Sub, real string) {
	if s.wants(real) {
		return
	}
	delete(w.dirs[real], s)
	if len(w.dirs[real]) == 0 {
		delete(w.dirs, real)
		if !w.closed {
			_ = w.fw.Remove(real) // gone already when the directory was deleted
		}
	}
}

// Close removes every directory of s; it stops firing. Safe on a nil *Sub
// and more than once.
func (s *Sub) Close() {
	if s == nil {
		return
	}
	w := s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.subs, s)
	for dir, real := range s.dirs {
		delete(s.dirs, dir)
		w.drop(s, real)
	}
}

// errNoPaced: the paced reader is not built for this system.
var errNoPaced = errors.New("fswatch: no paced inotify reader on this system")
