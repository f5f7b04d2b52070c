package stages

import (
	"bytes"
	"slices"
	"unsafe"
)

// Span finds the lines a sink can write without copying them: the
// longest run of records from b.Records[i:] that lie back to back in one
// buffer the batch owns, each followed by a newline in that buffer.
// lines is that memory, byte for byte what writing each record's Raw
// plus "\n" would give, and n the number of records it covers; n is 0
// (lines nil) when record i is not so placed.
//
// A line source that hands over its read buffer instead of copying the
// lines out of it (the file and stdin sources without multiline) makes
// batches that are one such run per buffer, except a file's last line
// when it has no newline; a step that rewrites a record's Raw breaks the
// run there. The test is on the memory itself, so lines is right
// whatever produced the batch; like the records, it is valid until the
// batch is released.
func (b *Batch) Span(i int) (lines []byte, n int) {
	if i < 0 || i >= len(b.Records) {
		return nil, 0
	}
	buf := b.owner(b.Records[i].Raw)
	if buf == nil {
		return nil, 0
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	start := int(uintptr(unsafe.Pointer(unsafe.SliceData(b.Records[i].Raw))) - base)
	if n := b.markedRun(base+uintptr(start), i); n > 0 {
		next := start + n
		return buf[start:next:next], b.runs[0].n // markedRun moved the run first
	}
	next := start // where the next record must start
	for _, r := range b.Records[i:] {
		off := int(uintptr(unsafe.Pointer(unsafe.SliceData(r.Raw))) - base)
		end := off + len(r.Raw)
		// A Raw of length 0 may point anywhere (a nil slice, or one a
		// step emptied): its offset is compared like any other, and a
		// pointer outside buf gives an offset that is not next (the
		// subtraction wraps, so it is negative or past the buffer).
		if off != next || end >= len(buf) || buf[end] != '\n' {
			break
		}
		next = end + 1
		n++
	}
	if n == 0 {
		return nil, 0
	}
	return buf[start:next:next], n
}

// owner returns the buffer b owns (see Own) that p starts in, whole (to
// its capacity), or nil.
func (b *Batch) owner(p []byte) []byte {
	if cap(p) == 0 && len(p) == 0 && unsafe.SliceData(p) == nil {
		return nil
	}
	a := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
	for _, buf := range b.owned {
		if within(a, buf) {
			return buf[:cap(buf)]
		}
	}
	return nil
}

// lineRun is a run of lines in a buffer a batch owns, as its producer
// read them: n lines back to back, each followed by a newline (the last
// newline included in lines).
type lineRun struct {
	lines []byte
	n     int
	// Set by AddLines: where the lines are from, to make their Records
	// (SplitRuns).
	origin *Origin
	off    int64
}

// Line runs.
//
// A batch of line runs holds its records as runs of lines in buffers it
// owns, counted but not split into Records: a line source whose batches
// go straight to sinks that write lines as they were read (no step, no
// route, no ordered merge looks at a record on the way) hands over what
// it read that way (see LineRunSource), and saves splitting each line
// and writing its Record, which the sink would only throw away.
//
// The invariant, while b.lines > 0: Records is empty, and b.runs are the
// batch's records in order, run k holding runs[k].n lines back to back,
// each followed by a newline, read from runs[k].origin at stream offset
// runs[k].off; b.lines is the sum of the n. Len counts them. A stage
// that wants Records calls SplitRuns, which makes exactly the Records
// the line source would have made (Raw each line without its newline,
// capacity-limited, Offset its stream offset) and leaves the runs as
// MarkLines would have: a batch of Records is as it always was. The
// runtime splits every batch of runs before a worker, a tap, a fan-out
// to several edges, an ordered merge or a sink that does not write runs
// (see LineRunWriter) sees it; only a sink that does looks at the runs
// (LineRun, DropLineRuns).

// LineRunSource is a line source that can hand its lines over as runs
// (see AddLines). The runtime calls SetLineRuns(true) before Open when
// nothing between the source and its sinks looks at a record; the
// source may still send batches of Records.
type LineRunSource interface {
	SetLineRuns(on bool)
}

// LineRunWriter is a sink that takes batches of line runs (see
// AddLines) as they are: its Write reads them with LineRun and removes
// those it wrote with DropLineRuns (or calls SplitRuns first). The
// runtime splits the runs before any other sink's Write. A sink's config
// may implement it too: the runtime turns runs on for a source only when
// the config of every sink the source feeds answers true (the sink
// writes them as they are, instead of splitting them).
type LineRunWriter interface {
	WritesLineRuns() bool
}

// AddLines appends n lines, back to back in memory b owns (see Own),
// each followed by a newline ("l1\n...ln\n"), read from o at stream
// offset off, to b's records, as a run (see Line runs): they are not
// split into Records unless b already has Records, which they are then
// appended to at once.
func (b *Batch) AddLines(lines []byte, n int, o *Origin, off int64) {
	if n <= 0 || len(lines) == 0 {
		return
	}
	r := lineRun{lines: lines, n: n, origin: o, off: off}
	if len(b.Records) > 0 {
		b.Records = AppendLineRecords(b.Records, lines, n, o, off)
		b.runs = append(b.runs, r)
		return
	}
	if b.lines == 0 {
		b.runs = b.runs[:0] // vouching for records no longer there
	}
	b.runs = append(b.runs, r)
	b.lines += n
}

// SplitRuns turns a batch of line runs into a batch of Records (see
// Line runs); a batch of Records is left as it is.
func (b *Batch) SplitRuns() {
	if b.lines == 0 {
		return
	}
	recs := b.Records[:0]
	if cap(recs) < b.lines {
		recs = NewRecords(b.lines)
	}
	for _, r := range b.runs {
		recs = AppendLineRecords(recs, r.lines, r.n, r.origin, r.off)
	}
	b.Records, b.lines = recs, 0
}

// AppendLineRecords appends the n newline-terminated lines of data, read
// from o at stream offset off, to recs as the Records a line source
// makes of them: Raw each line without its newline, capacity-limited,
// Offset its stream offset.
func AppendLineRecords(recs []Record, data []byte, n int, o *Origin, off int64) []Record {
	recs = slices.Grow(recs, n)
	i := 0
	for range n {
		rest := data[i:]
		j := bytes.IndexByte(rest, '\n')
		recs = append(recs, Record{Raw: rest[:j:j], Origin: o, Offset: off + int64(i)})
		i += j + 1
	}
	return recs
}

// LineRuns is the number of line runs of a batch of line runs, 0 for a
// batch of Records (see Line runs).
func (b *Batch) LineRuns() int {
	if b.lines == 0 {
		return 0
	}
	return len(b.runs)
}

// LineRun returns the lines of run k of a batch of line runs, newlines
// included, and how many they are.
func (b *Batch) LineRun(k int) (lines []byte, n int) {
	r := &b.runs[k]
	return r.lines, r.n
}

// DropLineRuns removes the first k runs of a batch of line runs: a sink
// wrote them.
func (b *Batch) DropLineRuns(k int) {
	for _, r := range b.runs[:k] {
		b.lines -= r.n
	}
	b.runs = b.runs[k:]
}

// LineBytes is the size of the batch's records as lines: the runs'
// bytes, or each Raw plus a newline.
func (b *Batch) LineBytes() int {
	n := 0
	if b.lines > 0 {
		for _, r := range b.runs {
			n += len(r.lines)
		}
		return n
	}
	for i := range b.Records {
		n += len(b.Records[i].Raw) + 1
	}
	return n
}

// MarkLines tells Span that lines, memory in a buffer b owns (see Own),
// holds n lines back to back, each followed by a newline ("l1\n...ln\n"),
// and that b's records are those lines (each Raw one line without its
// newline). A line source that hands its read buffer over calls it, as it
// has just seen every byte; Span then finds the run by the records alone,
// without reading the lines again on the sink's side, where reading them
// was a cache miss per line (a fifth of a passthrough sink's own CPU).
//
// What a step does to the records afterwards cannot make Span wrong: it
// still checks that n records lie back to back, one byte apart, from the
// run's first byte to its last newline. A Raw a step cut from those
// records lies within one line, so it never covers a newline; n records
// covering the run with n-1 one-byte gaps then have the run's n-1
// newlines as their gaps, and the run ends on the last one.
func (b *Batch) MarkLines(lines []byte, n int) {
	if n <= 0 || len(lines) == 0 {
		return
	}
	b.runs = append(b.runs, lineRun{lines: lines, n: n})
}

// markedRun returns the size in bytes of the run MarkLines vouched for
// that starts at address lo, when b.Records[i:] begins with its records
// back to back, and moves that run first in b.runs; 0 otherwise.
func (b *Batch) markedRun(lo uintptr, i int) int {
	for k := range b.runs {
		m := b.runs[k]
		if uintptr(unsafe.Pointer(unsafe.SliceData(m.lines))) != lo {
			continue
		}
		if len(b.Records)-i < m.n {
			return 0
		}
		next := lo // where the next record must start
		for _, r := range b.Records[i : i+m.n] {
			if uintptr(unsafe.Pointer(unsafe.SliceData(r.Raw))) != next {
				return 0
			}
			next += uintptr(len(r.Raw)) + 1
		}
		if next != lo+uintptr(len(m.lines)) {
			return 0
		}
		b.runs[0], b.runs[k] = m, b.runs[0]
		return len(m.lines)
	}
	return 0
}
