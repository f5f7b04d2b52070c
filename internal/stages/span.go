package stages

import "unsafe"

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
// read them: n lines back to back, each followed by a newline, from
// address lo for size bytes (the last newline included).
type lineRun struct {
	lo   uintptr
	size int
	n    int
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
	b.runs = append(b.runs, lineRun{lo: uintptr(unsafe.Pointer(unsafe.SliceData(lines))), size: len(lines), n: n})
}

// markedRun returns the size in bytes of the run MarkLines vouched for
// that starts at address lo, when b.Records[i:] begins with its records
// back to back, and moves that run first in b.runs; 0 otherwise.
func (b *Batch) markedRun(lo uintptr, i int) int {
	for k := range b.runs {
		m := b.runs[k]
		if m.lo != lo {
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
		if next != lo+uintptr(m.size) {
			return 0
		}
		b.runs[0], b.runs[k] = m, b.runs[0]
		return m.size
	}
	return 0
}
