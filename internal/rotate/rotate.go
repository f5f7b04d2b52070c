// Package rotate manages an append-only output file that is sealed into
// numbered segments by its owner (the file sink), with retention and
// optional gzip compression of sealed segments.
//
// Layout on disk, for Options.Path = "out/x.jsonl":
//
//	out/x.jsonl              the active segment: always this name
//	out/x.jsonl.000001       sealed segments, numbered in sealing order;
//	out/x.jsonl.000002.gz    with gzip, "<sealed>.gz" replaces "<sealed>"
//
// A sealed name never changes afterwards (except for gaining ".gz"), and
// the sequence continues after the highest number found on disk at Open,
// so names are stable across restarts and usable in checkpoints.
//
// A File is not safe for concurrent use, except Active, which any goroutine
// may call. It starts no goroutines: compression runs synchronously inside
// Rotate.
package rotate

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// seqWidth is the minimum number of digits of a sealed segment's number.
const seqWidth = 6

// Options configures a File. Path is required; everything else is optional.
type Options struct {
	// Path is the active file. Its parent directories are created at Open.
	Path string
	// Keep is the number of sealed segments kept after each rotation (and
	// at Open); older ones are removed. 0 keeps all.
	Keep int
	// Gzip compresses every sealed segment to "<sealed>.gz".
	Gzip bool
	// NoSync disables every fsync (files and directory), for fsync: never.
	NoSync bool
	// Now is the clock used for segment ages; nil means time.Now.
	Now func() time.Time
	// Sync fsyncs a file or directory; nil means (*os.File).Sync. Tests use
	// it to observe the fsync policy.
	Sync func(*os.File) error
	// OnError receives housekeeping errors that lose no data and must not
	// fail a write: compressing or removing sealed segments. Failed
	// compressions are retried at the next Rotate. nil ignores them.
	OnError func(error)
}

// Segment describes the active segment, for checkpoints.
type Segment struct {
	Path string // the active file (Options.Path)
	Seq  uint64 // the number it will be sealed as
	Size int64  // bytes known to be in the file (after the last successful Write)
}

// sealed is a sealed segment found on disk or created by Rotate.
type sealed struct {
	seq uint64
	gz  bool // only "<name>.gz" exists
}

// File is the active segment of a rotating output file plus the list of
// its sealed segments.
type File struct {
	o       Options
	dir     string
	base    string
	f       *os.File // nil after Close, or after a failed reopen
	created time.Time
	dirty   bool // a failed write may have left bytes after size
	closed  bool
	sealed  []sealed

	mu   sync.Mutex // guards seq and size for Active
	seq  uint64     // number of the active segment once sealed
	size int64
}

// Open creates the parent directories of o.Path, scans them for sealed
// segments (removing leftovers of an interrupted compression), opens the
// active file for appending (0644, created if needed), compresses sealed
// segments left uncompressed when Gzip is on, and applies Keep.
//
// A segment's age (see Age) counts from the first byte written to it; for
// a non-empty active file found at Open, from its modification time (the
// best portable approximation), so a restart does not extend its life.
func Open(o Options) (*File, error) {
	if o.Path == "" {
		return nil, errors.New("rotate: empty path")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sync == nil {
		o.Sync = (*os.File).Sync
	}
	r := &File{o: o, dir: filepath.Dir(o.Path), base: filepath.Base(o.Path)}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create directory for %s: %w", o.Path, err)
	}
	if err := r.scan(); err != nil {
		return nil, err
	}
	if err := r.openActive(); err != nil {
		return nil, err
	}
	r.housekeep()
	return r, nil
}

// scan lists the sealed segments in the directory and sets the next
// sequence number after the highest one.
func (r *File) scan() error {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return fmt.Errorf("scan sealed segments of %s: %w", r.o.Path, err)
	}
	found := map[uint64]sealed{}
	var plain []uint64 // numbers with an uncompressed file
	prefix := r.base + "."
	for _, e := range entries {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok || e.IsDir() {
			continue
		}
		if num, ok := strings.CutSuffix(rest, ".gz.tmp"); ok {
			if isDigits(num) {
				// A compression interrupted before its rename: the
				// uncompressed segment is still there; start over.
				_ = os.Remove(filepath.Join(r.dir, name))
			}
			continue
		}
		num, gz := strings.CutSuffix(rest, ".gz")
		if !isDigits(num) {
			continue
		}
		seq, err := strconv.ParseUint(num, 10, 64)
		if err != nil || seq == 0 {
			continue
		}
		if gz {
			found[seq] = sealed{seq: seq, gz: true}
		} else {
			plain = append(plain, seq)
			if _, seen := found[seq]; !seen {
				found[seq] = sealed{seq: seq}
			}
		}
	}
	for _, seq := range plain {
		if found[seq].gz {
			// The .gz was fsynced and renamed before the plain segment is
			// removed, so it is complete: finish the interrupted removal.
			if err := os.Remove(r.sealedName(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove compressed segment: %w", err)
			}
		}
	}
	r.sealed = r.sealed[:0]
	for _, s := range found {
		r.sealed = append(r.sealed, s)
	}
	slices.SortFunc(r.sealed, func(a, b sealed) int { return compareSeq(a.seq, b.seq) })
	r.seq = 1
	if n := len(r.sealed); n > 0 {
		r.seq = r.sealed[n-1].seq + 1
	}
	return nil
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// openActive opens (or creates) the active file for appending.
func (r *File) openActive() error {
	f, err := os.OpenFile(r.o.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err // *PathError: "open PATH: reason"
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return err
	}
	if !st.Mode().IsRegular() {
		_ = f.Close()
		return fmt.Errorf("open %s: not a regular file", r.o.Path)
	}
	r.f, r.dirty = f, false
	r.created = r.o.Now()
	if st.Size() > 0 && st.ModTime().Before(r.created) {
		r.created = st.ModTime()
	}
	r.setSize(st.Size())
	return nil
}

// SealedName returns the name of sealed segment seq of the active file
// path, without ".gz".
func SealedName(path string, seq uint64) string {
	return path + "." + fmt.Sprintf("%0*d", seqWidth, seq)
}

func (r *File) sealedName(seq uint64) string { return SealedName(r.o.Path, seq) }

func (r *File) setSize(n int64) {
	r.mu.Lock()
	r.size = n
	r.mu.Unlock()
}

// Size returns the number of bytes known to be in the active file.
func (r *File) Size() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.size
}

// Age returns how long the active segment has existed.
func (r *File) Age() time.Duration { return r.o.Now().Sub(r.created) }

// Active returns the active segment. It is safe to call from any goroutine.
func (r *File) Active() Segment {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Segment{Path: r.o.Path, Seq: r.seq, Size: r.size}
}

// Write appends all of p to the active file, or nothing: when the write
// fails (for example ENOSPC after part of p reached the disk), the file is
// truncated back to its size before the call, so the caller may retry with
// the same bytes and the file never holds a partial line. Write returns
// (0, err) on failure; a truncation that also fails is retried before the
// next write, which fails until it succeeds.
func (r *File) Write(p []byte) (int, error) {
	if err := r.ready(); err != nil {
		return 0, err
	}
	if r.Size() == 0 {
		// A segment's age counts from its first byte, so a segment opened
		// long before its first line is not sealed right after it.
		r.created = r.o.Now()
	}
	n, err := r.f.Write(p)
	if err != nil {
		r.dirty = true
		r.cleanup()
		return 0, err
	}
	r.mu.Lock()
	r.size += int64(n)
	r.mu.Unlock()
	return n, nil
}

// ready makes the active file writable: reopens it after a failed
// rotation and truncates the remains of a failed write.
func (r *File) ready() error {
	if r.closed {
		return fmt.Errorf("write %s: %w", r.o.Path, os.ErrClosed)
	}
	if r.f == nil {
		if err := r.openActive(); err != nil {
			return err
		}
	}
	if r.dirty {
		if err := r.cleanup(); err != nil {
			return err
		}
	}
	return nil
}

func (r *File) cleanup() error {
	if err := r.f.Truncate(r.Size()); err != nil {
		return fmt.Errorf("truncate %s back to %d bytes after a failed write: %w", r.o.Path, r.Size(), err)
	}
	r.dirty = false
	return nil
}

// Sync fsyncs the active file (unless NoSync).
func (r *File) Sync() error {
	if r.o.NoSync {
		return nil
	}
	if err := r.ready(); err != nil {
		return err
	}
	if err := r.o.Sync(r.f); err != nil {
		return fmt.Errorf("fsync %s: %w", r.o.Path, err)
	}
	return nil
}

func (r *File) syncDir() error {
	if r.o.NoSync {
		return nil
	}
	d, err := os.Open(r.dir)
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", r.dir, err)
	}
	defer d.Close()
	if err := r.o.Sync(d); err != nil {
		return fmt.Errorf("fsync directory %s: %w", r.dir, err)
	}
	return nil
}

// Rotate seals the active segment, if it is not empty: fsync (unless
// NoSync), rename to SealedName(path, seq), open a new empty active file,
// fsync the directory. Then it compresses the sealed segments not yet
// compressed (when Gzip) and removes the oldest beyond Keep; errors of
// those two steps go to OnError and do not fail Rotate.
//
// On error nothing is lost: either the segment is not sealed and remains
// the active file, or it is sealed and a new active file is (re)opened by
// the next Write.
func (r *File) Rotate() error {
	if err := r.ready(); err != nil {
		return err
	}
	if r.Size() == 0 {
		return nil
	}
	if err := r.Sync(); err != nil {
		return err
	}
	seq := r.Active().Seq
	name := r.sealedName(seq)
	if _, err := os.Lstat(name); err == nil {
		return fmt.Errorf("seal %s: %s already exists", r.o.Path, name)
	}
	if err := os.Rename(r.o.Path, name); err != nil {
		return fmt.Errorf("seal %s: %w", r.o.Path, err)
	}
	// The open descriptor now refers to the sealed segment.
	cerr := r.f.Close()
	r.f = nil
	r.sealed = append(r.sealed, sealed{seq: seq})
	r.mu.Lock()
	r.seq, r.size = seq+1, 0
	r.mu.Unlock()
	if cerr != nil {
		return fmt.Errorf("close sealed segment %s: %w", name, cerr)
	}
	if err := r.openActive(); err != nil {
		return err
	}
	if err := r.syncDir(); err != nil {
		return err
	}
	r.housekeep()
	return nil
}

// housekeep compresses pending sealed segments and applies Keep.
func (r *File) housekeep() {
	report := func(err error) {
		if err != nil && r.o.OnError != nil {
			r.o.OnError(err)
		}
	}
	// Prune first: no point compressing segments about to be removed.
	report(r.prune())
	if !r.o.Gzip {
		return
	}
	for i := range r.sealed {
		if r.sealed[i].gz {
			continue
		}
		if err := r.compress(r.sealed[i].seq); err != nil {
			report(err)
			return // likely the same cause for the next one; retry at the next rotation
		}
		r.sealed[i].gz = true
	}
}

// prune removes the oldest sealed segments beyond Keep.
func (r *File) prune() error {
	if r.o.Keep <= 0 || len(r.sealed) <= r.o.Keep {
		return nil
	}
	var errs []error
	drop := len(r.sealed) - r.o.Keep
	kept := r.sealed[:0:0]
	for i, s := range r.sealed {
		if i >= drop {
			kept = append(kept, s)
			continue
		}
		name := r.sealedName(s.seq)
		if s.gz {
			name += ".gz"
		}
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove old segment: %w", err))
			kept = append(kept, s)
		}
	}
	r.sealed = kept
	return errors.Join(errs...)
}

// compress writes SealedName(seq)+".gz" through a temporary name (fsynced,
// then renamed, then the directory fsynced) and removes the uncompressed
// segment.
func (r *File) compress(seq uint64) (err error) {
	src := r.sealedName(seq)
	dst := src + ".gz"
	tmp := dst + ".tmp"
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
			err = fmt.Errorf("compress %s: %w", src, err)
		}
	}()
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if out != nil {
			_ = out.Close()
		}
	}()
	// BestSpeed: compression runs in the sink's writer goroutine and holds
	// back writes while it runs.
	zw, err := gzip.NewWriterLevel(out, gzip.BestSpeed)
	if err != nil {
		return err
	}
	zw.Name, zw.ModTime = filepath.Base(src), st.ModTime()
	if _, err := io.Copy(zw, in); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if !r.o.NoSync {
		if err := r.o.Sync(out); err != nil {
			return err
		}
	}
	cerr := out.Close()
	out = nil
	if cerr != nil {
		return cerr
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	if err := r.syncDir(); err != nil {
		return err
	}
	if err := os.Remove(src); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Close closes the active file without syncing it (call Sync first when the
// policy asks for it). It is idempotent.
func (r *File) Close() error {
	r.closed = true
	if r.f == nil {
		return nil
	}
	if r.dirty {
		_ = r.cleanup()
	}
	err := r.f.Close()
	r.f = nil
	if err != nil {
		return fmt.Errorf("close %s: %w", r.o.Path, err)
	}
	return nil
}

// Reattach checks that the active path still names the open file. When
// the file was deleted or moved away, or its directory removed, behind
// the owner's back, it reopens the path (recreating the directories) so
// that writing continues where users look, and reports true. Lines
// written to the vanished file stay there: removing output is the
// remover's choice. Errors leave the file detached; the next Write or
// Reattach tries again.
func (r *File) Reattach() (bool, error) {
	if r.closed {
		return false, nil
	}
	if r.f != nil {
		fi, err := os.Stat(r.o.Path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, nil // cannot tell; keep writing
		}
		if err == nil {
			if ofi, serr := r.f.Stat(); serr != nil || os.SameFile(fi, ofi) {
				return false, nil
			}
		}
		_ = r.f.Close()
		r.f = nil
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return true, fmt.Errorf("recreate directory for %s: %w", r.o.Path, err)
	}
	if err := r.openActive(); err != nil {
		return true, err
	}
	return true, r.syncDir()
}

// Owns reports whether name is one of the files a File with Options.Path
// active creates: the active file itself, a sealed segment (with or without
// ".gz"), or one of the temporary files of compression and recovery. Both
// paths are compared as given: clean them alike.
func Owns(active, name string) bool {
	rest, ok := strings.CutPrefix(name, active)
	if !ok {
		return false
	}
	if rest == "" || rest == ".recover.tmp" {
		return true
	}
	rest, ok = strings.CutPrefix(rest, ".")
	if !ok {
		return false
	}
	rest = strings.TrimSuffix(rest, ".gz.tmp")
	rest = strings.TrimSuffix(rest, ".gz")
	return isDigits(rest)
}
