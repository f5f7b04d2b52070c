package sources

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/etld/etld/internal/stages"
)

// MultilineConfig is the `multiline` option of the file and stdin sources:
// it joins consecutive lines (a stack trace and the line that introduced
// it) into one record, the lines separated by '\n'. It is off unless start
// or continue is set.
type MultilineConfig struct {
	Start    string        `yaml:"start" doc:"an RE2 regular expression: a line that matches it starts a record, the lines that do not join it; exactly one of start and continue turns multiline on"`
	Continue string        `yaml:"continue" doc:"an RE2 regular expression: a line that matches it joins the record before it, a line that does not starts a record; exactly one of start and continue turns multiline on"`
	MaxLines int           `yaml:"max_lines" doc:"most lines in one record; the record is cut there and the next line starts a new one"`
	Timeout  time.Duration `yaml:"timeout" doc:"a followed file's or stdin's last record is emitted after this long without new data (it cannot end before the next line arrives); a finite source emits it at its end"`

	re *regexp.Regexp // compiled by validate
}

// newMultilineConfig returns a MultilineConfig with its defaults (off).
func newMultilineConfig() MultilineConfig {
	return MultilineConfig{MaxLines: 500, Timeout: time.Second}
}

// on reports whether lines are joined.
func (c *MultilineConfig) on() bool { return c.Start != "" || c.Continue != "" }

// validate compiles the pattern. Its errors are FieldErrors under
// "multiline.".
func (c *MultilineConfig) validate() error {
	var errs []error
	c.re = nil
	if !c.on() {
		if *c != newMultilineConfig() {
			return stages.FieldErr("multiline", errors.New("want start or continue (a regular expression)"))
		}
		return nil
	}
	field, pattern := "start", c.Start
	switch {
	case c.Start != "" && c.Continue != "":
		errs = append(errs, stages.FieldErr("multiline.continue", errors.New("want start or continue, not both")))
	case c.Continue != "":
		field, pattern = "continue", c.Continue
		fallthrough
	default:
		re, err := regexp.Compile(pattern)
		if err != nil {
			errs = append(errs, stages.FieldErr("multiline."+field, fmt.Errorf("invalid regular expression: %w", err)))
		}
		c.re = re
	}
	if c.MaxLines < 1 {
		errs = append(errs, stages.FieldErr("multiline.max_lines", fmt.Errorf("must be at least 1, got %d", c.MaxLines)))
	}
	if c.Timeout <= 0 {
		errs = append(errs, stages.FieldErr("multiline.timeout", fmt.Errorf("must be positive, got %v", c.Timeout)))
	}
	return errors.Join(errs...)
}

// joiner is a lineSplitter's multiline state: the pending record, whose
// last line has been seen but whose end is not known yet (the next line
// may join it).
//
// While the pending record is at most max bytes, its bytes stay in the
// splitter's buffer (the splitter keeps them across compactions and grows
// the buffer for them), so a joined record is one slice of the stream: its
// lines with their '\n' separators, as in the input, copied once by the
// batch like any line. A pending record that grows over max bytes keeps an
// owned copy of its first max bytes only and becomes a longLine; one
// followed by a line over max bytes is copied out (detach).
type joiner struct {
	re       *regexp.Regexp
	isStart  bool // re is the start pattern (else the continue pattern)
	maxLines int

	has   bool  // a record is pending
	first int64 // stream offset of its first line
	end   int64 // stream offset just past its last line (newline excluded)
	lines int

	long   bool   // it is over max bytes: prefix holds its first max bytes
	prefix []byte // owned

	// queued is a record that waits to be returned: an over-long line
	// behind the record it ended (longLine), the pending record when an
	// over-long line starts (see detach), or the pending record of a
	// stream that restarted (ownedLine, see restart).
	queued        bool
	qKind         lineKind
	qLine         []byte
	qOff, qLength int64
	qResume       bool // a restarted reader must read it again from qOff
}

func newJoiner(c *MultilineConfig) *joiner {
	if !c.on() {
		return nil
	}
	return &joiner{re: c.re, isStart: c.Start != "", maxLines: c.MaxLines}
}

// joins reports whether line (with the record pending) joins it.
func (j *joiner) joins(line []byte) bool {
	if j.lines >= j.maxLines {
		return false
	}
	m := j.re.Match(line)
	if j.isStart {
		return !m
	}
	return m
}

// multiNext is lineSplitter.next with a joiner: it returns complete
// records, made of one or more lines.
func (s *lineSplitter) multiNext() (kind lineKind, line []byte, off, length int64) {
	j := s.ml
	if j.queued {
		return s.unqueue()
	}
	for {
		k, l, o, n := s.nextLine()
		if k == noLine {
			return noLine, nil, 0, 0
		}
		if kind, line, off, length = s.feed(k, l, o, n); kind != noLine {
			return kind, line, off, length
		}
	}
}

// multiFinal is lineSplitter.final with a joiner: it takes the last line
// without a newline, then returns the pending record. Call it until it
// returns noLine.
func (s *lineSplitter) multiFinal() (kind lineKind, line []byte, off, length int64) {
	if s.ml.queued {
		return s.unqueue()
	}
	if k, l, o, n := s.finalLine(); k != noLine {
		if kind, line, off, length = s.feed(k, l, o, n); kind != noLine {
			return kind, line, off, length
		}
	}
	return s.flush()
}

// unqueue returns the queued record.
func (s *lineSplitter) unqueue() (kind lineKind, line []byte, off, length int64) {
	j := s.ml
	kind, line, off, length = j.qKind, j.qLine, j.qOff, j.qLength
	j.queued, j.qLine = false, nil
	return kind, line, off, length
}

// restart is reset for a stream that starts over at off (a truncated
// file): a pending record is not dropped but returned first, from an owned
// copy (ownedLine or longLine), as its lines are no longer in the stream.
func (s *lineSplitter) restart(off int64) {
	kind, line, roff, length := s.flush()
	if kind == goodLine {
		kind, line = ownedLine, bytes.Clone(line)
	}
	s.reset(off)
	if kind != noLine {
		s.ml.queue(kind, line, roff, length, false)
	}
}

// detach moves the pending record into the queue, as an owned copy, so
// that the buffer no longer keeps it: called when a line over max bytes
// starts, which ends the record and must not be kept with it.
func (s *lineSplitter) detach() {
	kind, line, off, length := s.flush()
	if kind == goodLine {
		kind, line = ownedLine, bytes.Clone(line)
	}
	if kind != noLine {
		s.ml.queue(kind, line, off, length, true)
	}
}

// queue sets the queued record.
func (j *joiner) queue(kind lineKind, line []byte, off, length int64, resume bool) {
	j.queued, j.qKind, j.qLine, j.qOff, j.qLength, j.qResume = true, kind, line, off, length, resume
}

// feed gives the joiner the next physical line; it returns the record the
// line completed, if any.
func (s *lineSplitter) feed(k lineKind, l []byte, o, n int64) (kind lineKind, line []byte, off, length int64) {
	j := s.ml
	if k == longLine {
		// A line over max bytes is a reject of its own; it ends the
		// pending record, which goes first.
		kind, line, off, length = s.flush()
		if kind == noLine {
			return longLine, l, o, n
		}
		j.queue(longLine, l, o, n, true)
		return kind, line, off, length
	}
	if j.has && j.joins(l) {
		j.lines++
		j.end = o + int64(len(l))
		if !j.long && j.end-j.first > int64(s.max) {
			j.long = true
			j.prefix = append([]byte(nil), s.stream(j.first, j.first+int64(s.max))...)
			s.keeping = false
		}
		return noLine, nil, 0, 0
	}
	kind, line, off, length = s.flush()
	j.has, j.first, j.end, j.lines, j.long = true, o, o+int64(len(l)), 1, false
	s.keeping, s.keep = true, o
	return kind, line, off, length
}

// flush returns the pending record, if any, and forgets it. A goodLine
// aliases the buffer like any line.
func (s *lineSplitter) flush() (kind lineKind, line []byte, off, length int64) {
	j := s.ml
	if j == nil || !j.has {
		return noLine, nil, 0, 0
	}
	j.has = false
	s.keeping = false
	if j.long {
		line, j.prefix = j.prefix, nil
		return longLine, line, j.first, j.end - j.first
	}
	return goodLine, s.stream(j.first, j.end), j.first, 0
}

// pending reports whether a record is pending.
func (s *lineSplitter) pending() bool { return s.ml != nil && (s.ml.has || s.ml.queued) }

// stream returns the buffered bytes at stream offsets [from, to), which the
// splitter kept (from >= keep while keeping).
func (s *lineSplitter) stream(from, to int64) []byte {
	i := s.start - int(s.pos-from)
	return s.buf[i : i+int(to-from)]
}

// resume is the offset a restarted reader must start at: just past the
// last line returned, or the first line of a pending record.
func (s *lineSplitter) resume() int64 {
	switch {
	case s.ml == nil:
	case s.ml.has:
		return s.ml.first
	case s.ml.queued && s.ml.qResume:
		return s.ml.qOff
	}
	return s.done
}

// hasPending reports whether a multiline record is pending (its end not
// known yet).
func (s *lineSplitter) hasPending() bool { return s.ml != nil && s.ml.has }

// addOwned adds a record whose Raw is owned (not in a splitter's buffer)
// as a segment of its own.
func (bb *batchBuilder) addOwned(line []byte, off int64, o *stages.Origin) {
	bb.seal()
	bb.add(line, off, o, 0)
	bb.seal()
}

// addFlushed adds the pending record of s, if any, to the batch: its
// multiline timeout expired.
func (bb *batchBuilder) addFlushed(s *lineSplitter, o *stages.Origin) {
	switch kind, line, off, length := s.flush(); kind {
	case goodLine:
		bb.add(line, off, o, 0)
		bb.seal()
	case longLine:
		bb.reject(line, off, length, o, s.max)
	}
}

// clock is the time source of the multiline timeout; tests give a fake
// one to the sources' constructors.
type clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed, and a
	// function that stops it.
	After(d time.Duration) (<-chan time.Time, func() bool)
}

// realClock is the clock of a running daemon.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) After(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}
