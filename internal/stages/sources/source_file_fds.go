package sources

import (
	"container/list"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// defaultMaxOpenFiles is the default of FileConfig.MaxOpenFiles: the usual
// soft limit of file descriptors per process.
const defaultMaxOpenFiles = 1024

// A following file source keeps at most max_open_files files open. Beyond
// that it closes ("parks") the least recently active ones; a parked file
// keeps its place in FileSource.files with its identity, fingerprint and
// offset (so Positions covers it and nothing is forgotten), and is opened
// again under its current name when a notification or the tick's poll
// says it changed, after checking that the name still leads to the same
// file (device, inode, first bytes).
//
// The edge: a parked file that is renamed to a name the glob does not
// match, or deleted, before it is opened again cannot be read any more
// (Go cannot open a file by inode): the lines written to it after it was
// parked are lost, and this is logged with the offset. Keep
// max_open_files above the number of files written at once to avoid it.

// lruTouch marks t as the most recently active open file.
func (s *FileSource) lruTouch(t *tailedFile) {
	if t.lru != nil {
		s.lru.MoveToFront(t.lru)
	}
}

// lruAdd registers t, just opened, and parks the least recently active
// files beyond max_open_files (never t itself, nor a file rotated away,
// which must stay open to be drained).
func (s *FileSource) lruAdd(t *tailedFile) {
	if s.lru == nil {
		s.lru = list.New()
	}
	t.lru = s.lru.PushFront(t)
	s.parkBeyond(s.cfg.MaxOpenFiles)
}

// parkBeyond parks the least recently active files until at most max are
// open; it reports whether it parked any.
func (s *FileSource) parkBeyond(limit int) bool {
	parked := false
	for e, n := s.lru.Back(), s.lru.Len(); e != nil && s.lru.Len() > limit && n > 0; n-- {
		prev := e.Prev()
		if t := e.Value.(*tailedFile); !t.gone && e != s.lru.Front() {
			s.park(t)
			parked = true
		}
		e = prev
	}
	return parked
}

// park closes t's descriptor, keeping everything needed to open it again.
func (s *FileSource) park(t *tailedFile) {
	if err := t.close(); err != nil {
		s.log.Warn().Err(err).Str("file", t.path).Msg("close input file")
	}
	s.lruRemove(t)
	t.parked = true
	s.release(t)
}

// lruRemove forgets t, closed.
func (s *FileSource) lruRemove(t *tailedFile) {
	if t.lru != nil {
		s.lru.Remove(t.lru)
		t.lru = nil
	}
}

// unpark opens a parked file again under its current name. ok false: it
// cannot be read now (open failed; retried when it is queued again) or it
// was replaced meanwhile (lost reports it, and the caller drops t).
func (s *FileSource) unpark(t *tailedFile) (ok, lost bool) {
	f, err := s.openFile(t.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, true
		}
		if s.warnOpen(t.path, err) {
			s.log.Warn().Err(err).Str("file", t.path).Msg("cannot open a file again; retrying when it changes")
		}
		return false, false
	}
	fi, err := f.Stat()
	if err != nil || identityOf(fi, t.path) != t.id {
		f.Close()
		return false, true
	}
	s.openOK(t.path)
	t.f, t.parked = f, false
	s.lruAdd(t)
	s.checkTruncated(t) // rewritten in place while parked: read it again
	return true, false
}

// dropLost forgets a parked file whose name now leads elsewhere.
func (s *FileSource) dropLost(t *tailedFile) {
	s.log.Warn().Str("file", t.path).Int64("offset", t.sp.resume()).
		Msg("a file closed to stay under max_open_files was renamed away or deleted before it could be opened again; lines written to it after that offset cannot be read (raise max_open_files)")
	t.parked = false
	s.remember(t.id, t.position())
}

// openFile opens path; when the process or the system is out of file
// descriptors it parks open files to make room (down to half of those
// open), reports the limit once, and tries again.
func (s *FileSource) openFile(path string) (*os.File, error) {
	f, err := osOpen(path)
	if err == nil || !(errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)) {
		return f, err
	}
	if !s.fdWarned {
		s.fdWarned = true
		s.log.Error().Err(err).Int("open_files", s.lruLen()).
			Msg("out of file descriptors: closing the least active files and reopening them when they change; raise the limit (LimitNOFILE= in the systemd unit, ulimit -n) or lower max_open_files")
	}
	if s.lru == nil || !s.parkBeyond(s.lruLen()/2) {
		return nil, fmt.Errorf("out of file descriptors: %w", err)
	}
	return osOpen(path)
}

// osOpen is os.Open; tests make it fail as when out of descriptors.
var osOpen = os.Open

// lruLen is the number of open followed files.
func (s *FileSource) lruLen() int {
	if s.lru == nil {
		return 0
	}
	return s.lru.Len()
}
