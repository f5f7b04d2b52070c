// Package watch tells when a config path may have changed, debounced.
//
// It watches directories, not files: the directory holding a pipeline file
// (or the config directory itself), plus the directory of a symlink's
// target. That way every way people and tools save a file is seen:
// write-temp-then-rename (vim, VS Code), truncate-and-write, delete and
// re-create, and an atomically swapped symlink (Kubernetes ConfigMap
// "..data" links). Whether anything really changed is for the caller to
// decide (etld compares content hashes): a spurious trigger costs a load.
package watch

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"
)

// Options tune a Watcher.
type Options struct {
	// Debounce is the quiet period after the last event before a change
	// is reported; 0 means 250ms.
	Debounce time.Duration
	// MaxDelay bounds how long a continuous storm of events can postpone
	// the report; 0 means 10 x Debounce.
	MaxDelay time.Duration
	Logger   zerolog.Logger
}

// Watcher reports changes under a config path on C.
type Watcher struct {
	C <-chan struct{}

	c     chan struct{}
	w     *fsnotify.Watcher
	path  string
	opts  Options
	dirs  map[string]bool
	done  chan struct{}
	close context.CancelFunc
}

// New watches path (a pipeline file or a directory of them).
func New(path string, opts Options) (*Watcher, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = 250 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 10 * opts.Debounce
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	c := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{C: c, c: c, w: fw, path: path, opts: opts, dirs: map[string]bool{},
		done: make(chan struct{}), close: cancel}
	w.addDirs()
	if len(w.dirs) == 0 {
		fw.Close()
		cancel()
		return nil, &os.PathError{Op: "watch", Path: path, Err: os.ErrNotExist}
	}
	go w.loop(ctx)
	return w, nil
}

// addDirs watches the directories that can change what path means: the
// path itself when it is a directory, else its parent, plus the parent of
// its resolved target when it goes through symlinks.
func (w *Watcher) addDirs() {
	var dirs []string
	if fi, err := os.Stat(w.path); err == nil && fi.IsDir() {
		// The parent too: deployment tools replace the whole directory
		// (delete and re-create, rename a new one into place, swap a
		// symlink), which ends a watch on the directory itself.
		dirs = append(dirs, w.path, filepath.Dir(filepath.Clean(w.path)))
	} else {
		dirs = append(dirs, filepath.Dir(w.path))
	}
	if real, err := filepath.EvalSymlinks(w.path); err == nil && real != w.path {
		if fi, err := os.Stat(real); err == nil && fi.IsDir() {
			dirs = append(dirs, real)
		} else {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	for _, d := range dirs {
		d = filepath.Clean(d)
		// Add again even when watched: a directory replaced under the
		// same name is a new inode that needs a new watch.
		if err := w.w.Add(d); err != nil {
			if w.dirs[d] {
				continue // gone for now; the parent's watch brings it back
			}
			w.opts.Logger.Warn().Err(err).Str("dir", d).Msg("cannot watch config directory")
			continue
		}
		w.dirs[d] = true
	}
}

func (w *Watcher) loop(ctx context.Context) {
	defer close(w.done)
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
	fire := func() {
		stop()
		// A symlink swap can move the target to a new directory.
		w.addDirs()
		select {
		case w.c <- struct{}{}:
		default: // one pending report covers any number of changes
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.w.Events:
			if !ok {
				return
			}
			w.opts.Logger.Debug().Str("event", ev.String()).Msg("config directory changed")
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
		case err, ok := <-w.w.Errors:
			if !ok {
				return
			}
			// An overflow loses events: reload to be safe.
			w.opts.Logger.Warn().Err(err).Msg("config watcher error; reloading to be safe")
			fire()
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
	err := w.w.Close()
	<-w.done
	return err
}
