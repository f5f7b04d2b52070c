package stages

import (
	"math/bits"
	"sync"
	"unsafe"
)

// Buffer recycling.
//
// The records of a batch point into byte buffers: a source's copy of the
// lines it read, a step's rewritten records. A stage that fills such a
// buffer takes it from NewBuffer and gives it to the batch with Own; the
// runtime calls Release once the batch is consumed (written by its sink,
// or left with no record to send), which hands the buffers, and the
// Records array when it came from NewRecords, back to pools. A steady
// pipeline so reuses the same few megabytes instead of allocating about
// twice its throughput for the garbage collector to find again, which was
// most of the CPU time of the benchmark workloads.
//
// Ownership stays simple because a batch has one owner at a time (see
// Batch): the stage that holds it may Own buffers, and only the runtime
// releases it, at the one point where nobody can reference it anymore.

// Pooled capacities are powers of two: buffers of 4 KiB to 4 MiB, Records
// arrays of 16 to 4096 records. Other sizes are plain allocations, which
// Release leaves to the garbage collector.
const (
	minBufShift = 12
	maxBufShift = 22
	minRecShift = 4
	maxRecShift = 12
)

var (
	bufPools [maxBufShift - minBufShift + 1]sync.Pool // of *[]byte, by capacity
	recPools [maxRecShift - minRecShift + 1]sync.Pool // of *[]Record, by capacity
)

// class returns the pool index and the pooled capacity for a request of n,
// or ok false when n is above the largest pooled capacity.
func class(n, lo, hi int) (idx, size int, ok bool) {
	if n > 1<<hi {
		return 0, 0, false
	}
	s := max(bits.Len(uint(max(n, 1)-1)), lo)
	return s - lo, 1 << s, true
}

// pooledClass returns the pool index of capacity c when c is a pooled
// capacity.
func pooledClass(c, lo, hi int) (int, bool) {
	if c < 1<<lo || c > 1<<hi || c&(c-1) != 0 {
		return 0, false
	}
	return bits.Len(uint(c)) - 1 - lo, true
}

// NewBuffer returns an empty byte slice with a capacity of at least n,
// reusing a released buffer when there is one, whose bytes are stale:
// fill it with append or copy. Give it with Own to the batch whose records
// will point into it.
func NewBuffer(n int) []byte {
	b, _ := NewReadBuffer(n)
	return b[:0]
}

// NewReadBuffer is NewBuffer(n)[:n] for a read, and says whether the
// buffer is new (not reused from the pool): a new buffer's pages are not
// mapped yet, and Prefault can map those the read is about to fill with
// one system call rather than a page fault each.
func NewReadBuffer(n int) (buf []byte, fresh bool) {
	idx, size, ok := class(n, minBufShift, maxBufShift)
	if !ok || n < 1<<minBufShift/2 {
		return make([]byte, n), false // small: not worth a 4 KiB buffer
	}
	if p, _ := bufPools[idx].Get().(*[]byte); p != nil {
		return (*p)[:n], false
	}
	return make([]byte, n, size), true
}

// NewRecords returns an empty Records slice with a capacity of at least
// n, reusing the array of a released batch when there is one.
func NewRecords(n int) []Record {
	idx, size, ok := class(n, minRecShift, maxRecShift)
	if !ok {
		return make([]Record, 0, n)
	}
	if p, _ := recPools[idx].Get().(*[]Record); p != nil {
		return (*p)[:0]
	}
	return make([]Record, 0, size)
}

// Own hands buf, which should come from NewBuffer, to b: only b's records
// point into it, so Release may reuse it once b is consumed.
func (b *Batch) Own(buf []byte) { b.owned = append(b.owned, buf) }

// ReleaseUnused hands back to the pools the buffers b owns that no record
// or reject of b points into any more (by Raw or Line): those whose
// records a step has since rewritten into new buffers. A batch that then
// waits (in channels, in an ordered merge) holds only the bytes it can
// still write. The runtime calls it after a worker's steps, when nothing
// but the batch points into its buffers.
func (b *Batch) ReleaseUnused() {
	if len(b.owned) < 2 || b.lines > 0 {
		return // nothing was rewritten, or there is nothing else; or runs, which no step saw
	}
	var small [16]bool
	used := small[:0]
	if len(b.owned) > len(small) {
		used = make([]bool, len(b.owned))
	} else {
		used = small[:len(b.owned)]
	}
	last := -1 // the buffer of the previous record: most records follow it
	nused := 0
	mark := func(p []byte) {
		if len(p) == 0 {
			return
		}
		a := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
		if last >= 0 && within(a, b.owned[last]) {
			return
		}
		for i, buf := range b.owned {
			if within(a, buf) {
				if !used[i] {
					used[i] = true
					nused++
				}
				last = i
				return
			}
		}
	}
	// Raws first, then Lines: a parsed record's Raw and Line are in
	// different buffers, so alternating them missed last every time.
	// Once every buffer is in use there is nothing to release (a step
	// that rewrote every record keeps the source's buffer for the Lines):
	// stop looking.
	for i := 0; i < len(b.Records) && nused < len(used); i++ {
		mark(b.Records[i].Raw)
	}
	for i := 0; i < len(b.Records) && nused < len(used); i++ {
		mark(b.Records[i].Line)
	}
	for i := 0; i < len(b.Rejects) && nused < len(used); i++ {
		mark(b.Rejects[i].Record.Raw)
		mark(b.Rejects[i].Record.Line)
	}
	if nused == len(used) {
		return
	}
	kept := b.owned[:0]
	for i, buf := range b.owned {
		if used[i] {
			kept = append(kept, buf)
			continue
		}
		if idx, ok := pooledClass(cap(buf), minBufShift, maxBufShift); ok {
			buf = buf[:0]
			poison(buf[:cap(buf)])
			bufPools[idx].Put(&buf)
		}
	}
	clear(b.owned[len(kept):])
	b.owned = kept
	// A released buffer may come back as another stage's (NewBuffer), for
	// records of this batch: no run may vouch for its bytes any more.
	b.runs = nil
}

// within reports whether address a is in buf's memory.
func within(a uintptr, buf []byte) bool {
	if cap(buf) == 0 {
		return false
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(buf[:1])))
	return a >= lo && a < lo+uintptr(cap(buf))
}

// Release hands the buffers b owns and its Records array (which b owns
// too, see Batch) back to the pools. The runtime calls it once b is
// consumed: after its sink wrote it, or when it has no record left to
// send. Neither b nor its records (nor copies of them) may be used
// afterwards; the race detector build poisons released buffers so that a
// use shows.
func (b *Batch) Release() {
	for i, buf := range b.owned {
		if idx, ok := pooledClass(cap(buf), minBufShift, maxBufShift); ok {
			buf = buf[:0]
			poison(buf[:cap(buf)])
			bufPools[idx].Put(&buf)
		}
		b.owned[i] = nil
	}
	b.owned = nil
	if idx, ok := pooledClass(cap(b.Records), minRecShift, maxRecShift); ok {
		recs := b.Records[:cap(b.Records)]
		clear(recs) // the pool must not keep the records' bytes and origins alive
		recs = recs[:0]
		recPools[idx].Put(&recs)
	}
	b.DropFields()
	b.Records, b.Rejects = nil, nil
	b.runs, b.lines = nil, 0
}
