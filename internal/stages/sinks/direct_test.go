package sinks

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"strconv"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/etld/etld/internal/stages"
)

// inPlaceBatch returns a batch made like a line source makes one when
// it hands its read buffer over: lines read into one owned buffer, each
// Raw pointing at its line, newline after it. With open, the last line
// has no newline (the end of a file).
func inPlaceBatch(lines []string, open bool) *stages.Batch {
	var text []byte
	for i, l := range lines {
		text = append(text, l...)
		if i < len(lines)-1 || !open {
			text = append(text, '\n')
		}
	}
	buf := stages.NewBuffer(len(text) + 1)[:len(text)+1]
	copy(buf, text)
	buf[len(text)] = 'X' // stale bytes after the data: no newline
	b := &stages.Batch{Records: make([]stages.Record, len(lines))}
	b.Own(buf)
	off := 0
	for i, l := range lines {
		line := buf[off:]
		b.Records[i] = stages.Record{Raw: line[:len(l):len(l)], Offset: int64(off)}
		off += len(l) + 1
	}
	return b
}

// directBatches returns a sequence of batches that mixes what the file sink
// writes in place (long runs) with what it copies: short runs, records a
// step rewrote, a last line without its newline.
func directBatches(rng *rand.Rand) (batches []*stages.Batch, want []byte) {
	seq := 0
	for range 40 {
		n := 1 + rng.Intn(2500)
		lines := make([]string, n)
		for i := range lines {
			lines[i] = "line-" + strconv.Itoa(seq) + "-" + string(bytes.Repeat([]byte("z"), rng.Intn(200)))
			seq++
		}
		b := inPlaceBatch(lines, rng.Intn(5) == 0)
		switch rng.Intn(4) {
		case 0: // a step rewrote some records
			for range 1 + rng.Intn(3) {
				i := rng.Intn(n)
				b.Records[i].Raw = []byte(`{"rewritten":` + strconv.Itoa(i) + `}`)
			}
		case 1: // a step dropped some
			i := rng.Intn(n)
			b.Records = append(b.Records[:i], b.Records[i+1:]...)
		}
		for _, r := range b.Records {
			want = append(append(want, r.Raw...), '\n')
		}
		batches = append(batches, b)
	}
	return batches, want
}

// TestFileSinkInPlaceMatchesBuffered writes the same batches through the
// in-place path (json, no size rotation) and through the buffered one
// (a rotate.max_size far above the output keeps every line in one file
// but takes the other path): the files are byte-identical and hold
// exactly the records' lines, and only the first sink counts bytes
// written in place.
func TestFileSinkInPlaceMatchesBuffered(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	open := func(name string, maxSize stages.ByteSize) *FileSink {
		c := NewFileConfig()
		c.Path, c.Rotate.MaxSize = name, maxSize
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		c.ResolvePaths(dir)
		s := NewFileSink(stages.Settings{}, c)
		if err := s.Open(ctx); err != nil {
			t.Fatal(err)
		}
		return s
	}
	fast, slow := open("fast.jsonl", 0), open("slow.jsonl", 1<<30)
	var want []byte
	for seed := range int64(3) {
		rng := rand.New(rand.NewSource(seed))
		batches, w := directBatches(rng)
		again, _ := directBatches(rand.New(rand.NewSource(seed)))
		want = append(want, w...)
		for i := range batches {
			if err := fast.Write(ctx, batches[i]); err != nil {
				t.Fatal(err)
			}
			if err := slow.Write(ctx, again[i]); err != nil {
				t.Fatal(err)
			}
		}
		if err := fast.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*FileSink{fast, slow} {
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	gotFast, gotSlow := readAll(t, fast.cfg.Path), readAll(t, slow.cfg.Path)
	if !bytes.Equal(gotFast, want) {
		t.Errorf("in-place output differs from the records' lines at byte %d", diffAt(gotFast, want))
	}
	if !bytes.Equal(gotFast, gotSlow) {
		t.Errorf("in-place and buffered outputs differ at byte %d", diffAt(gotFast, gotSlow))
	}
	direct := testutil.ToFloat64(fast.direct)
	if direct == 0 || direct >= float64(len(want)) {
		t.Errorf("%v bytes written in place of %d; want most, not all (some records were rewritten)", direct, len(want))
	}
	if n := testutil.ToFloat64(slow.direct); n != 0 {
		t.Errorf("the sink with rotate.max_size wrote %v bytes in place; want 0", n)
	}
	t.Logf("%v of %d bytes written in place", direct, len(want))
}

// TestFileSinkInPlaceWriteFaults: in-place writes that fail (a full disk)
// take none of the run; the retry of the trimmed batch writes every line
// once.
func TestFileSinkInPlaceWriteFaults(t *testing.T) {
	fs := newFaultSink(t, func(*FileConfig) {})
	fs.write.err = syscall.ENOSPC
	rng := rand.New(rand.NewSource(9))
	batches, want := directBatches(rng)
	ctx := context.Background()
	for _, b := range batches {
		if rng.Intn(2) == 0 {
			fs.write.fails = 1 + rng.Intn(3)
		}
		fs.retry("Write", func() error { return fs.sink.Write(ctx, b) })
		if rng.Intn(4) == 0 {
			fs.retry("Flush", func() error { return fs.sink.Flush(ctx) })
			fs.checkFlushed("Flush")
		}
	}
	fs.retry("Flush", func() error { return fs.sink.Flush(ctx) })
	fs.checkFlushed("the last Flush")
	if fs.write.failed == 0 || testutil.ToFloat64(fs.sink.direct) == 0 {
		t.Fatalf("%d failed writes, %v bytes in place: the test tests nothing", fs.write.failed, testutil.ToFloat64(fs.sink.direct))
	}
	if got := readAll(t, fs.path); !bytes.Equal(got, want) {
		t.Fatalf("after %d failed writes the output differs from the lines at byte %d", fs.write.failed, diffAt(got, want))
	}
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// diffAt returns the index of the first byte where a and b differ.
func diffAt(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}
