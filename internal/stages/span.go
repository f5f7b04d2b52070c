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
