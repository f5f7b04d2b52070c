package sources

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/stagetest"
)

// randomLines returns n lines of random lengths (some empty, a few over
// 300 KiB, longer than a read buffer), the last without a newline when
// open.
func randomLines(rng *rand.Rand, n int, open bool) []byte {
	var b []byte
	for i := range n {
		size := rng.IntN(400)
		switch rng.IntN(50) {
		case 0:
			size = 0
		case 1:
			if rng.IntN(20) == 0 {
				size = 300<<10 + rng.IntN(1000)
			}
		}
		start := len(b)
		b = fmt.Appendf(b, "%d:", i)
		for len(b)-start < size {
			b = append(b, 'a'+byte(rng.IntN(26)))
		}
		if i < n-1 || !open {
			b = append(b, '\n')
		}
	}
	return b
}

// window holds the last batches a source returned, like the edges in
// front of a sink, and checks each against the lines it must hold when
// it leaves (so a read that reused a buffer a held batch points into
// shows) before releasing it, which hands its buffers to the next reads.
type window struct {
	t       *testing.T
	held    []heldBatch
	want    []string // every line, in order
	next    int      // index in want of the next record to come
	inPlace int      // batches whose records are all one run per buffer
	vouched int      // batches whose first run the source marked (see vouched)
	batches int
}

type heldBatch struct {
	b     *stages.Batch
	first int
}

func (w *window) add(b *stages.Batch) {
	w.t.Helper()
	w.batches++
	if spanned(b) {
		w.inPlace++
	}
	if vouched(b) {
		w.vouched++
	}
	w.held = append(w.held, heldBatch{b, w.next})
	w.next += len(b.Records)
	if len(w.held) > edgeDepth {
		w.drop()
	}
}

// edgeDepth is how many batches the window holds.
const edgeDepth = 4

func (w *window) drop() {
	w.t.Helper()
	h := w.held[0]
	w.held = w.held[1:]
	for i, r := range h.b.Records {
		k := h.first + i
		if k >= len(w.want) || string(r.Raw) != w.want[k] {
			got := string(r.Raw)
			wantLine := "(none)"
			if k < len(w.want) {
				wantLine = w.want[k]
			}
			w.t.Fatalf("record %d reads %.60q, want %.60q (a later read overwrote it?)", k, got, wantLine)
		}
	}
	h.b.Release()
}

func (w *window) flush() {
	w.t.Helper()
	for len(w.held) > 0 {
		w.drop()
	}
	if w.next != len(w.want) {
		w.t.Fatalf("read %d lines, want %d", w.next, len(w.want))
	}
}

// spanned reports whether a sink can write all of b's records without
// copying them (stages.Batch.Span), the last one without a newline aside.
func spanned(b *stages.Batch) bool {
	i := 0
	for i < len(b.Records) {
		_, n := b.Span(i)
		if n == 0 {
			return false
		}
		i += n
	}
	return len(b.Records) > 0
}

// vouched reports whether a sink takes the run starting at b's first
// record on the source's word (stages.Batch.MarkLines), without reading
// the newlines: with the newline after record 0 changed behind the
// batch's back, Span still covers record 1. It puts the newline back.
func vouched(b *stages.Batch) bool {
	if len(b.Records) < 2 {
		return false
	}
	r0, r1 := b.Records[0].Raw, b.Records[1].Raw
	gap := unsafe.Add(unsafe.Pointer(unsafe.SliceData(r0)), len(r0))
	if gap != unsafe.Add(unsafe.Pointer(unsafe.SliceData(r1)), -1) || *(*byte)(gap) != '\n' {
		return false
	}
	*(*byte)(gap) = 'X'
	defer func() { *(*byte)(gap) = '\n' }()
	_, n := b.Span(0)
	return n >= 2
}

// TestFileSourceLinesInPlace reads files of random lines through a
// finite file source, whose batches take over its read buffers instead
// of copying the lines out: every line comes out once, in order, and
// stays intact while the following batches are read into recycled
// buffers; most batches are runs a sink writes as they are.
func TestFileSourceLinesInPlace(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 17))
			dir := t.TempDir()
			w := &window{t: t}
			for f := range 3 {
				data := randomLines(rng, 3000+rng.IntN(3000), f == 2)
				writeFile(t, filepath.Join(dir, fmt.Sprintf("in-%d.log", f)), string(data))
				lines, _, rejects := reference(data, defaultMaxLineBytes)
				if len(rejects) > 0 {
					t.Fatal("no line is over max_line_bytes")
				}
				w.want = append(w.want, lines...)
			}
			cfg := NewFileConfig()
			cfg.Path, cfg.Follow = filepath.Join(dir, "in-*.log"), false
			stagetest.ReadToEnd(t, newFile(t, cfg), testTimeout, w.add)
			w.flush()
			if w.inPlace*2 < w.batches {
				t.Errorf("%d batches of %d are runs a sink can write in place; want most", w.inPlace, w.batches)
			}
			t.Logf("%d batches, %d in place, %d marked", w.batches, w.inPlace, w.vouched)
			if w.vouched*2 < w.inPlace {
				t.Errorf("the source marked the lines of %d batches of the %d in place; want most", w.vouched, w.inPlace)
			}
		})
	}
}

// TestFileSourceFollowInPlace follows a file that grows by single lines
// (copied into small batches, the buffer stays with the file) and by
// large chunks (taken over in place), with partial lines in between.
func TestFileSourceFollowInPlace(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	path := filepath.Join(t.TempDir(), "grow.log")
	writeFile(t, path, "")
	cfg := NewFileConfig()
	cfg.Path = path
	src := newFile(t, cfg)
	w := &window{t: t}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var pending []byte // appended, not yet a whole line
	for round := range 40 {
		var chunk []byte
		if round%3 == 0 {
			chunk = randomLines(rng, 2000, false) // hundreds of KiB
		} else {
			chunk = []byte(strings.Repeat("x", rng.IntN(50)) + fmt.Sprintf("small-%d\n", round))
		}
		cut := rng.IntN(len(chunk))
		appendFile(t, path, string(chunk[:cut]))
		appendFile(t, path, string(chunk[cut:]))
		pending = append(pending, chunk...)
		lines, _, _ := reference(pending, defaultMaxLineBytes)
		pending = pending[:0]
		w.want = append(w.want, lines...)
		for w.next < len(w.want) {
			b, err := src.Read(ctx)
			if err != nil {
				t.Fatalf("Read: %v (read %d lines of %d)", err, w.next, len(w.want))
			}
			if len(b.Records) > 0 && w.next+len(b.Records) > len(w.want) {
				t.Fatalf("read %d lines, want %d", w.next+len(b.Records), len(w.want))
			}
			w.add(b)
		}
	}
	w.flush()
	if w.inPlace == 0 {
		t.Errorf("no batch of %d is a run a sink can write in place", w.batches)
	}
}

// TestSplitterReadsWhatTheBatchWants: in place, a read is cut to about
// what the batch still needs, so that handing the buffer over leaves few
// bytes to move to the next one.
func TestSplitterReadsWhatTheBatchWants(t *testing.T) {
	// Lines of 160 bytes, as in the benchmarks: a batch (160 KiB) is more
	// than the buffer sized for the first look (128 KiB).
	line := bytes.Repeat([]byte("y"), 159)
	line = append(line, '\n')
	var bb batchBuilder
	s := &lineSplitter{max: defaultMaxLineBytes}
	bb.start()
	bb.take(s, &stages.Origin{})
	if dst := s.space(nil); len(dst) >= readBlock {
		t.Fatalf("first read of %d bytes; want a first look, less than a buffer", len(dst))
	}
	// The stream is an endless run of equal lines, which the reads cut
	// anywhere.
	stream := func(dst []byte, at int) int {
		for i := range dst {
			dst[i] = line[(at+i)%len(line)]
		}
		return len(dst)
	}
	read := 0
	for batch := range 4 {
		reads := 0
		for !bb.take(s, &stages.Origin{}) {
			bb.seal() // as the file source does before a refill
			dst := s.space(nil)
			read += stream(dst, read)
			s.advance(len(dst))
			reads++
		}
		b := bb.finish()
		if len(b.Records) != batchMaxRecords {
			t.Fatalf("batch %d has %d records; want %d", batch, len(b.Records), batchMaxRecords)
		}
		// After the first look, the buffer is big enough for a whole
		// batch: one read, and one run for the sink to write.
		if _, n := b.Span(0); batch > 0 && (reads != 1 || n != len(b.Records)) {
			t.Errorf("batch %d took %d reads and its first run is %d records of %d; want 1 read, one run", batch, reads, n, len(b.Records))
		}
		// The reads ask for a thirty-second more than the estimate, and
		// a few lines: about 5.6 KiB here, of a 160 KiB batch.
		if left := s.buffered(); left > 8<<10 {
			t.Errorf("after batch %d, %d bytes are left to move to a new buffer; want at most a few lines", batch, left)
		}
		b.Release()
		bb.start()
	}
}

// TestSplitterSmallMaxLineBytes: in place, a small max_line_bytes does
// not make the reads small (they were max_line_bytes+1 bytes, a
// passthrough with max_line_bytes: 1000 ran twelve times slower), and
// lines over it are still rejected whole, with the lines around them
// intact.
func TestSplitterSmallMaxLineBytes(t *testing.T) {
	var bb batchBuilder
	s := &lineSplitter{max: 1000}
	bb.start()
	bb.take(s, &stages.Origin{})
	if dst := s.space(nil); len(dst) <= 4*s.max {
		t.Fatalf("read of %d bytes with max_line_bytes %d; want a block", len(dst), s.max)
	}

	dir := t.TempDir()
	var data []byte
	var want []string
	for i := range 3000 {
		line := fmt.Sprintf("line %d ", i)
		if i%500 == 7 {
			line += strings.Repeat("z", 1500) // over max_line_bytes
		} else {
			want = append(want, line)
		}
		data = append(data, line+"\n"...)
	}
	writeFile(t, filepath.Join(dir, "small.log"), string(data))
	cfg := NewFileConfig()
	cfg.Path, cfg.Follow, cfg.MaxLineBytes = filepath.Join(dir, "small.log"), false, 1000
	w := &window{t: t, want: want}
	rejects := 0
	stagetest.ReadToEnd(t, newFile(t, cfg), testTimeout, func(b *stages.Batch) {
		for _, r := range b.Rejects {
			if r.Length < 1500 {
				t.Errorf("reject of %d bytes; want a line of over 1500", r.Length)
			}
			rejects++
		}
		w.add(b)
	})
	w.flush()
	if rejects != 6 {
		t.Errorf("%d lines rejected; want 6", rejects)
	}
}
