package stages

import (
	"os"
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

// readFrom says that an owned buffer holds bytes of a file as they were
// when read: buf[k] was read from f at offset off+k (see OwnRead).
type readFrom struct {
	base uintptr // the buffer's first byte
	f    *os.File
	off  int64
}

// OwnRead is Own for a buffer a source filled by reading f at known
// offsets: buf[k], for every k the records point at, was read from f at
// offset off+k. A file sink may then copy a Span of those records from f
// to its output inside the kernel (copy_file_range) instead of writing
// them from memory; see SpanFile for what that promises and what not.
// The batch keeps f referenced until it is released; f may be closed
// meanwhile (a sink then writes from the buffer).
func (b *Batch) OwnRead(buf []byte, f *os.File, off int64) {
	b.Own(buf)
	if cap(buf) == 0 || f == nil {
		return
	}
	b.read = append(b.read, readFrom{base: uintptr(unsafe.Pointer(unsafe.SliceData(buf[:1]))), f: f, off: off})
}

// SpanFile returns the file that lines, a run returned by Span, was read
// from and the file offset of its first byte, or nil when the batch does
// not know (the buffer was not given with OwnRead).
//
// The bytes in memory are what was read; the file's bytes at those
// offsets are what it holds now. A file that shrank since (truncation)
// shows as a short copy, and the caller writes the rest from memory; a
// file rewritten in place at the same offsets cannot be told apart
// cheaply, which is why only sources that read files once to their end
// (not followed files, whose writers may rewrite them) use OwnRead.
func (b *Batch) SpanFile(lines []byte) (*os.File, int64) {
	if len(b.read) == 0 || len(lines) == 0 {
		return nil, 0
	}
	buf := b.owner(lines)
	if buf == nil {
		return nil, 0
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	for _, r := range b.read {
		if r.base == base {
			return r.f, r.off + int64(uintptr(unsafe.Pointer(unsafe.SliceData(lines)))-base)
		}
	}
	return nil, 0
}
