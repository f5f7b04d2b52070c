package sinks

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/etld/etld/internal/stages"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// batchOf returns a batch with one record per line.
func batchOf(lines ...string) *stages.Batch {
	b := &stages.Batch{Records: make([]stages.Record, len(lines))}
	for i, l := range lines {
		b.Records[i] = stages.Record{Raw: []byte(l), Offset: -1}
	}
	return b
}

// numbered returns lines "prefix-<i>" padded with x to width bytes.
func numbered(prefix string, from, to, width int) []string {
	var out []string
	for i := from; i < to; i++ {
		s := prefix + "-" + strconv.Itoa(i)
		if len(s) < width {
			s += strings.Repeat("x", width-len(s))
		}
		out = append(out, s)
	}
	return out
}

func TestRegistered(t *testing.T) {
	r := stages.NewRegistry()
	for _, f := range All() {
		if err := r.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := r.Types(stages.KindSink), []string{"file", "stdout"}; !slices.Equal(got, want) {
		t.Fatalf("types = %v, want %v", got, want)
	}
	for _, typ := range []string{"file", "stdout"} {
		f, _ := r.Lookup(stages.KindSink, typ)
		if f.Doc == "" {
			t.Errorf("%s: no Doc", typ)
		}
		if _, err := f.NewSink(stages.Settings{}, f.NewConfig()); err != nil {
			t.Errorf("%s: NewSink: %v", typ, err)
		}
		if _, err := f.NewSink(stages.Settings{}, &struct{}{}); err == nil {
			t.Errorf("%s: NewSink accepted a foreign config", typ)
		}
	}
}

// failingWriter takes up to budget bytes, then fails (after taking part of
// the failing write, like a disk that fills up mid-write).
type failingWriter struct {
	bytes.Buffer
	budget int
}

var errFull = errors.New("no space left on device")

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) <= w.budget {
		w.budget -= len(p)
		return w.Buffer.Write(p)
	}
	n := w.budget
	w.budget = 0
	w.Buffer.Write(p[:n])
	return n, errFull
}

func TestLineWriterKeepsUnwrittenBytes(t *testing.T) {
	w := &failingWriter{budget: 25}
	lw := newLineWriter(w, 16, nil)
	lines := numbered("l", 0, 10, 8) // 9 bytes a line
	var errs int
	b := batchOf(lines...)
	for len(b.Records) > 0 {
		n, err := lw.writeLines(b.Records, -1)
		b.Records = b.Records[n:]
		if err != nil {
			if !errors.Is(err, errFull) {
				t.Fatal(err)
			}
			errs++
			w.budget += 20 // space freed
		}
	}
	for lw.flush() != nil {
		errs++
		w.budget += 20
	}
	if errs == 0 {
		t.Fatal("the writer never failed: the test tests nothing")
	}
	if got, want := w.String(), strings.Join(lines, "\n")+"\n"; got != want {
		t.Fatalf("output =\n%q\nwant\n%q", got, want)
	}
}

func TestLineWriterRoom(t *testing.T) {
	lw := newLineWriter(io.Discard, 1024, nil)
	b := batchOf("aaa", "bbb", "ccc") // 4 bytes a line
	for _, tc := range []struct {
		room int64
		want int
	}{{-1, 3}, {0, 0}, {3, 0}, {4, 1}, {11, 2}, {12, 3}} {
		if n, err := lw.writeLines(b.Records, tc.room); err != nil || n != tc.want {
			t.Errorf("room %d: n = %d, %v; want %d", tc.room, n, err, tc.want)
		}
	}
}

func TestLineWriterShrinksAfterHugeLine(t *testing.T) {
	var out bytes.Buffer
	lw := newLineWriter(&out, 8, nil)
	huge := strings.Repeat("h", 100)
	if _, err := lw.writeLines(batchOf("a", huge, "b").Records, -1); err != nil {
		t.Fatal(err)
	}
	if err := lw.flush(); err != nil {
		t.Fatal(err)
	}
	if cap(lw.buf) > 16 {
		t.Errorf("buffer kept %d bytes of capacity", cap(lw.buf))
	}
	if got, want := out.String(), "a\n"+huge+"\nb\n"; got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
}

func TestStdoutSink(t *testing.T) {
	ctx := context.Background()
	var out bytes.Buffer
	s := &StdoutSink{out: &out}
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, batchOf("a", "", `{"b":1}`)); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Fatalf("wrote %q before Flush", out.String())
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, batchOf("c")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := out.String(), "a\n\n{\"b\":1}\nc\n"; got != want {
		t.Fatalf("output = %q, want %q", got, want)
	}
	if err := s.Write(ctx, batchOf("d")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}

func TestStdoutSinkRetryWritesOnce(t *testing.T) {
	ctx := context.Background()
	w := &failingWriter{budget: 10}
	s := &StdoutSink{out: w}
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	s.lw = newLineWriter(w, 8, nil) // small buffer: flushes inside Write
	lines := numbered("r", 0, 20, 6)
	b := batchOf(lines...)
	fails := 0
	for {
		err := s.Write(ctx, b)
		if err == nil {
			break
		}
		if !errors.Is(err, errFull) || !strings.Contains(err.Error(), "write stdout") {
			t.Fatalf("error = %v", err)
		}
		fails++
		w.budget += 15
	}
	w.budget = 1 << 20
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if fails == 0 {
		t.Fatal("the writer never failed: the test tests nothing")
	}
	if got, want := w.String(), strings.Join(lines, "\n")+"\n"; got != want {
		t.Fatalf("output =\n%q\nwant\n%q", got, want)
	}
}

func TestStdoutCloseWithoutOpen(t *testing.T) {
	s := &StdoutSink{out: io.Discard}
	for range 2 {
		if err := s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// readSegments returns the lines of every sealed segment of path, in
// sequence order (decompressing .gz ones), then those of the active file,
// and the names of the sealed segments.
func readSegments(t *testing.T, path string) (lines []string, sealed []string) {
	t.Helper()
	es, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Base(path)
	for _, e := range es {
		if strings.HasPrefix(e.Name(), base+".") {
			sealed = append(sealed, e.Name())
		}
	}
	// Names are zero-padded, so lexical order is sequence order here.
	slices.Sort(sealed)
	read := func(name string) {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if data, err = io.ReadAll(zr); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if len(data) == 0 {
			return
		}
		if data[len(data)-1] != '\n' {
			t.Fatalf("%s does not end with a newline: %q", name, data)
		}
		lines = append(lines, strings.Split(string(data[:len(data)-1]), "\n")...)
	}
	for _, s := range sealed {
		read(filepath.Join(filepath.Dir(path), s))
	}
	read(path)
	return lines, sealed
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// segmentSize is the uncompressed size of a sealed segment.
func segmentSize(t *testing.T, path string) int64 {
	t.Helper()
	if !strings.HasSuffix(path, ".gz") {
		return fileSize(t, path)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, zr)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func ExampleFileConfig_Validate() {
	c := NewFileConfig()
	c.Fsync = "always"
	c.Rotate.Keep = 3
	fmt.Println(c.Validate())
	// Output:
	// path: required
	// fsync: invalid value "always": want checkpoint, batch or never
	// rotate.keep: has no effect without rotate.max_size or rotate.max_age
}
