package sources

import (
	"bytes"
	"fmt"

	"github.com/etld/etld/internal/stages"
)

// Batch limits shared by the line-oriented sources (file, stdin): Read
// returns at most batchMaxRecords records, and stops adding lines once the
// batch holds batchMaxBytes of line data.
const (
	batchMaxRecords = 1024
	batchMaxBytes   = 256 << 10
	// readBlock is the initial size of a splitter's read buffer. It grows,
	// up to max_line_bytes+1, only when one line does not fit.
	readBlock = 256 << 10
	// defaultMaxLineBytes is the default of every max_line_bytes option.
	defaultMaxLineBytes = 1 << 20
	// maxMaxLineBytes bounds max_line_bytes: the read buffer grows to it.
	maxMaxLineBytes = 1 << 30
)

// validateMaxLineBytes checks a max_line_bytes option.
func validateMaxLineBytes(n stages.ByteSize) error {
	if n <= 0 || n > maxMaxLineBytes {
		return stages.FieldErr("max_line_bytes", fmt.Errorf("must be between 1 and %v, got %d", stages.ByteSize(maxMaxLineBytes), int64(n)))
	}
	return nil
}

// lineKind is what lineSplitter.next found.
type lineKind uint8

const (
	noLine    lineKind = iota // no complete line buffered: read more
	goodLine                  // a line of at most max bytes
	longLine                  // a line over max bytes: becomes a stages.Reject
	ownedLine                 // a goodLine in an owned buffer, not the splitter's (multiline)
)

// lineSplitter splits a byte stream into '\n'-terminated lines. It is the one
// line splitter of the file and stdin sources.
//
// The owner reads into space(), reports the bytes with advance(), and takes
// lines with next() until it returns noLine. Lines returned by next alias the
// internal buffer and are valid until the next call to space or release.
//
// A line longer than max never sits in memory whole: once max+1 bytes of it
// are buffered without a newline, its first max bytes are copied aside and
// the rest is skipped as it arrives; next then reports it as a longLine with
// its full length. A lineSplitter is not safe for concurrent use.
type lineSplitter struct {
	max        int
	buf        []byte
	fresh      bool  // buf is new: its first read maps its pages in at once (stages.Prefault)
	start, end int   // buffered, unconsumed bytes are buf[start:end]
	pos        int64 // stream offset of buf[start]
	done       int64 // stream offset just past the last line returned

	long       bool   // skipping the rest of an over-long line
	longStart  int64  // its stream offset
	longPrefix []byte // its first max bytes (owned: becomes Reject.Record.Raw)

	ml      *joiner // multiline: nil joins nothing
	keeping bool    // the buffer keeps the bytes from stream offset keep on
	keep    int64   // (a pending multiline record), even once consumed

	// Lines in place (see inPlace): pin is the batch whose records
	// pin.Records[pinFirst:pinFirst+pinN] point into buf, which it gets
	// once it is built (handOver) unless they are few (see
	// batchBuilder.unpin); want is how many bytes it still wants, to
	// size the next read.
	copyLines bool          // never hand buf over: its reads outlive a Read (stdin)
	pin       *stages.Batch // nil: no record points into buf
	pinFirst  int
	pinN      int
	want      int // 0: read as much as fits

	// A run (see batchBuilder.takeRun): pin's lines in buf when it holds
	// them as a line run, not as Records (pinN is 0 then): runN lines,
	// runSize bytes with their newlines, from stream offset runOff.
	runN      int
	runSize   int
	runOff    int64
	runOrigin *stages.Origin
}

// inPlace reports whether the splitter's lines can stay where they were
// read: batches then take over the read buffer (handOver) instead of
// copying their lines out of it, and a sink writes those lines straight
// from it (stages.Batch.Span): the passthrough path costs a read and a
// write, like cat. Not with multiline, whose records keep bytes across
// reads.
func (s *lineSplitter) inPlace() bool { return s.ml == nil && !s.copyLines }

// Reads in place (see lineSplitter.want).
const (
	// minRead is the smallest read of a splitter whose batch wants
	// little more.
	minRead = 4 << 10
	// pinMin is the least line data a batch must have in a splitter's
	// buffer to take the buffer over; fewer bytes (a few lines of a
	// followed file) are copied out (batchBuilder.unpin), and the buffer
	// keeps serving its file.
	pinMin = 32 << 10
	// minBuffer is the smallest read buffer of an in-place splitter.
	minBuffer = 32 << 10
)

// pinOffset is the stream offset of the first line pin has in buf.
func (s *lineSplitter) pinOffset() int64 {
	if s.runN > 0 {
		return s.runOff
	}
	return s.pin.Records[s.pinFirst].Offset
}

// handOver gives buf to the batch whose records point into it (pin) and
// moves the bytes not consumed yet to a new buffer.
func (s *lineSplitter) handOver() { s.handOverTo(len(s.buf)) }

// handOverTo is handOver with a new buffer of size bytes.
func (s *lineSplitter) handOverTo(size int) {
	b, old := s.pin, s.buf
	s.pin, s.buf = nil, nil
	b.Own(old)
	if s.runN > 0 {
		lo := s.index(s.runOff)
		b.AddLines(old[lo:lo+s.runSize:lo+s.runSize], s.runN, s.runOrigin, s.runOff)
		s.runN = 0
	} else {
		s.markLines(b, old)
	}
	rest := old[s.start:s.end]
	s.start, s.end = 0, 0
	if len(rest) > 0 {
		s.buf, s.fresh = stages.NewReadBuffer(size)
		s.end = copy(s.buf, rest)
	}
}

// markLines tells b which bytes of buf, the buffer it is taking over, are
// its pinned records as lines (stages.Batch.MarkLines), so that a sink
// finds them without reading them again: when they are consecutive lines
// of the stream (no over-long line skipped between them) and the last one
// has its newline in what was read.
func (s *lineSplitter) markLines(b *stages.Batch, buf []byte) {
	recs := b.Records[s.pinFirst : s.pinFirst+s.pinN]
	if len(recs) == 0 {
		return
	}
	first, last := &recs[0], &recs[len(recs)-1]
	lo, end := s.index(first.Offset), s.index(last.Offset)+len(last.Raw)
	if lo < 0 || end >= s.end || buf[end] != '\n' {
		return // the last line has no newline (yet): a file's final line
	}
	size := len(recs) - 1 // the newlines between the lines
	for i := range recs {
		size += len(recs[i].Raw)
	}
	if size != end-lo {
		return // not back to back: an over-long line was skipped between
	}
	b.MarkLines(buf[lo:end+1], len(recs))
}

// reset empties the splitter and positions it at stream offset off. It keeps
// the buffer, unless a batch holds lines in it (then the batch gets it).
func (s *lineSplitter) reset(off int64) {
	if s.pin != nil {
		s.handOver() // the batch keeps the lines it has; the rest goes
	}
	s.start, s.end = 0, 0
	s.pos, s.done = off, off
	s.long, s.longPrefix = false, nil
	s.keeping = false
	if s.ml != nil {
		*s.ml = joiner{re: s.ml.re, isStart: s.ml.isStart, maxLines: s.ml.maxLines}
	}
}

// buffered is the number of unconsumed buffered bytes.
func (s *lineSplitter) buffered() int { return s.end - s.start }

// idle reports whether the splitter holds no partial line, so its buffer
// can be released.
func (s *lineSplitter) idle() bool { return s.start == s.end && !s.long && !s.pending() }

// release hands the buffer back (to be reused by another splitter) when the
// splitter is idle; it returns nil otherwise.
func (s *lineSplitter) release() []byte {
	if !s.idle() || s.buf == nil || s.pin != nil {
		return nil
	}
	b := s.buf
	s.buf, s.start, s.end, s.fresh = nil, 0, 0, false
	return b
}

// space returns the free tail of the buffer to read into, compacting or
// growing it first. spare, if non-nil and large enough, is used as the
// buffer when the splitter has none. It never returns an empty slice.
func (s *lineSplitter) space(spare []byte) []byte {
	// A batch whose lines do not fit in the buffer, twice over, gets a
	// bigger one: the buffer was sized for a first look at the lines, or
	// for smaller batches. Without it, every batch would take two reads
	// and two buffers (two writes for the sink), as each handOver passes
	// the size on.
	if s.pin != nil {
		size := s.blockSize(s.start - s.index(s.pinOffset()) + s.want)
		if len(s.buf)-s.end >= minRead && len(s.buf) >= size {
			return s.limit(s.buf[s.end:]) // behind the batch's lines, which stay
		}
		s.handOverTo(max(size, len(s.buf)))
	}
	if s.buf != nil && s.inPlace() && s.want > 0 && !s.long && len(s.buf) < s.blockSize(s.want) {
		// Nothing points into it (no pin): the collector takes it, once
		// per growth.
		n := s.blockSize(s.want)
		nb, fresh := stages.NewReadBuffer(n)
		s.fresh = fresh
		s.end = copy(nb, s.buf[s.start:s.end])
		s.buf, s.start = nb, 0
	}
	if s.buf == nil {
		n := s.blockSize(s.want)
		switch {
		case cap(spare) >= n:
			s.buf = spare[:cap(spare)]
		case s.inPlace():
			// From the pool: batches take these over, and their
			// release brings them back.
			s.buf, s.fresh = stages.NewReadBuffer(n)
		default:
			s.buf = make([]byte, n)
		}
	}
	lo, kept := s.start, 0 // lo: index of the first byte to keep
	if s.keeping {
		kept = int(s.pos - s.keep)
		lo -= kept
	}
	if lo == s.end {
		s.start, s.end = 0, 0
	}
	// Compact when less than half of the buffer is free at its end.
	if lo > 0 && len(s.buf)-s.end < len(s.buf)/2 {
		n := copy(s.buf, s.buf[lo:s.end])
		s.start, s.end = s.start-lo, n
		lo = 0
	}
	if s.end == len(s.buf) {
		// The buffer is full of one partial line of at most max bytes
		// (next would have switched to skipping otherwise), after the
		// kept bytes of a pending record of at most max bytes: grow it,
		// up to max+1 bytes more than those, which is enough to tell that
		// a line is too long.
		n := min(2*len(s.buf), kept+s.max+1)
		if n <= len(s.buf) {
			n = len(s.buf) + 1 // unreachable by the invariant; stay safe
		}
		nb := make([]byte, n)
		copy(nb, s.buf[lo:s.end])
		s.buf, s.start, s.end = nb, s.start-lo, s.end-lo
		s.fresh = false
	}
	dst := s.limit(s.buf[s.end:])
	if s.fresh {
		// The first read into a new buffer: map in what it fills.
		stages.Prefault(dst)
		s.fresh = false
	}
	return dst
}

// blockSize is the size of a read buffer for a batch that wants want
// bytes: a block, or less for an in-place splitter whose batch wants
// less.
func (s *lineSplitter) blockSize(want int) int {
	if !s.inPlace() {
		return min(readBlock, s.max+1)
	}
	// In place, not capped at max+1: the buffer is the batch's, and an
	// over-long line is skipped as it arrives whatever the buffer's size.
	// (With max_line_bytes: 1000, reads of 1,001 bytes made a
	// passthrough twelve times slower.)
	if want <= 0 {
		return readBlock
	}
	// No bigger than the batch wants, twice over: a batch limited to a
	// share of a merge's budget, or one of many followed files, does not
	// hold a whole block per file.
	return min(readBlock, max(2*want, minBuffer))
}

// index is the position in buf of stream offset x, for an offset not
// consumed before the last compaction: a buffer that records point into
// is never compacted.
func (s *lineSplitter) index(x int64) int { return s.start - int(s.pos-x) }

// limit cuts a read into dst down to what the batch being built wants
// (in place only): its lines then end near the end of the read, and
// handing the buffer over leaves few bytes to move.
func (s *lineSplitter) limit(dst []byte) []byte {
	if !s.inPlace() || s.want <= 0 {
		return dst
	}
	return dst[:min(len(dst), max(s.want-s.buffered(), minRead))]
}

// advance records that n bytes were read into the slice space returned.
func (s *lineSplitter) advance(n int) { s.end += n }

// next returns the next complete record: a line, or with multiline the
// lines that make one record (see joiner). For a goodLine, line is the line
// without its newline, aliasing the buffer. For a longLine, line is an owned
// copy of its first max bytes and length its full length. off is the stream
// offset of the line's first byte.
func (s *lineSplitter) next() (kind lineKind, line []byte, off, length int64) {
	if s.ml != nil {
		return s.multiNext()
	}
	return s.nextLine()
}

// nextLine is next without multiline: it returns the next line.
func (s *lineSplitter) nextLine() (kind lineKind, line []byte, off, length int64) {
	if s.start < s.end {
		data := s.buf[s.start:s.end]
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			if !s.long && len(data) <= s.max {
				return noLine, nil, 0, 0 // wait for the rest of the line
			}
			if !s.long {
				s.long, s.longStart = true, s.pos
				s.longPrefix = bytes.Clone(data[:s.max])
				if s.keeping {
					s.detach() // the buffer must not keep the record and this line
				}
			}
			s.pos += int64(len(data))
			s.start = s.end
			return noLine, nil, 0, 0
		}
		off = s.pos
		s.start += i + 1
		s.pos += int64(i + 1)
		s.done = s.pos
		if s.long {
			line, off, length = s.longPrefix, s.longStart, off+int64(i)-s.longStart
			s.long, s.longPrefix = false, nil
			return longLine, line, off, length
		}
		if i > s.max {
			return longLine, bytes.Clone(data[:s.max]), off, int64(i)
		}
		return goodLine, data[:i], off, 0
	}
	return noLine, nil, 0, 0
}

// final returns what remains of a stream once it is at its end and next
// returned noLine, like next: the last line, which has no newline, and
// with multiline the pending record. Call it until it returns noLine.
func (s *lineSplitter) final() (kind lineKind, line []byte, off, length int64) {
	if s.ml != nil {
		return s.multiFinal()
	}
	return s.finalLine()
}

// finalLine is final without multiline.
func (s *lineSplitter) finalLine() (kind lineKind, line []byte, off, length int64) {
	if s.long {
		line, off, length = s.longPrefix, s.longStart, s.pos-s.longStart
		s.long, s.longPrefix = false, nil
		s.done = s.pos
		return longLine, line, off, length
	}
	if s.start == s.end {
		return noLine, nil, 0, 0
	}
	line, off = s.buf[s.start:s.end], s.pos
	s.pos += int64(len(line))
	s.start = s.end
	s.done = s.pos
	return goodLine, line, off, 0
}

// batchBuilder assembles a stages.Batch from lines that alias a splitter's
// buffer, copying them into one allocation per contiguous run ("segment"):
// normally one per batch, and one more each time the batch spans a refill
// of the buffer, a change of file, or a reject.
//
// Lines of one segment must be consecutive lines of one stream, read into
// one buffer: call seal before the buffer is refilled (space), before taking
// lines from another splitter, and before handing the batch out.
//
// Lines of an in-place splitter (see lineSplitter.inPlace) are not copied
// when the batch has pinMin bytes or more of them in the splitter's
// buffer: the batch takes the buffer over when it is finished, or
// earlier when the buffer must make room (see lineSplitter.space).
type batchBuilder struct {
	b        *stages.Batch
	segFirst int           // index in b.Records of the current segment's first record
	segSrc   *lineSplitter // the in-place splitter the segment's lines are from, or nil
	bytes    int           // line bytes in the batch
	pinned   []*lineSplitter
	avg      int // line bytes per record of the last batch, for lineSplitter.want
	lastN    int // records in the last batch
	// maxRecords and maxBytes are this batch's limits: the usual ones, or
	// lower ones a feed gate asks for (see stages.FeedBatchLimiter).
	maxRecords, maxBytes int
	// runs: batches may hold their lines as line runs (see takeRun);
	// runSp is the splitter whose lines this batch holds as runs, nil
	// while it holds none.
	runs     bool
	runSp    *lineSplitter
	runLines int // lines in the batch's runs
}

// start begins a new batch.
func (bb *batchBuilder) start() {
	bb.b = &stages.Batch{}
	bb.segFirst, bb.bytes = 0, 0
	bb.runSp, bb.runLines = nil, 0
	bb.maxRecords, bb.maxBytes = batchMaxRecords, batchMaxBytes
}

// limit lowers the batch's limits to those of g, when it sets any.
func (bb *batchBuilder) limit(g stages.FeedGate) {
	if l, ok := g.(stages.FeedBatchLimiter); ok {
		r, b := l.BatchLimit()
		bb.maxRecords, bb.maxBytes = max(1, min(r, batchMaxRecords)), max(1, min(b, batchMaxBytes))
	}
}

// full reports whether the batch reached its record or byte limit.
func (bb *batchBuilder) full() bool {
	return len(bb.b.Records) >= bb.maxRecords || bb.bytes >= bb.maxBytes
}

// empty reports whether the batch has neither records nor rejects.
func (bb *batchBuilder) empty() bool {
	return len(bb.b.Records) == 0 && len(bb.b.Rejects) == 0 && bb.runSp == nil
}

// add appends a line that aliases the reader's buffer until seal; hint is
// the number of bytes still buffered, used to size the Records slice.
func (bb *batchBuilder) add(line []byte, off int64, o *stages.Origin, hint int) {
	bb.toRecords()
	if bb.b.Records == nil {
		bb.b.Records = bb.newRecords(hint)
	}
	bb.b.Records = append(bb.b.Records, stages.Record{Raw: line, Origin: o, Offset: off})
	bb.bytes += len(line)
}

// reject appends an over-long line; prefix is owned by the batch.
func (bb *batchBuilder) reject(prefix []byte, off, length int64, o *stages.Origin, max int) {
	bb.toRecords()
	bb.seal()
	bb.b.Rejects = append(bb.b.Rejects, stages.Reject{
		Record: stages.Record{Raw: prefix, Origin: o, Offset: off},
		Err:    fmt.Errorf("line of %d bytes exceeds max_line_bytes (%d)", length, max),
		Length: length,
	})
}

// take moves lines from s into the batch until the batch is full or s has
// no complete line left; it reports whether the batch is full.
func (bb *batchBuilder) take(s *lineSplitter, o *stages.Origin) bool {
	if s.inPlace() && !s.long {
		switch bb.takeRun(s, o) {
		case runFull:
			return true
		case runTook:
			s.want = bb.wantBytes()
			return false
		}
		bb.takeLines(s, o)
	}
	for !bb.full() {
		kind, line, off, length := s.next()
		switch kind {
		case noLine:
			s.want = bb.wantBytes()
			return false
		case goodLine:
			bb.addFrom(s, line, off, o, s.buffered())
		case ownedLine:
			bb.addOwned(line, off, o)
		case longLine:
			bb.reject(line, off, length, o, s.max)
		}
	}
	return true
}

// newRecords returns the Records slice of a new batch, sized for the
// lines in buffered bytes, or for as many as the last batch had: a batch
// that starts with the few lines left over from the last read is likely
// to fill up like the last one.
func (bb *batchBuilder) newRecords(buffered int) []stages.Record {
	return stages.NewRecords(min(bb.maxRecords, max(buffered/64+8, bb.lastN)))
}

// takeLines is take's loop for an in-place splitter, in one function:
// it adds the lines s holds (of at most max bytes) until the batch is
// full, and leaves anything else (no complete line, an over-long one)
// to take. Per line it is an IndexByte and an append: the passthrough
// path splits 2 million lines in about 30 ms.
func (bb *batchBuilder) takeLines(s *lineSplitter, o *stages.Origin) {
	bb.toRecords()
	if s.start == s.end || bb.full() {
		return
	}
	if bb.segSrc != s {
		bb.seal()
		bb.segSrc = s
	}
	data := s.buf[s.start:s.end]
	recs := bb.b.Records
	if recs == nil {
		recs = bb.newRecords(len(data))
	}
	n, size, i := len(recs), bb.bytes, 0
	for n < bb.maxRecords && size < bb.maxBytes {
		rest := data[i:] // from the line's first byte, even when it is empty
		j := bytes.IndexByte(rest, '\n')
		if j < 0 || j > s.max {
			break
		}
		// Fields set in place, not append of a Record literal: the
		// literal was built on the stack and copied, and that copy's
		// wide loads of just-stored words stalled on every line.
		if n == cap(recs) {
			recs = append(recs, stages.Record{})
		}
		recs = recs[:n+1]
		r := &recs[n]
		r.Raw, r.Line, r.Parsed = rest[:j:j], nil, false
		r.Origin, r.Offset = o, s.pos+int64(i)
		n++
		size += j
		i += j + 1
	}
	bb.b.Records, bb.bytes = recs, size
	if i > 0 {
		s.start += i
		s.pos += int64(i)
		s.done = s.pos
	}
}

// What takeRun did.
const (
	runNo   = iota // nothing: take lines as Records
	runTook        // took every complete line s has, as a run; the batch wants more
	runFull        // the batch of runs is full, or cannot take s's lines
)

// takeRun is takeLines for a batch that may hold line runs (bb.runs: the
// source's lines go straight to sinks that write them as they are, see
// stages.LineRunSource): the complete lines s holds join the batch as a
// run, counted (bytes.Count) instead of split, up to the batch's byte
// limit, newlines included (a file of empty lines is bytes too). The
// record limit gives way to runMaxLines: a run costs the same whatever
// its lines, but a stage the graph gains on a reload splits it into
// Records, which must stay a bounded batch. It declines (runNo) when the batch holds Records or
// rejects, and when s's buffered bytes could hold a line over
// max_line_bytes, which the line-by-line path rejects; a batch of runs
// takes the lines of one splitter only (runFull for another). Whatever
// adds a Record to a batch of runs makes it a batch of Records first
// (toRecords), so the batch is one or the other.
func (bb *batchBuilder) takeRun(s *lineSplitter, o *stages.Origin) int {
	if !bb.runs || len(bb.b.Records) > 0 || len(bb.b.Rejects) > 0 {
		return runNo
	}
	if bb.runSp != nil && bb.runSp != s {
		return runFull
	}
	data := s.buf[s.start:s.end]
	if len(data) > s.max {
		return runNo // a line in it may be over-long
	}
	room := bb.maxBytes - bb.bytes
	if room <= 0 {
		return runFull
	}
	window := data[:min(len(data), room)]
	last := bytes.LastIndexByte(window, '\n')
	if last < 0 && len(window) < len(data) {
		last = bytes.IndexByte(data, '\n') // one line over the room: alone
	}
	if last < 0 {
		return runTook // no complete line: read on
	}
	chunk := data[:last+1]
	n := bytes.Count(chunk, newline)
	capped := false
	if left := runMaxLines - bb.runLines; n > left {
		if left <= 0 {
			return runFull
		}
		end := 0
		for range left { // rare: lines of a few bytes
			end += bytes.IndexByte(chunk[end:], '\n') + 1
		}
		chunk, n, capped = chunk[:end], left, true
	}
	bb.runSp = s
	if s.pin != bb.b {
		s.pin, s.pinFirst, s.pinN = bb.b, 0, 0
		s.runN, s.runSize, s.runOff, s.runOrigin = 0, 0, s.pos, o
		bb.pinned = append(bb.pinned, s)
	}
	s.runN += n
	s.runSize += len(chunk)
	bb.bytes += len(chunk)
	bb.runLines += n
	s.start += len(chunk)
	s.pos += int64(len(chunk))
	s.done = s.pos
	if capped || bb.full() || len(window) < len(data) || room-len(chunk) < minRead {
		// Full, or so nearly that the rest would take a read of its
		// own into a new buffer, and a write of its own.
		return runFull
	}
	return runTook
}

var newline = []byte{'\n'}

// runMaxLines bounds the lines of a batch of runs: split into Records
// (a tap or a step added by a reload) it is at most 16 ordinary
// batches. W1's lines (163 bytes) fill the byte limit at ~1,600.
const runMaxLines = 16 * batchMaxRecords

// toRecords makes a batch of line runs a batch of Records: the runs
// handed over already, then those still in the splitter's buffer, whose
// records stay pinned there. Nothing for a batch of Records.
func (bb *batchBuilder) toRecords() {
	sp := bb.runSp
	if sp == nil {
		return
	}
	bb.runSp = nil
	b := bb.b
	b.SplitRuns()
	if sp.pin == b && sp.runN > 0 {
		first := len(b.Records)
		lo := sp.index(sp.runOff)
		b.Records = stages.AppendLineRecords(b.Records, sp.buf[lo:lo+sp.runSize], sp.runN, sp.runOrigin, sp.runOff)
		sp.pinFirst, sp.pinN, sp.runN = first, sp.runN, 0
	}
	bb.segFirst = len(b.Records)
}

// addFrom is add for a line in s's buffer.
func (bb *batchBuilder) addFrom(s *lineSplitter, line []byte, off int64, o *stages.Origin, hint int) {
	if s.inPlace() {
		if bb.segSrc != s {
			bb.seal()
			bb.segSrc = s
		}
		// Capacity-limited, so that a step appending to one Raw
		// reallocates instead of overwriting the next line.
		line = line[:len(line):len(line)]
	}
	bb.add(line, off, o, hint)
}

// wantBytes estimates the line bytes (newlines included) the batch needs
// to be full, a little over; 0 when it cannot tell yet.
func (bb *batchBuilder) wantBytes() int {
	n, avg := len(bb.b.Records), bb.avg
	if bb.runs && n == 0 && len(bb.b.Rejects) == 0 {
		return bb.maxBytes - bb.bytes + 4*avg // a batch of runs has no record limit
	}
	if n > 0 {
		avg = bb.bytes / n
	}
	if avg <= 0 && n == 0 {
		return readBlock / 4 // a first look at the lines
	}
	avg++
	need := min((bb.maxRecords-n)*avg, bb.maxBytes-bb.bytes)
	return need + need/32 + 4*avg
}

// takeFinal adds what remains of s's stream, which is at its end, to the
// batch: the last line, which has no newline, and the pending multiline
// record. It ignores the batch's limits (it adds three records at most).
func (bb *batchBuilder) takeFinal(s *lineSplitter, o *stages.Origin) {
	for {
		kind, line, off, length := s.final()
		switch kind {
		case noLine:
			bb.seal()
			return
		case goodLine:
			bb.addFrom(s, line, off, o, 0)
		case ownedLine:
			bb.addOwned(line, off, o)
		case longLine:
			bb.reject(line, off, length, o, s.max)
		}
	}
}

// seal copies the current segment's lines out of the reader's buffer into
// one new buffer, which the batch owns (see stages.Batch.Own). Each Raw is capacity-limited, so a step that appends
// to one record's Raw reallocates instead of overwriting the next record.
//
// The lines of an in-place splitter stay where they are for now: the
// splitter's buffer is pinned to the batch, and finish decides.
func (bb *batchBuilder) seal() {
	recs := bb.b.Records[bb.segFirst:]
	first := bb.segFirst
	bb.segFirst = len(bb.b.Records)
	sp := bb.segSrc
	bb.segSrc = nil
	if len(recs) == 0 {
		return
	}
	if sp != nil {
		if sp.pin != bb.b {
			sp.pin, sp.pinFirst, sp.pinN = bb.b, first, 0
			bb.pinned = append(bb.pinned, sp)
		}
		sp.pinN += len(recs)
		return
	}
	// The segment's lines are consecutive in one buffer, and first.Raw's
	// capacity runs to the end of that buffer, so this is the whole run.
	span := lineSpan(recs)
	bb.copyOut(recs, recs[0].Raw[:span:span])
}

// lineSpan is the length of the stream from the first record's line to
// the end of the last one's (its newline not included), for records that
// are consecutive lines of one stream.
func lineSpan(recs []stages.Record) int {
	first, last := &recs[0], &recs[len(recs)-1]
	return int(last.Offset-first.Offset) + len(last.Raw)
}

// copyOut copies src, the stream holding recs's lines from the first
// one's, into one buffer the batch owns, and points recs there.
func (bb *batchBuilder) copyOut(recs []stages.Record, src []byte) {
	arena := stages.NewBuffer(len(src))[:len(src)]
	copy(arena, src)
	bb.b.Own(arena)
	base := recs[0].Offset
	for i := range recs {
		r := &recs[i]
		rel := int(r.Offset - base)
		end := rel + len(r.Raw)
		r.Raw = arena[rel:end:end]
	}
}

// unpin settles the records of b in sp's buffer: at least pinMin bytes
// of lines keep it (handOver); fewer, such as a few lines of a followed
// file, are copied out, newlines included, and the buffer goes on
// serving its file.
func (bb *batchBuilder) unpin(sp *lineSplitter) {
	if sp.runN > 0 {
		if sp.runSize >= pinMin {
			sp.handOver()
			return
		}
		lo := sp.index(sp.runOff)
		arena := stages.NewBuffer(sp.runSize)[:sp.runSize]
		copy(arena, sp.buf[lo:lo+sp.runSize])
		bb.b.Own(arena)
		bb.b.AddLines(arena, sp.runN, sp.runOrigin, sp.runOff)
		sp.pin, sp.runN = nil, 0
		return
	}
	recs := bb.b.Records[sp.pinFirst : sp.pinFirst+sp.pinN]
	span := lineSpan(recs)
	if span >= pinMin {
		sp.handOver()
		return
	}
	from := recs[0].Offset
	to := from + int64(span)
	if sp.done > to {
		to++ // the newline after the last line, so that a sink finds one run
	}
	bb.copyOut(recs, sp.stream(from, to))
	sp.pin = nil
}

// settle copies the batch's lines out of sp's buffer now, before the
// batch is finished, when they are too few to take the buffer over (see
// unpin), so that the buffer can serve the next file of the same pass; it
// reports whether the buffer is free of the batch. Call it after seal.
func (bb *batchBuilder) settle(sp *lineSplitter) bool {
	if sp.pin == nil {
		return true
	}
	if sp.pin != bb.b || sp.runSize >= pinMin && sp.runN > 0 || sp.runN == 0 && lineSpan(bb.b.Records[sp.pinFirst:sp.pinFirst+sp.pinN]) >= pinMin {
		return false
	}
	bb.unpin(sp)
	return true
}

// finish seals and returns the batch, or nil when it is empty.
func (bb *batchBuilder) finish() *stages.Batch {
	bb.seal()
	for _, sp := range bb.pinned {
		if sp.pin == bb.b {
			bb.unpin(sp)
		}
	}
	b := bb.b
	bb.b = nil
	clear(bb.pinned)
	bb.pinned = bb.pinned[:0]
	if bb.lastN = b.Len(); bb.lastN > 0 {
		bb.avg = bb.bytes / bb.lastN
	}
	bb.runSp = nil
	if b.Len() == 0 && len(b.Rejects) == 0 {
		return nil
	}
	return b
}
