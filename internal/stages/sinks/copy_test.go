package sinks

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/etld/etld/internal/stages"
)

// readBatch returns a batch made like the file source makes one from a
// file it reads once: the file's bytes read into an owned buffer given
// with OwnRead, each Raw pointing at its line.
func readBatch(t *testing.T, f *os.File) *stages.Batch {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	buf := stages.NewBuffer(int(fi.Size()))[:fi.Size()]
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	b := &stages.Batch{}
	b.OwnRead(buf, f, 0)
	for off := 0; off < len(buf); {
		n := bytes.IndexByte(buf[off:], '\n')
		b.Records = append(b.Records, stages.Record{Raw: buf[off : off+n : off+n], Offset: int64(off)})
		off += n + 1
	}
	return b
}

// Lines a source read from a file are copied from it inside the kernel
// (etld_sink_copied_bytes_total), byte for byte; from a file truncated
// or closed since the read, the sink writes what it cannot copy from the
// batch's buffer: nothing lost, nothing stale.
func TestFileSinkCopiesFromSourceFile(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("copy_file_range is Linux only")
	}
	dir := t.TempDir()
	ctx := context.Background()
	open := func(i int) (*os.File, []byte) {
		var data []byte
		for n := 0; len(data) < 1<<20; n++ {
			data = append(data, `{"feed":`+strconv.Itoa(i)+`,"n":`+strconv.Itoa(n)+`,"pad":"`+string(bytes.Repeat([]byte{'x'}, n%50))+"\"}\n"...)
		}
		path := filepath.Join(dir, "in"+strconv.Itoa(i)+".jsonl")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f, data
	}
	c := NewFileConfig()
	c.Path = "out.jsonl"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.ResolvePaths(dir)
	s := NewFileSink(stages.Settings{}, c)
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	var want []byte
	intact, intactData := open(0)
	truncated, truncData := open(1)
	closed, closedData := open(2)
	batches := []*stages.Batch{readBatch(t, intact), readBatch(t, truncated), readBatch(t, closed)}
	want = append(append(append(want, intactData...), truncData...), closedData...)
	if err := os.Truncate(truncated.Name(), int64(len(truncData)/3)); err != nil {
		t.Fatal(err)
	}
	if err := closed.Close(); err != nil {
		t.Fatal(err)
	}
	for _, b := range batches {
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if size := s.Active().Size; size != int64(len(want)) {
		t.Errorf("Active().Size = %d, want %d", size, len(want))
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range batches {
		b.Release()
	}
	if got := readAll(t, c.Path); !bytes.Equal(got, want) {
		t.Errorf("output differs from the input at byte %d (%d bytes, want %d)", diffAt(got, want), len(got), len(want))
	}
	direct, copied := testutil.ToFloat64(s.direct), testutil.ToFloat64(s.copied)
	// The intact file whole, and the third of the truncated one left.
	if wantCopied := float64(len(intactData) + len(truncData)/3); copied != wantCopied {
		t.Errorf("copied %v bytes, want %v (direct %v)", copied, wantCopied, direct)
	}
	if direct != float64(len(want)) {
		t.Errorf("wrote %v bytes in place, want all %d", direct, len(want))
	}
}
