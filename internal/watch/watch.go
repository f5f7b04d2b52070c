// Package watch tells when a config path may have changed, debounced.
//
// Only pipeline files count: the file itself in file mode, the *.yaml and
// *.yml files (not hidden) of the directory in directory mode, plus every
// symlink on the way to them and their targets. Writes next to them (an
// output file, the state dir, an editor's swap file) are ignored.
//
// With inotify it watches directories, not files: the directory holding a
// pipeline file (or the config directory itself and its parent), plus the
// directories of symlink targets. That way every way people and tools save
// a file is seen: write-temp-then-rename (vim, VS Code),
// truncate-and-write, delete and re-create, and an atomically swapped
// symlink (Kubernetes ConfigMap "..data" links).
//
// Without inotify (the per-user instance limit reached, or polling asked
// for) it polls the pipeline files every PollInterval: their list, and for
// each its size, modification time, device and inode (symlinks followed);
// a file whose metadata changed, or whose modification time was too recent
// to tell a later edit apart (racyWindow), is read and counts as changed
// when its content hash did.
//
// Whether anything really changed is for the caller to decide (etld
// compares content hashes): a spurious trigger costs a load.
package watch

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/fswatch"
)

// Modes of a Watcher.
const (
	ModeInotify = "inotify"
	ModePoll    = "poll"
)

// DefaultPollInterval is how often the pipeline files are polled without
// inotify.
const DefaultPollInterval = time.Second

// Options tune a Watcher.
type Options struct {
	// Debounce is the quiet period after the last event before a change
	// is reported; 0 means 250ms.
	Debounce time.Duration
	// MaxDelay bounds how long a continuous storm of events can postpone
	// the report; 0 means 10 x Debounce.
	MaxDelay time.Duration
	// FS is the daemon's shared inotify instance. Nil: New opens one of
	// its own (closed by Close). Inactive (fswatch.Disabled), or when no
	// directory can be watched: the pipeline files are polled.
	FS *fswatch.Watcher
	// PollInterval is the polling period; 0 means DefaultPollInterval.
	PollInterval time.Duration
	Logger       zerolog.Logger
}

// Watcher reports changes under a config path on C.
type Watcher struct {
	C <-chan struct{}

	c     chan struct{}
	path  string // absolute
	opts  Options
	mode  string
	own   *fswatch.Watcher // opened by New, closed by Close
	sub   *fswatch.Sub     // nil when polling
	done  chan struct{}
	close context.CancelFunc

	mu      sync.Mutex      // guards what match reads
	dir     bool            // path is a directory
	realDir string          // its real path
	rel     map[string]bool // paths whose events count (see links)
	dirs    map[string]bool // watched directories

	polled map[string]fileState // poll mode: the pipeline files last seen
}

// New watches path (a pipeline file or a directory of them).
func New(path string, opts Options) (*Watcher, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = 250 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 10 * opts.Debounce
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Dir(abs)); err != nil {
		return nil, &os.PathError{Op: "watch", Path: path, Err: os.ErrNotExist}
	}
	c := make(chan struct{}, 1)
	w := &Watcher{C: c, c: c, path: abs, opts: opts, done: make(chan struct{}), dirs: map[string]bool{}}
	fs := opts.FS
	if fs == nil {
		if fs, err = fswatch.New(opts.Logger); err != nil {
			opts.Logger.Warn().Err(err).Dur("interval", opts.PollInterval).Msg("cannot use inotify for the config; polling it")
		} else {
			w.own = fs
		}
	}
	if w.sub = fs.Subscribe(w.match); w.sub != nil {
		w.refresh()
		if len(w.dirs) == 0 {
			opts.Logger.Warn().Str("config", path).Dur("interval", opts.PollInterval).Msg("cannot watch the config's directories; polling it")
			w.sub.Close()
			w.sub = nil
		}
	}
	w.mode = ModeInotify
	if w.sub == nil {
		w.mode = ModePoll
		w.polled = w.poll()
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.close = cancel
	go w.loop(ctx)
	return w, nil
}

// Mode is ModeInotify or ModePoll.
func (w *Watcher) Mode() string { return w.mode }

// refresh works out which paths count and watches their directories: the
// config path, each pipeline file of a config directory, the symlinks on
// the way to them and their targets; the config directory itself; and
// the directory holding each of those. Directories no longer needed are
// dropped.
func (w *Watcher) refresh() {
	rel := map[string]bool{}
	dirs := map[string]bool{}
	add := func(p string) {
		for _, l := range links(p) {
			rel[l] = true
			dirs[filepath.Dir(l)] = true
		}
	}
	add(w.path)
	fi, err := os.Stat(w.path)
	isDir := err == nil && fi.IsDir()
	realDir := ""
	if isDir {
		// The parent too (added above): deployment tools replace the
		// whole directory (delete and re-create, rename a new one into
		// place, swap a symlink), which ends a watch on the directory
		// itself.
		if realDir, err = filepath.EvalSymlinks(w.path); err == nil {
			dirs[realDir] = true
		}
		files, _ := config.PipelineFiles(w.path)
		for _, f := range files {
			add(f)
		}
	}
	w.mu.Lock()
	w.dir, w.realDir, w.rel = isDir, realDir, rel
	w.mu.Unlock()
	for d := range dirs {
		// Add again even when watched: a directory replaced under the
		// same name is a new inode that needs a new watch.
		if err := w.sub.Add(d); err != nil {
			if !w.dirs[d] {
				w.opts.Logger.Warn().Err(err).Str("dir", d).Msg("cannot watch config directory")
			}
			continue // if gone for now, the parent's watch brings it back
		}
		w.dirs[d] = true
	}
	for d := range w.dirs {
		if !dirs[d] {
			w.sub.Remove(d)
			delete(w.dirs, d)
		}
	}
}

// match selects the events that concern pipeline files (called by the
// shared watcher).
func (w *Watcher) match(ev fsnotify.Event) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.rel[ev.Name] {
		return true
	}
	if w.dir && filepath.Dir(ev.Name) == w.realDir {
		return isPipelineFile(filepath.Base(ev.Name))
	}
	return false
}

// isPipelineFile reports whether a name in a config directory is loaded
// as a pipeline (config.PipelineFiles skips hidden files).
func isPipelineFile(name string) bool {
	return !strings.HasPrefix(name, ".") && config.IsPipelineFile(name)
}

// links returns the paths whose change can change what p resolves to: p
// itself and, when it goes through symlinks (in its name or in its
// directories), every link on the way and the final target. Each is its
// directory's real path joined with its name: the form in which the
// watcher names events.
func links(p string) []string {
	var out []string
	budget := 64 // like the kernel's ELOOP limit, against link cycles
	var walk func(p string)
	walk = func(p string) {
		for ; budget > 0; budget-- {
			dir := filepath.Dir(p)
			real, err := filepath.EvalSymlinks(dir)
			if err != nil {
				out = append(out, p)
				return
			}
			if real != dir {
				walk(dir) // a link among the directories ("..data")
			}
			q := filepath.Join(real, filepath.Base(p))
			out = append(out, q)
			target, err := os.Readlink(q)
			if err != nil {
				return // not a link: the end
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(real, target)
			}
			p = filepath.Clean(target)
		}
	}
	walk(filepath.Clean(p))
	return out
}

// fileState is what polling compares of a pipeline file.
type fileState struct {
	fi  os.FileInfo // size, modification time, and identity (os.SameFile)
	sum [sha256.Size]byte
	// racy: the modification time was within racyWindow of the poll, so
	// an edit after the read can keep it (and the size): read it again.
	racy bool
}

// racyWindow bounds the modification-time granularity of the file
// systems a config lives on (2s: FAT; most are far finer): a file
// modified less than this before it was read may be edited again without
// its modification time changing.
const racyWindow = 2 * time.Second

// poll returns the state of every pipeline file, reading only those whose
// metadata changed since the last poll.
func (w *Watcher) poll() map[string]fileState {
	files := []string{w.path}
	if fi, err := os.Stat(w.path); err == nil && fi.IsDir() {
		files, _ = config.PipelineFiles(w.path)
	}
	now := make(map[string]fileState, len(files))
	for _, f := range files {
		at := time.Now()
		fi, err := os.Stat(f)
		if err != nil {
			continue
		}
		st := fileState{fi: fi, racy: fi.ModTime().After(at.Add(-racyWindow))}
		prev, ok := w.polled[f]
		if ok && !prev.racy && prev.fi.Size() == fi.Size() && prev.fi.ModTime().Equal(fi.ModTime()) && os.SameFile(prev.fi, fi) {
			st.sum = prev.sum
		} else if b, err := os.ReadFile(f); err == nil {
			st.sum = sha256.Sum256(b)
		}
		now[f] = st
	}
	return now
}

// pollChanged polls and reports whether the set of pipeline files or the
// content of one of them changed.
func (w *Watcher) pollChanged() bool {
	now := w.poll()
	changed := len(now) != len(w.polled)
	for f, st := range now {
		if prev, ok := w.polled[f]; !ok || prev.sum != st.sum {
			changed = true
		}
	}
	w.polled = now
	return changed
}

func (w *Watcher) loop(ctx context.Context) {
	defer close(w.done)
	var tick <-chan time.Time
	if w.sub == nil {
		t := time.NewTicker(w.opts.PollInterval)
		defer t.Stop()
		tick = t.C
	}
	var quiet, deadline *time.Timer
	var quietC, deadlineC <-chan time.Time
	stop := func() {
		if quiet != nil {
			quiet.Stop()
		}
		if deadline != nil {
			deadline.Stop()
		}
		quietC, deadlineC = nil, nil
	}
	defer stop()
	changed := func() {
		if quiet == nil {
			quiet = time.NewTimer(w.opts.Debounce)
		} else {
			quiet.Reset(w.opts.Debounce)
		}
		quietC = quiet.C
		if deadlineC == nil {
			if deadline == nil {
				deadline = time.NewTimer(w.opts.MaxDelay)
			} else {
				deadline.Reset(w.opts.MaxDelay)
			}
			deadlineC = deadline.C
		}
	}
	fire := func() {
		stop()
		if w.sub != nil {
			// A symlink swap can move the target to a new directory,
			// and a new pipeline file can be a symlink.
			w.refresh()
		}
		select {
		case w.c <- struct{}{}:
		default: // one pending report covers any number of changes
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.sub.C():
			w.opts.Logger.Debug().Stringer("ops", w.sub.Take()).Msg("pipeline file changed")
			changed()
		case <-tick:
			if w.pollChanged() {
				w.opts.Logger.Debug().Msg("pipeline file changed")
				changed()
			}
		case <-quietC:
			fire()
		case <-deadlineC:
			fire()
		}
	}
}

// Close stops watching.
func (w *Watcher) Close() error {
	w.close()
	<-w.done
	w.sub.Close()
	return w.own.Close()
}
