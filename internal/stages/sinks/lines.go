package sinks

import (
	"io"

	"github.com/etld/etld/internal/stages"
)

// lineWriter is the one implementation of "record.Raw + newline, buffered"
// shared by the sinks (or, with an encoder, the record's encoded line +
// newline). It accumulates lines in a single reusable byte
// slice (no allocation per record) and hands it to w once it holds about
// size bytes.
//
// It replaces bufio.Writer on purpose: bufio.Writer's errors are sticky and
// the only way out, Reset, discards the buffered bytes, i.e. lines the sink
// already accepted in earlier Writes. lineWriter instead keeps every byte
// that w did not take (it drops the n bytes a failed Write reports as
// written), so a failed flush can simply be retried and nothing accepted is
// lost or written twice.
//
// A lineWriter is not safe for concurrent use.
type lineWriter struct {
	w    io.Writer
	buf  []byte
	size int // flush threshold and initial capacity

	enc  *encoder // nil: write Raw (encoding: json)
	line []byte   // with enc: the record being written, encoded
}

func newLineWriter(w io.Writer, size int, enc *encoder) *lineWriter {
	return &lineWriter{w: w, buf: make([]byte, 0, size), size: size, enc: enc}
}

// writeRaw appends b (whole lines, such as a CSV header) to the buffer.
func (lw *lineWriter) writeRaw(b []byte) { lw.buf = append(lw.buf, b...) }

// prependRaw puts b (whole lines) before the buffered bytes.
func (lw *lineWriter) prependRaw(b []byte) {
	lw.buf = append(lw.buf, b...)
	copy(lw.buf[len(b):], lw.buf[:len(lw.buf)-len(b)])
	copy(lw.buf, b)
}

// buffered is the number of bytes accepted but not yet handed to w.
func (lw *lineWriter) buffered() int64 { return int64(len(lw.buf)) }

// writeLines appends the records as lines, in order, flushing whenever the
// next line would overflow the buffer. With room >= 0 it stops before the
// first record whose line would bring the bytes appended by this call over
// room (the caller's rotation limit); room < 0 means no limit.
//
// It returns how many records it accepted: records[:n] are in the buffer
// or already handed to w. On error (from a flush), records[n:] were not
// accepted and the buffer still holds everything accepted before.
func (lw *lineWriter) writeLines(recs []stages.Record, room int64) (int, error) {
	buf := lw.buf // a local copy keeps the loop in registers; stored back before every return and flush
	for i := range recs {
		raw := recs[i].Raw
		if lw.enc != nil {
			lw.line = lw.enc.appendLine(lw.line[:0], &recs[i])
			raw = lw.line
		}
		l := len(raw) + 1
		if room >= 0 {
			if int64(l) > room {
				lw.buf = buf
				return i, nil
			}
			room -= int64(l)
		}
		if len(buf)+l > lw.size && len(buf) > 0 {
			lw.buf = buf
			if err := lw.flush(); err != nil {
				return i, err
			}
			buf = lw.buf
		}
		// A line longer than the buffer grows it for once; flush shrinks
		// it back.
		buf = append(buf, raw...)
		buf = append(buf, '\n')
	}
	lw.buf = buf
	if cap(lw.line) > max(lw.size, 64<<10) {
		lw.line = nil // one huge line does not pin its buffer
	}
	return len(recs), nil
}

// writeDirect hands lines, whole lines in memory the caller owns, to w
// without copying them into the buffer, after the buffered bytes. w must
// take all of a write or nothing (as rotate.File does): on error nothing
// of lines was accepted, and the buffer holds what w did not take.
func (lw *lineWriter) writeDirect(lines []byte) error {
	if err := lw.flush(); err != nil {
		return err
	}
	n, err := lw.w.Write(lines)
	if err == nil && n < len(lines) {
		err = io.ErrShortWrite
	}
	return err
}

// flush hands the buffered bytes to w. On error, the bytes w reported as
// written are dropped from the buffer and the rest are kept for a retry.
func (lw *lineWriter) flush() error {
	if len(lw.buf) == 0 {
		return nil
	}
	n, err := lw.w.Write(lw.buf)
	if err == nil && n < len(lw.buf) {
		err = io.ErrShortWrite
	}
	if err != nil {
		n = max(0, min(n, len(lw.buf)))
		lw.buf = lw.buf[:copy(lw.buf, lw.buf[n:])]
		return err
	}
	if cap(lw.buf) > 2*lw.size {
		lw.buf = make([]byte, 0, lw.size)
	} else {
		lw.buf = lw.buf[:0]
	}
	return nil
}
