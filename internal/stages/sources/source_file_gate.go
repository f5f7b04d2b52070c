package sources

import (
	"context"
	"fmt"
	"time"

	"github.com/etld/etld/internal/stages"
)

var _ stages.GatedSource = (*FileSource)(nil)

// SetFeedGate implements stages.GatedSource: each file is a feed of an
// ordered merge. Every batch then holds lines of one file, and a file is
// read only while its feed has room. A finite source reads its files side
// by side instead of one after the other (a merge needs the head of every
// file), and ends each file's feed when the file is read to its end. A
// following source reads a rotated file to its end before its successor
// under the same name, which is the same feed. Call before Open.
func (s *FileSource) SetFeedGate(g stages.FeedGate) { s.gate = g }

// feedOf is the feed of a file: the name it was discovered under.
func feedOf(t *tailedFile) string { return t.origin.Path }

// readOnceGated reads the files side by side, one batch of one file with
// room at a time, round-robin.
func (s *FileSource) readOnceGated(ctx context.Context) (*stages.Batch, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		changed := s.gate.Changed() // before looking, so no change is missed
		s.mu.Lock()
		b, progress, waiting, unreadable, err := s.readOneFile()
		s.mu.Unlock()
		switch {
		case err != nil:
			return nil, err
		case b != nil:
			return b, nil
		case progress:
			// A file ended without lines: look again at once.
		case !waiting && !unreadable:
			return nil, stages.ErrEndOfInput
		case waiting && !unreadable:
			// Every unfinished file waits for room; progress comes from
			// the merge writing their records.
			select {
			case <-changed:
			case <-ctx.Done():
			}
		default:
			t := time.NewTimer(openRetry)
			select {
			case <-changed:
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
}

// readOneFile returns a batch of the next file with room, or progress
// when a file ended without lines (the caller asks again). waiting
// reports unfinished files without room, unreadable files that cannot be
// opened now. Called with mu held.
func (s *FileSource) readOneFile() (b *stages.Batch, progress, waiting, unreadable bool, err error) {
	n := len(s.files)
	for k := 0; k < n; k++ {
		i := (s.next + k) % n
		t := s.files[i]
		if t.finished {
			continue
		}
		if !s.gate.Allow(t.path) {
			waiting = true
			continue
		}
		ready, skip := s.openForOnce(t)
		if skip {
			s.finish(t, t.path)
			return nil, true, false, false, nil
		}
		if !ready {
			unreadable = true
			continue
		}
		s.next = (i + 1) % n
		s.bb.start()
		s.bb.limit(s.gate) // many feeds: smaller batches
		eof, perr := s.pump(t)
		if perr == nil && eof {
			s.takeFinal(t)
			s.release(t)
			if cerr := t.close(); cerr != nil {
				s.log.Warn().Err(cerr).Str("file", t.path).Msg("close input file")
			}
		}
		b = s.finishBatch()
		if b != nil {
			s.gate.Take(t.path, b)
		}
		if perr != nil {
			if b != nil {
				return b, true, false, false, nil // deliver what was read; the error recurs next time
			}
			return nil, false, false, false, fmt.Errorf("file source: %w", perr)
		}
		if eof {
			s.finish(t, t.path)
		}
		return b, true, false, false, nil
	}
	return nil, false, waiting, unreadable, nil
}

// finish marks a file read to its end and ends its feed.
func (s *FileSource) finish(t *tailedFile, feed string) {
	t.finished = true
	s.gate.End(feed)
}

// heldBack reports whether a followed file must wait: its feed has no
// room, or a file of the same feed found before it (a rotated
// predecessor, renamed away or to a name the glob still matches) may
// still have lines: it was rotated away and not closed yet, or its last
// read did not reach its end. Called with mu held.
func (s *FileSource) heldBack(t *tailedFile) bool {
	if s.gate == nil {
		return false
	}
	if !s.gate.Allow(feedOf(t)) {
		return true
	}
	for _, o := range s.files { // in discovery order
		if o == t {
			return false
		}
		if (o.f != nil || o.parked) && feedOf(o) == feedOf(t) && (o.gone || !o.atEOF) {
			return true
		}
	}
	return false
}

// feedOpen reports whether a file other than t of the feed is open.
func (s *FileSource) feedOpen(feed string, t *tailedFile) bool {
	for _, o := range s.files {
		if o != t && (o.f != nil || o.parked) && feedOf(o) == feed {
			return true
		}
	}
	return false
}
