package stages

import (
	"testing"
	"unsafe"
)

func TestNewBufferSizes(t *testing.T) {
	for _, tt := range []struct{ n, wantCap int }{
		{0, 0}, {100, 100}, {2047, 2047}, {2048, 4096}, {4096, 4096}, {4097, 8192},
		{200 << 10, 256 << 10}, {4 << 20, 4 << 20}, {4<<20 + 1, 4<<20 + 1},
	} {
		b := NewBuffer(tt.n)
		if len(b) != 0 || cap(b) != tt.wantCap {
			t.Errorf("NewBuffer(%d): len %d cap %d, want 0 and %d", tt.n, len(b), cap(b), tt.wantCap)
		}
	}
	for _, tt := range []struct{ n, wantCap int }{{0, 16}, {16, 16}, {17, 32}, {1000, 1024}, {4096, 4096}, {5000, 5000}} {
		r := NewRecords(tt.n)
		if len(r) != 0 || cap(r) != tt.wantCap {
			t.Errorf("NewRecords(%d): len %d cap %d, want 0 and %d", tt.n, len(r), cap(r), tt.wantCap)
		}
	}
}

// TestRelease checks that Release hands owned buffers and the Records
// array back for reuse, drops the records' references, and leaves alone
// what it does not own.
func TestRelease(t *testing.T) {
	o := &Origin{Source: "s"}
	for attempt := 0; ; attempt++ {
		buf := append(NewBuffer(100<<10), "hello"...)
		recs := append(NewRecords(1000), Record{Raw: buf[:5:5], Origin: o})
		b := &Batch{Records: recs}
		b.Own(buf)
		b.Release()
		if b.Records != nil || b.owned != nil {
			t.Fatalf("after Release: Records %v owned %v, want nil", b.Records, b.owned)
		}
		if r := recs[:1][0]; r.Raw != nil || r.Origin != nil {
			t.Fatalf("released Records array still references %q %v", r.Raw, r.Origin)
		}
		// sync.Pool may drop items (at a GC, or under the race detector,
		// on purpose, a quarter of the time): allow a few attempts.
		nb, nr := NewBuffer(100<<10), NewRecords(1000)
		if unsafe.SliceData(nb) == unsafe.SliceData(buf) && unsafe.SliceData(nr) == unsafe.SliceData(recs) {
			break
		}
		if attempt == 50 {
			t.Fatal("released buffers are never reused")
		}
	}

	// A Records array of a size NewRecords never gives out is left to the
	// garbage collector.
	odd := make([]Record, 1, 1000)
	odd[0] = Record{Origin: o}
	b := &Batch{Records: odd}
	b.Release()
	for range 10 {
		if unsafe.SliceData(NewRecords(1000)) == unsafe.SliceData(odd) {
			t.Fatal("Release pooled a Records array it did not hand out")
		}
	}
}
