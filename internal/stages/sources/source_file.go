package sources

import (
	"cmp"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/fswatch"
	"github.com/etld/etld/internal/stages"
)

// FileConfig is the config of the `file` source.
type FileConfig struct {
	Path         string          `yaml:"path" doc:"files to read: a path or a glob, relative to the pipeline file"`
	Follow       bool            `yaml:"follow" doc:"keep reading like tail -F (rotation, truncation, new files); false reads every file once and ends"`
	StartAt      string          `yaml:"start_at" doc:"where to start in a file with no checkpoint: beginning or end"`
	MaxLineBytes stages.ByteSize `yaml:"max_line_bytes" doc:"longest line; a longer line is a bad record that keeps its first max_line_bytes bytes"`
	Exclude      []string        `yaml:"exclude" doc:"globs of files never read although path matches them, relative to the pipeline file like path (a * does not cross a /); the daemon's own outputs are always skipped"`
	MaxOpenFiles int             `yaml:"max_open_files" doc:"most files kept open at once when following; beyond it the least recently written ones are closed and opened again (same device, inode and first bytes) when they change, so a glob may match more files than the descriptor limit; a closed file deleted, or renamed out of the watched directories (or without inotify), before it changes again loses the lines written after it was closed"`
	Multiline    MultilineConfig `yaml:"multiline" doc:"join consecutive lines into one record, such as a stack trace with the line before it (off by default); the record's lines are separated by \\n and it is one record for max_line_bytes"`
}

// Values of FileConfig.StartAt.
const (
	StartAtBeginning = "beginning"
	StartAtEnd       = "end"
)

// pollInterval is how often a following file source looks for new, rotated
// and truncated files even without a filesystem notification.
var pollInterval = 250 * time.Millisecond

// NewFileConfig returns a FileConfig with its defaults.
func NewFileConfig() *FileConfig {
	return &FileConfig{Follow: true, StartAt: StartAtBeginning, MaxLineBytes: defaultMaxLineBytes, MaxOpenFiles: defaultMaxOpenFiles, Multiline: newMultilineConfig()}
}

// Validate implements stages.Validator.
func (c *FileConfig) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, stages.FieldErr("path", errors.New("is required")))
	} else if _, err := filepath.Match(c.Path, ""); err != nil {
		errs = append(errs, stages.FieldErr("path", fmt.Errorf("invalid glob %q: %w", c.Path, err)))
	}
	if c.StartAt != StartAtBeginning && c.StartAt != StartAtEnd {
		errs = append(errs, stages.FieldErr("start_at", fmt.Errorf("must be %q or %q, got %q", StartAtBeginning, StartAtEnd, c.StartAt)))
	}
	if err := validateMaxLineBytes(c.MaxLineBytes); err != nil {
		errs = append(errs, err)
	}
	if c.MaxOpenFiles <= 0 {
		errs = append(errs, stages.FieldErr("max_open_files", fmt.Errorf("must be > 0, got %d", c.MaxOpenFiles)))
	}
	for i, pat := range c.Exclude {
		if pat == "" {
			errs = append(errs, stages.FieldErr(fmt.Sprintf("exclude[%d]", i), errors.New("want a glob, got an empty string")))
		} else if _, err := filepath.Match(pat, ""); err != nil {
			errs = append(errs, stages.FieldErr(fmt.Sprintf("exclude[%d]", i), fmt.Errorf("invalid glob %q: %w", pat, err)))
		}
	}
	errs = append(errs, c.Multiline.validate())
	return errors.Join(errs...)
}

// ResolvePaths implements stages.PathResolver.
func (c *FileConfig) ResolvePaths(dir string) {
	if c.Path != "" && !filepath.IsAbs(c.Path) {
		c.Path = filepath.Join(dir, c.Path)
	}
	for i, pat := range c.Exclude {
		if pat != "" && !filepath.IsAbs(pat) {
			c.Exclude[i] = filepath.Join(dir, pat)
		}
	}
}

// MatchesInput implements stages.InputMatcher: path matches the glob and
// no exclude pattern.
func (c *FileConfig) MatchesInput(path string) bool {
	ok, err := filepath.Match(c.Path, path)
	return ok && err == nil && !c.excluded(path)
}

// excluded reports whether path matches an exclude pattern.
func (c *FileConfig) excluded(path string) bool {
	for _, pat := range c.Exclude {
		if ok, _ := filepath.Match(pat, path); ok {
			return true
		}
	}
	return false
}

// Finite implements stages.Finiter: a file source ends only when it does not
// follow its files.
func (c *FileConfig) Finite() bool { return !c.Follow }

func init() {
	register(stages.Factory{
		Kind:      stages.KindSource,
		Type:      "file",
		Doc:       "Reads lines from the files matching a glob, once or following them like tail -F.",
		NewConfig: func() any { return NewFileConfig() },
		NewSource: func(s stages.Settings, cfg any) (stages.Source, error) {
			c, ok := cfg.(*FileConfig)
			if !ok {
				return nil, fmt.Errorf("file source %q: config is %T, want *FileConfig", s.ID, cfg)
			}
			return NewFileSource(s, c), nil
		},
	})
}

// FileSource reads lines from the files matching a glob.
//
// With Follow false it reads each matching file (sorted by path) to its end,
// a last line without a newline included, and then Read returns
// stages.ErrEndOfInput. With Follow true it tails the files like `tail -F`:
// it waits for data with inotify watches on their directories (through
// the daemon's shared instance, Settings.Watcher) and a poll ticker; picks
// up new files matching the glob (from their beginning);
// reads a file renamed away (rotation) until it is drained, then closes it;
// restarts a file at offset 0 when it shrinks below the read offset or its
// first bytes change (copytruncate); and identifies files by device, inode
// and a fingerprint of their first bytes, so a rotated file that still
// matches the glob is not read twice. A last line without a newline waits
// for its newline, except in a file that is rotated away or deleted.
//
// Records share one Origin per file, whose Path is the name under which the
// file was discovered; Offset is the byte offset of the line in that file.
//
// Read, Open and Close are called from one goroutine (the runtime's);
// Positions may be called concurrently with them.
type FileSource struct {
	cfg      FileConfig
	settings stages.Settings
	log      zerolog.Logger
	clk      clock // for the multiline timeout

	mu    sync.Mutex             // guards files and their positions, for Positions
	files []*tailedFile          // finite: sorted by path; follow: in discovery order
	byID  map[fileID]*tailedFile // open files (follow) or opened files (finite)
	next  int                    // finite: index of the file being read; follow: round-robin start
	// known holds positions of files not open now: given by SetPositions,
	// or of files closed after rotation or deletion. A file found again
	// with the same identity and fingerprint resumes there instead of being
	// read again (a rotated file can reappear under a matching name, and a
	// rename can race with the directory scan). Bounded by maxKnown.
	known    map[fileID]knownPosition
	knownSeq uint64
	restored int // entries of known from SetPositions (seq 0)

	openFailed map[string]bool // files that could not be opened, logged once
	ownSkipped map[string]bool // own outputs found by the glob, logged once; bounded by maxOwnSkipped

	spare  []byte        // an idle read buffer, handed to the next splitter that needs one
	pinned []*tailedFile // files to release once the batch is finished (see release)
	bb     batchBuilder
	runs   bool // SetLineRuns: a file read once goes out as line runs

	gate  stages.FeedGate // set when the source feeds an ordered merge
	ended []string        // feeds whose last file was closed in this pass

	// queue holds the followed files a pass reads: those a notification
	// named, those polled by the tick, and those that must be visited
	// again (batch full, held back, rotated away, pending multiline
	// record). A pass costs what changed, not how many files there are.
	queue    []*tailedFile
	byPath   map[string]*tailedFile // followed files by current name, to map notifications
	pollNext int                    // round-robin start of the tick's bounded poll
	lru      *list.List             // open followed files, most recently active first (max_open_files)
	fdWarned bool                   // out of file descriptors was logged

	watchLimitWarned bool // the inotify watch limit was logged
	// moving holds the names to which followMoves followed a file
	// renamed away from a matching name: its next rename may come in a
	// later notification (the file gone from the name when the source
	// looked). Dropped after movingTicks; bounded by maxMoving.
	moving       map[string]movingFile
	movingSeq    int  // the next movingFile.seq
	movingWarned bool // maxMoving was reached and logged
	ticks        int  // ticks since Open, to pace the full rescan
	stateSize    int  // length of the last State, to size the next

	own     *fswatch.Watcher // opened by Open when Settings gave none
	sub     *fswatch.Sub     // nil without inotify: polling only
	watched map[string]bool  // false: cannot be watched, logged
	local   map[string]bool  // watched directories on a filesystem whose writes inotify always reports (localFS)
	ticker  *time.Ticker

	opened, closed bool
}

// maxKnown bounds the positions a file source remembers for files it does
// not have open.
const maxKnown = 1024

// knownPosition is a remembered position and its insertion order.
type knownPosition struct {
	FilePosition
	seq uint64
}

// NewFileSource returns a file source for cfg (validated, paths resolved).
// It does no I/O: Open does.
func NewFileSource(s stages.Settings, cfg *FileConfig) *FileSource {
	return newFileSource(s, cfg, realClock{})
}

// newFileSource is NewFileSource with a given clock.
func newFileSource(s stages.Settings, cfg *FileConfig, clk clock) *FileSource {
	return &FileSource{
		clk:      clk,
		cfg:      *cfg,
		settings: s,
		log:      s.Logger.With().Str("path", cfg.Path).Logger(),
		byID:     map[fileID]*tailedFile{},
		byPath:   map[string]*tailedFile{},
		watched:  map[string]bool{},
		local:    map[string]bool{},
		moving:   map[string]movingFile{},
	}
}

// SetPositions makes the source resume the given files (as returned by
// Positions before a restart) instead of applying start_at. A position is
// used only for a file with the same device, inode and fingerprint; an
// offset beyond the file's size (truncated while etld was down) restarts
// it at 0. Call it before Open.
func (s *FileSource) SetPositions(ps []FilePosition) {
	for _, p := range ps {
		id := fileID{dev: p.Dev, ino: p.Inode}
		if p.Dev == 0 && p.Inode == 0 {
			id.path = p.Path
		}
		if s.known == nil {
			s.known = map[fileID]knownPosition{}
		}
		if _, dup := s.known[id]; !dup {
			s.restored++
		}
		s.known[id] = knownPosition{FilePosition: p} // seq 0: never evicted
	}
}

// remember records the position of a file that is not open, evicting the
// oldest remembered position beyond maxKnown. Positions given to
// SetPositions are not counted nor evicted: a checkpoint of more files
// than maxKnown must resume every one of them, or lines repeat.
func (s *FileSource) remember(id fileID, p FilePosition) {
	if s.known == nil {
		s.known = map[fileID]knownPosition{}
	}
	s.forget(id)
	s.knownSeq++
	s.known[id] = knownPosition{FilePosition: p, seq: s.knownSeq}
	if len(s.known)-s.restored <= maxKnown {
		return
	}
	oldest, first := fileID{}, true
	var oldestSeq uint64
	for k, v := range s.known {
		if v.seq == 0 {
			continue
		}
		if first || v.seq < oldestSeq {
			oldest, oldestSeq, first = k, v.seq, false
		}
	}
	delete(s.known, oldest)
}

// Positions returns the resumable state of every file opened so far (those
// closed for max_open_files included), plus the remembered positions of
// files closed after rotation or deletion (at most maxKnown of them,
// newest kept) and of positions given to SetPositions whose file was not
// found again. Offsets cover exactly the
// batches already returned by Read. Safe for concurrent use with Read.
func (s *FileSource) Positions() []FilePosition {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]FilePosition, 0, len(s.files)+len(s.known))
	for _, t := range s.files {
		if t.hasPosition() {
			out = append(out, t.position())
		}
	}
	for _, k := range s.known {
		out = append(out, k.FilePosition)
	}
	return out
}

// Open lists the matching files; when following, it also starts watching
// their directories and opens the files.
func (s *FileSource) Open(ctx context.Context) error {
	if s.opened {
		return errors.New("file source: opened twice")
	}
	s.opened = true
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cfg.Follow {
		matches, err := filepath.Glob(s.cfg.Path)
		if err != nil {
			return fmt.Errorf("file source: glob %q: %w", s.cfg.Path, err)
		}
		for _, p := range matches {
			if s.skip(p) {
				continue
			}
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				s.files = append(s.files, &tailedFile{path: p})
				if s.gate != nil {
					s.gate.Register(p)
				}
			}
		}
		if len(s.files) == 0 {
			s.log.Warn().Msg("no file matches the path; the source ends at once")
		}
		return nil
	}
	fsw := s.settings.Watcher // inactive: the daemon polls, and said so
	if fsw == nil {
		w, err := fswatch.New(s.log)
		if err != nil {
			s.log.Warn().Err(err).Msg("cannot watch the files' directories; polling them only")
		}
		s.own, fsw = w, w
	}
	s.sub = fsw.SubscribeNames(nil)
	s.ticker = time.NewTicker(pollInterval)
	s.rescan(true)
	return nil
}

// Read returns the next batch: up to ~1024 records or ~256 KiB of lines,
// as soon as some are available. See FileSource for the semantics.
func (s *FileSource) Read(ctx context.Context) (*stages.Batch, error) {
	if !s.opened || s.closed {
		return nil, errors.New("file source: read before open or after close")
	}
	switch {
	case s.cfg.Follow:
		return s.readFollow(ctx)
	case s.gate != nil:
		return s.readOnceGated(ctx)
	}
	return s.readOnce(ctx)
}

// SetLineRuns lets the batches of a file read once (follow: false) hold
// their lines as runs (see stages.LineRunSource): the runtime's call,
// before Open, when nothing downstream looks at a record on its way to
// the sinks. Followed files and a source feeding an ordered merge send
// Records.
func (s *FileSource) SetLineRuns(on bool) { s.runs = on }

// readOnce reads the files one after the other to their end.
func (s *FileSource) readOnce(ctx context.Context) (*stages.Batch, error) {
	// Reading a regular file does not block, so ctx is checked once: a
	// batch, once started, is always delivered, which keeps Positions
	// equal to what was delivered.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bb.start()
	s.bb.runs = s.runs
	retry := false
	for s.next < len(s.files) && !s.bb.full() {
		t := s.files[s.next]
		ready, skip := s.openForOnce(t)
		if skip {
			s.next++
			continue
		}
		if !ready {
			// Unreadable: retry, holding back the files after it so
			// that none is skipped.
			retry = true
			break
		}
		eof, err := s.pump(t)
		if err != nil {
			b := s.finishBatch()
			if b != nil {
				return b, nil // deliver what was read; the error recurs on the next Read
			}
			return nil, fmt.Errorf("file source: %w", err)
		}
		if !eof {
			break // batch full
		}
		s.takeFinal(t)
		s.release(t)
		if err := t.close(); err != nil {
			s.log.Warn().Err(err).Str("file", t.path).Msg("close input file")
		}
		s.next++
	}
	if b := s.finishBatch(); b != nil {
		return b, nil
	}
	if retry {
		s.mu.Unlock()
		t := time.NewTimer(openRetry)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		s.mu.Lock()
		return nil, ctx.Err()
	}
	return nil, stages.ErrEndOfInput
}

// openForOnce opens a file of a finite source for its turn, if it is not
// open yet. ready: it can be read. skip: it was deleted, or it is a second
// name (hard link) of a file already read; it is logged. Neither: it
// cannot be read now (permissions, I/O error), logged once per episode.
func (s *FileSource) openForOnce(t *tailedFile) (ready, skip bool) {
	if t.f != nil {
		return true, false
	}
	if err := s.open(t, t.path, true); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.log.Warn().Str("file", t.path).Msg("file deleted before it was read; skipping it")
			return false, true
		}
		if s.warnOpen(t.path, err) {
			s.log.Warn().Err(err).Str("file", t.path).Dur("retry_every", openRetry).Msg("cannot read file; retrying until it can be read")
		}
		return false, false
	}
	s.openOK(t.path)
	if s.byID[t.id] != t {
		t.close()
		return false, true
	}
	return true, false
}

// openRetry is how often an unreadable input file is tried again.
var openRetry = time.Second

// warnOpen records that path cannot be opened; it reports true the first
// time in a row, so each fault is logged once per episode.
func (s *FileSource) warnOpen(path string, err error) bool {
	if s.openFailed == nil {
		s.openFailed = map[string]bool{}
	}
	first := !s.openFailed[path]
	s.openFailed[path] = true
	return first
}

// openOK ends an unreadable-file episode.
func (s *FileSource) openOK(path string) {
	if s.openFailed[path] {
		delete(s.openFailed, path)
		s.log.Info().Str("file", path).Msg("file readable again")
	}
}

// readFollow tails the files: it returns what is available, else waits for
// a notification, a poll tick or ctx.
func (s *FileSource) readFollow(ctx context.Context) (*stages.Batch, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var changed <-chan struct{}
		if s.gate != nil {
			changed = s.gate.Changed() // before reading, so no change is missed
		}
		s.mu.Lock()
		s.pollPending()
		s.bb.start()
		feed := s.pass()
		b := s.finishBatch()
		if b != nil && s.gate != nil {
			s.gate.Take(feed, b)
		}
		for _, f := range s.ended {
			s.gate.End(f) // a new file under its name registers it again
		}
		s.ended = s.ended[:0]
		s.mu.Unlock()
		if b != nil {
			return b, nil
		}
		var timeout <-chan time.Time
		stop := func() bool { return false }
		if d, ok := s.untilTimeout(); ok {
			timeout, stop = s.clk.After(d)
		}
		select {
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-timeout: // the next pass emits the record
		case <-changed:
		case <-s.sub.C():
			s.mu.Lock()
			if s.notified() {
				s.rescan(false)
			}
			s.mu.Unlock()
		case <-s.ticker.C:
			s.mu.Lock()
			s.tick()
			s.mu.Unlock()
		}
		stop()
	}
}

// untilTimeout returns how long until the earliest multiline timeout of
// a file with a pending record that pass would read; ok is false when
// there is none. It takes mu.
func (s *FileSource) untilTimeout() (d time.Duration, ok bool) {
	if !s.cfg.Multiline.on() {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clk.Now()
	for _, t := range s.queue { // a file with a pending record at EOF stays queued
		if !t.sp.hasPending() || !t.atEOF || s.heldBack(t) { // pass flushes at EOF only
			continue
		}
		left := max(t.lastData.Add(s.cfg.Multiline.Timeout).Sub(now), 0)
		if !ok || left < d {
			d, ok = left, true
		}
	}
	return d, ok
}

// timedOut reports whether t's pending multiline record has waited its
// timeout without new data.
func (s *FileSource) timedOut(t *tailedFile) bool {
	return t.sp.hasPending() && !s.clk.Now().Before(t.lastData.Add(s.cfg.Multiline.Timeout))
}

// structural reports whether events may have changed which files match.
func structural(ops fsnotify.Op) bool {
	return ops&(fsnotify.Create|fsnotify.Remove|fsnotify.Rename) != 0
}

// pollPending handles, without blocking, the notifications and tick that
// arrived while Read was busy, so a busy source still sees rotations.
func (s *FileSource) pollPending() {
	select {
	case <-s.sub.C(): // Take covers what it signals
	default:
	}
	rescan := s.notified()
	tick := false
	select {
	case <-s.ticker.C:
		tick = true
	default:
	}
	if tick && s.tick() {
		return // rescanned
	}
	if rescan {
		s.rescan(false)
	}
}

// notified takes the subscription's notifications: it queues the files
// they name, opens the files renamed away before they were seen (see
// followMoves), and reports whether the glob must be matched again (a
// file was created, renamed or removed, an unknown matching file was
// written, or events were lost, which also queues every file).
func (s *FileSource) notified() (rescan bool) {
	c := s.sub.TakeChanges()
	if c.All {
		for _, t := range s.files {
			s.markDirty(t)
		}
		return true
	}
	s.followMoves(c.Moves)
	for name, op := range c.Names {
		if t := s.byPath[name]; t != nil && (t.f != nil || t.parked) {
			s.markDirty(t)
		} else if op&fsnotify.Write != 0 && s.cfg.MatchesInput(name) {
			rescan = true // written before its creation was seen
		}
	}
	return rescan || structural(c.Ops)
}

// followMoves finds, among renames, the files that were created under a
// name the glob matches and renamed to one it does not match before the
// source looked: a logger that rotates twice while the source is busy
// (or between two paced reads of inotify) leaves the file of the first
// rotation under app.log.1, which the glob "app.log" never lists. Each
// such file not read yet is opened, under the name it had (its records'
// Origin), read from its start and closed once drained, like any file
// rotated away; files it reads already get their new name (see
// openEscaped). A file renamed more than once is followed to its last
// name, also when the renames come in separate notifications (see
// moving), and files are opened in the order they left the matching
// name. A name created or removed meanwhile ends what is followed
// through it: the file there is not the one renamed.
//
// A file renamed into a directory the source does not watch, or deleted,
// before the source looked is not found: its lines are lost, as with
// tail -F.
func (s *FileSource) followMoves(moves []fswatch.Move) {
	if len(moves) == 0 {
		return
	}
	held := map[string]movingFile{} // name now -> the file's chain, from this notification
	for _, m := range moves {
		if m.From == "" || m.To == "" { // created or removed
			delete(held, m.From+m.To)
			delete(s.moving, m.From+m.To)
			continue
		}
		c, ok := held[m.From] // renamed again
		delete(held, m.From)
		if !ok {
			if c, ok = s.moving[m.From]; ok { // renamed again, seen in an earlier notification
				delete(s.moving, m.From)
			}
		}
		if !ok && s.cfg.MatchesInput(m.From) && !s.skip(m.From) {
			c, ok = movingFile{from: m.From, seq: s.movingSeq}, true
			s.movingSeq++
		}
		delete(held, m.To) // replaced by the file renamed there
		delete(s.moving, m.To)
		if ok {
			held[m.To] = c
		}
	}
	names := slices.SortedFunc(maps.Keys(held), func(a, b string) int { return cmp.Compare(held[a].seq, held[b].seq) })
	for _, to := range names {
		c := held[to]
		if !s.cfg.MatchesInput(to) { // a rescan finds the others
			s.openEscaped(to, c.from)
		}
		// Kept, found or not, for a rename of the same file in a later
		// notification.
		if len(s.moving) >= maxMoving {
			if !s.movingWarned {
				s.movingWarned = true
				s.log.Warn().Int("names", maxMoving).Msg("too many renamed files to follow at once; a file renamed away again before it was read may be missed")
			}
			continue
		}
		c.tick = s.ticks
		s.moving[to] = c
	}
}

// movingFile is how followMoves follows a file renamed away from the
// matching name from: seq orders the files by when they left it; tick is
// when an entry of FileSource.moving was made.
type movingFile struct {
	from      string
	seq, tick int
}

// maxMoving bounds FileSource.moving.
const maxMoving = 1024

// movingTicks is how many ticks an entry of FileSource.moving waits for
// a rename of its file in a later notification: the two halves of a
// rename come together, but a loaded host may deliver the next rename
// seconds later.
const movingTicks = 20

// openEscaped opens the file now at path, renamed away from the matching
// name from (see followMoves). A file read already, and now at path,
// takes path as its name, so that a file closed for max_open_files is
// opened again where it is and the checkpoint names it where it is.
func (s *FileSource) openEscaped(path, from string) {
	if s.skip(path) {
		return
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	if t := s.byID[identityOf(fi, path)]; t != nil { // read already: the rescan marks it gone
		s.rename(t, path)
		return
	}
	t := &tailedFile{}
	if err := s.open(t, path, false); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn().Err(err).Str("file", path).Str("was", from).Msg("cannot read a file renamed away before it was read")
		}
		return
	}
	if s.byID[t.id] != t { // replaced between Stat and Open by a file we read
		t.close()
		return
	}
	t.origin.Path = from // the name it was written under
	t.gone, t.goneTicks = true, 0
	s.track(t, path)
	s.log.Info().Str("file", path).Str("was", from).Int64("offset", t.sp.resume()).
		Msg("file renamed away before it was read; reading it to its end")
}

// markDirty queues t for the next pass.
func (s *FileSource) markDirty(t *tailedFile) {
	if !t.queued {
		t.queued = true
		s.queue = append(s.queue, t)
	}
}

// pollPerTick bounds the files the tick checks (truncation) and reads
// without a notification, round-robin: a filesystem whose writes inotify
// does not report (NFS, some overlay cases) is still read, every
// len(files)/pollPerTick ticks, at a cost per tick that does not grow
// with the number of files.
var pollPerTick = 256

// fullScanTicks is how many ticks apart the glob is matched again while
// inotify covers every directory and no file is rotated away (a missed
// creation is found then); without inotify, every tick.
const fullScanTicks = 20

// trustedScanTicks replaces fullScanTicks, for the rescan and for the
// tick's bounded poll, when every directory is watched on a local
// filesystem (localFS): there inotify reports every creation, write and
// truncation, so both are only a safety net, and at 10,000 files they
// were a fifth of the source's CPU (a glob and 10,000 stats every 5 s, a
// stat and a fingerprint read of 1,024 files a second).
const trustedScanTicks = 240

// trustFS is localFS; tests replace it to see the poll of a filesystem
// whose writes inotify misses.
var trustFS = localFS

// poll queues t to be read; a parked file only when its name shows a
// change (size other than the offset read, or another file), so polling
// does not reopen idle files.
func (s *FileSource) poll(t *tailedFile) {
	if t.parked {
		fi, err := os.Stat(t.path)
		if err == nil && fi.Size() == t.readPos() && identityOf(fi, t.path) == t.id {
			return
		}
	}
	s.markDirty(t)
}

// tick is the periodic check: new and vanished files, truncation, aging of
// rotated files, and the bounded poll. It reports whether it matched the
// glob again.
func (s *FileSource) tick() (rescanned bool) {
	s.ticks++
	for name, mv := range s.moving {
		if s.ticks-mv.tick > movingTicks {
			delete(s.moving, name)
		}
	}
	unwatched := s.sub == nil
	for _, ok := range s.watched {
		unwatched = unwatched || !ok
	}
	gone := false
	for _, t := range s.files {
		gone = gone || t.gone
	}
	// trusted: inotify reports everything here; the rescan and the poll
	// run at the slow pace of a safety net.
	trusted := !unwatched && len(s.local) == len(s.watched)
	every := fullScanTicks
	if trusted {
		every = trustedScanTicks
	}
	if unwatched || gone || s.ticks%every == 0 {
		// Age gone files before the rescan: a file must stay unseen by a
		// whole rescan after the one that marked it gone before it is
		// closed.
		for _, t := range s.files {
			if t.gone {
				t.goneTicks++
			}
		}
		s.rescan(false)
		rescanned = true
	}
	n := len(s.files)
	if s.sub == nil {
		for _, t := range s.files {
			s.poll(t) // no notifications: poll every file, as before
		}
	} else if unwatched {
		for _, t := range s.files {
			if !s.watched[filepath.Dir(t.path)] {
				s.poll(t)
			}
		}
	}
	if trusted && s.ticks%fullScanTicks != 0 {
		return rescanned
	}
	for k := 0; k < min(n, pollPerTick); k++ {
		t := s.files[(s.pollNext+k)%n]
		if t.f != nil {
			s.checkTruncated(t)
		}
		s.poll(t)
	}
	if n > 0 {
		s.pollNext = (s.pollNext + min(n, pollPerTick)) % n
	}
	return rescanned
}

// pass reads the queued files (see FileSource.queue) in queue order into
// the batch until it is full or no queued file has a complete line; it
// closes rotated or deleted files once drained. A file still to be read
// goes back to the queue, behind the others. With a feed gate, the batch
// takes lines of one file only, whose feed pass returns.
func (s *FileSource) pass() (feed string) {
	q := s.queue
	s.queue = nil
	var again []*tailedFile // visited, to be visited again: after the rest of q
	requeue := func(t *tailedFile) { t.queued = true; again = append(again, t) }
	closed := false
	k := 0
	for ; k < len(q) && !s.bb.full(); k++ {
		t := q[k]
		t.queued = false
		if t.parked {
			ok, lost := s.unpark(t)
			if lost {
				s.dropLost(t)
				closed = true
			}
			if !ok {
				continue
			}
		}
		if t.f == nil {
			continue // closed since it was queued
		}
		if s.heldBack(t) {
			requeue(t)
			continue
		}
		before := len(s.bb.b.Records) + len(s.bb.b.Rejects)
		pos := t.readPos()
		eof, err := s.pump(t)
		t.atEOF = err == nil && eof
		if t.atEOF && s.timedOut(t) {
			s.bb.addFlushed(&t.sp, t.origin)
		}
		took := len(s.bb.b.Records)+len(s.bb.b.Rejects) > before
		if took && s.gate != nil {
			feed = feedOf(t)
		}
		if t.readPos() != pos {
			s.lruTouch(t)
		}
		if err != nil {
			if msg := err.Error(); msg != t.lastErr {
				t.lastErr = msg
				s.log.Warn().Err(err).Msg("read error; retrying at the next poll")
			}
			if t.gone {
				requeue(t)
			}
			if took && s.gate != nil {
				k++
				break // one feed per batch
			}
			continue
		}
		t.lastErr = ""
		if !eof {
			requeue(t) // batch full: the others come first next time
			k++
			break
		}
		if !took && t.readPos() == pos && !t.gone {
			// Notified but nothing new: the file may have been truncated
			// (copytruncate) below what was read.
			if s.checkTruncated(t) {
				requeue(t)
			}
		}
		// A rotated or deleted file is closed once drained, at least one
		// poll tick after it went: a writer may still append to it shortly
		// after the rename.
		if t.gone && t.goneTicks >= 1 {
			s.takeFinal(t)
			s.log.Info().Str("file", t.path).Int64("offset", t.sp.resume()).Msg("closing a rotated or deleted file read to its end")
			if err := t.close(); err != nil {
				s.log.Warn().Err(err).Str("file", t.path).Msg("close input file")
			}
			s.lruRemove(t)
			s.remember(t.id, t.position())
			closed = true
			if s.gate != nil && !s.feedOpen(feedOf(t), t) {
				s.ended = append(s.ended, feedOf(t)) // ended after this batch's ticket
			}
		} else if t.gone || (t.sp.hasPending() && s.cfg.Multiline.on()) {
			requeue(t) // to be closed, or its record flushed at its timeout
		}
		s.release(t)
		if s.gate != nil && len(s.bb.b.Records)+len(s.bb.b.Rejects) > before {
			feed = feedOf(t) // takeFinal may have added the last line
			k++
			break // one feed per batch
		}
	}
	// Unvisited files first, then the visited ones, then those queued
	// meanwhile.
	s.queue = slices.Concat(q[k:], again, s.queue)
	if closed {
		kept := s.files[:0]
		for _, t := range s.files {
			if t.f != nil || t.parked {
				kept = append(kept, t)
			} else {
				delete(s.byID, t.id)
				if s.byPath[t.path] == t {
					delete(s.byPath, t.path)
				}
			}
		}
		clear(s.files[len(kept):])
		s.files = kept
		if len(kept) > 0 {
			s.pollNext %= len(kept)
		} else {
			s.pollNext = 0
		}
	}
	return feed
}

// pump moves t's lines into the batch, reading more as needed, until the
// batch is full (eof false) or t has no more data now (eof true). The
// batch's current segment is sealed on return, so t's buffer can be reused.
func (s *FileSource) pump(t *tailedFile) (eof bool, err error) {
	defer s.bb.seal()
	for {
		if s.bb.take(&t.sp, t.origin) {
			return false, nil
		}
		if eof {
			return true, nil
		}
		s.bb.seal() // the refill may move the buffered bytes
		var spare []byte
		if t.sp.buf == nil {
			spare, s.spare = s.spare, nil
		}
		dst := t.sp.space(spare)
		n, rerr := preadAt(t.f, dst, t.readPos())
		t.sp.advance(n)
		if n > 0 && s.cfg.Multiline.on() {
			t.lastData = s.clk.Now()
		}
		if n > 0 && t.fp.n < fingerprintBytes {
			t.extendFingerprint() // only while the file is shorter than 1 KiB
		}
		switch {
		case rerr == nil && n == len(dst):
		case rerr == nil || errors.Is(rerr, io.EOF):
			// A short read of a regular file is its end now: take the
			// lines and stop, without a second read to see 0 bytes.
			eof = true // take the lines read, then stop
		default:
			return false, fmt.Errorf("read %s: %w", t.path, rerr)
		}
	}
}

// takeFinal adds t's last line, which has no newline, and its pending
// multiline record to the batch: at the end of a file read once, or of a
// rotated file about to be closed.
func (s *FileSource) takeFinal(t *tailedFile) { s.bb.takeFinal(&t.sp, t.origin) }

// release keeps t's read buffer for reuse when t holds no partial line, so
// that idle files hold no buffer.
//
// Lines of the batch being built may still point into the buffer (a
// splitter whose lines stay in place): a few of them (a followed file's
// new lines) are copied out now, so that the buffer goes on to the next
// file; many keep the buffer, which the batch takes over when
// finishBatch settles it. Without that, every followed file read once
// would keep a whole read buffer, and every pass would allocate one per
// file it read.
func (s *FileSource) release(t *tailedFile) {
	if !s.bb.settle(&t.sp) {
		s.pinned = append(s.pinned, t)
		return
	}
	if b := t.sp.release(); b != nil && cap(b) > cap(s.spare) {
		s.spare = b
	}
}

// finishBatch finishes the batch being built (see batchBuilder.finish)
// and releases the buffers that release had to leave with their files.
func (s *FileSource) finishBatch() *stages.Batch {
	b := s.bb.finish()
	for _, t := range s.pinned {
		s.release(t)
	}
	clear(s.pinned)
	s.pinned = s.pinned[:0]
	return b
}

// open opens the file at path into t and sets its identity, fingerprint
// and start offset: a matching resume position wins, else start_at for
// files present at Open (initial), else the beginning.
func (s *FileSource) open(t *tailedFile, path string, initial bool) error {
	f, err := s.openFile(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat %s: %w", path, err)
	}
	fp, err := readFingerprint(f, fingerprintBytes)
	if err != nil {
		f.Close()
		return err
	}
	t.f, t.path, t.id, t.fp = f, path, identityOf(fi, path), fp
	t.origin = &stages.Origin{Source: s.settings.ID, Path: path}
	t.sp.max = int(s.cfg.MaxLineBytes)
	t.sp.ml = newJoiner(&s.cfg.Multiline)
	start := int64(0)
	if p, ok := s.known[t.id]; ok && s.resumable(f, p.FilePosition) {
		s.forget(t.id)
		start = p.Offset
		if start > fi.Size() {
			s.log.Warn().Str("file", path).Int64("offset", start).Int64("size", fi.Size()).
				Msg("file is shorter than its checkpoint (truncated?); reading it from the start")
			start = 0
		}
	} else if initial && s.cfg.StartAt == StartAtEnd {
		start = fi.Size()
	}
	t.sp.reset(start)
	if _, dup := s.byID[t.id]; !dup {
		s.byID[t.id] = t
	}
	return nil
}

// forget drops the remembered position of id, if any.
func (s *FileSource) forget(id fileID) {
	if k, ok := s.known[id]; ok {
		if k.seq == 0 {
			s.restored--
		}
		delete(s.known, id)
	}
}

// resumable reports whether f is the file p was recorded for: same first
// bytes (the identity was matched by the caller).
func (s *FileSource) resumable(f *os.File, p FilePosition) bool {
	fp, err := readFingerprint(f, p.FingerprintLen)
	return err == nil && fp.n == p.FingerprintLen && fp.sum == p.Fingerprint
}

// rescan matches the glob again: it opens new files, follows renames of
// known ones, and marks the files no longer found as gone.
func (s *FileSource) rescan(initial bool) {
	s.watch(staticDir(s.cfg.Path))
	matches, err := filepath.Glob(s.cfg.Path)
	if err != nil {
		s.log.Error().Err(err).Msg("glob")
		return
	}
	seen := make(map[fileID]bool, len(matches))
	for _, p := range matches {
		if s.skip(p) {
			continue // an open file that becomes one is drained as gone
		}
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		id := identityOf(fi, p)
		if t := s.byID[id]; t != nil {
			seen[id] = true
			if t.path != p {
				s.log.Info().Str("from", t.path).Str("to", p).Msg("file renamed; still reading it")
				s.rename(t, p)
				s.markDirty(t)
			}
			s.byPath[p] = t
			t.gone = false
			continue
		}
		t := &tailedFile{}
		if err := s.open(t, p, initial); err != nil {
			if !errors.Is(err, fs.ErrNotExist) && s.warnOpen(p, err) {
				s.log.Warn().Err(err).Str("file", p).Msg("cannot read a matching file; retrying at every scan")
			}
			continue
		}
		s.openOK(p)
		if s.byID[t.id] != t { // replaced between Stat and Open by a file we read
			seen[t.id] = true
			t.close()
			continue
		}
		seen[t.id] = true
		s.track(t, p)
		s.watch(filepath.Dir(p))
		if !initial {
			s.log.Info().Str("file", p).Msg("new file; reading it from the start")
		}
	}
	for _, t := range s.files {
		if !seen[t.id] && !t.gone {
			t.gone, t.goneTicks = true, 0
			s.markDirty(t)
			s.log.Info().Str("file", t.path).Msg("file rotated away or deleted; reading it to its end")
		}
	}
}

// rename gives t, a followed file found at path, that name.
func (s *FileSource) rename(t *tailedFile, path string) {
	if s.byPath[t.path] == t {
		delete(s.byPath, t.path)
	}
	t.path = path
	s.byPath[path] = t
}

// track adds t, just opened at path, to the followed files: queued for
// the next pass, counted for max_open_files and, with a feed gate,
// registered as its feed.
func (s *FileSource) track(t *tailedFile, path string) {
	s.files = append(s.files, t)
	s.byPath[path] = t
	s.markDirty(t)
	s.lruAdd(t)
	if s.gate != nil {
		s.gate.Register(feedOf(t))
	}
}

// maxOwnSkipped bounds the own outputs a file source remembers having
// logged; beyond it, it forgets them and may log them again.
const maxOwnSkipped = 1024

// skip reports whether a file the glob matched must not be read: it
// matches an exclude pattern, or a sink of the daemon writes it (read
// back, it would be written again and again). The latter is logged once
// per file.
func (s *FileSource) skip(path string) bool {
	if s.cfg.excluded(path) {
		return true
	}
	out, own := s.settings.Own.Match(path)
	if !own {
		return false
	}
	if !s.ownSkipped[path] {
		if s.ownSkipped == nil || len(s.ownSkipped) >= maxOwnSkipped {
			s.ownSkipped = map[string]bool{}
		}
		s.ownSkipped[path] = true
		s.log.Warn().Str("file", path).Str("sink", out.String()).
			Msg("skipping a file etld writes itself: reading it back would write it again and again")
	}
	return true
}

// checkTruncated restarts t at offset 0 when it shrank below what was read
// or its first bytes changed (copytruncate), and extends its fingerprint
// while the file is shorter than fingerprintBytes. It reports whether t
// was restarted.
func (s *FileSource) checkTruncated(t *tailedFile) bool {
	fi, err := t.f.Stat()
	if err != nil {
		return false
	}
	size := fi.Size()
	truncated := size < t.readPos()
	if !truncated && t.fp.n > 0 {
		fp, err := readFingerprint(t.f, t.fp.n)
		truncated = err == nil && fp != t.fp
	}
	if truncated {
		s.log.Warn().Str("file", t.path).Int64("offset", t.readPos()).Int64("size", size).
			Msg("file truncated (copytruncate rotation?); reading it again from the start")
		t.sp.restart(0)                     // a pending multiline record is still emitted
		t.fp = fingerprint{sum: fnv1a(nil)} // of the 0 bytes read so far
	}
	if t.fp.n < fingerprintBytes && size > int64(t.fp.n) {
		t.extendFingerprint()
	}
	return truncated
}

// watch adds a directory to the watcher once; a directory that does not
// exist yet, or cannot be watched, is retried at the next rescan (polling
// covers the meantime). A failure other than a missing directory (the
// inotify watch limit, permissions) is logged once.
func (s *FileSource) watch(dir string) {
	if s.sub == nil || s.watched[dir] {
		return
	}
	if err := subAdd(s.sub, dir); err != nil {
		if _, warned := s.watched[dir]; !warned && !errors.Is(err, fs.ErrNotExist) {
			if errors.Is(err, syscall.ENOSPC) {
				if !s.watchLimitWarned {
					s.watchLimitWarned = true
					s.log.Error().Err(err).Str("dir", dir).
						Msg("inotify watch limit reached: polling the files of the directories that cannot be watched at every tick; raise fs.inotify.max_user_watches (sysctl -w fs.inotify.max_user_watches=524288, and in /etc/sysctl.d/ to keep it)")
				}
			} else {
				s.log.Warn().Err(err).Str("dir", dir).Msg("cannot watch the files' directory; polling it")
			}
			s.watched[dir] = false // warned; still retried
		}
		return
	}
	s.watched[dir] = true
	if trustFS(dir) {
		s.local[dir] = true
	}
}

// subAdd is (*fswatch.Sub).Add; tests make it fail as at the inotify
// watch limit.
var subAdd = (*fswatch.Sub).Add

// staticDir is the longest directory prefix of a glob without wildcards.
func staticDir(pattern string) string {
	dir := filepath.Dir(pattern)
	for strings.ContainsAny(dir, `*?[\`) {
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return dir
}

// Close closes every file and stops the watcher and ticker. It is safe
// without Open and idempotent.
func (s *FileSource) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.ticker != nil {
		s.ticker.Stop()
	}
	s.sub.Close()
	if err := s.own.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close file watcher: %w", err))
	}
	for _, t := range s.files {
		if err := t.close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", t.path, err))
		}
	}
	return errors.Join(errs...)
}
