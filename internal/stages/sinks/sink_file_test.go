package sinks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etld/etld/internal/rotate"
	"github.com/etld/etld/internal/stages"
)

// fieldsOf lists the Field of every FieldError in a joined error.
func fieldsOf(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var fe *stages.FieldError
		if errors.As(err, &fe) {
			out = append(out, fe.Field)
		} else if err != nil {
			out = append(out, "?"+err.Error())
		}
	}
	walk(err)
	return out
}

func TestFileConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *FileConfig)
		want []string
	}{
		{"defaults with a path", func(c *FileConfig) {}, nil},
		{"rotation", func(c *FileConfig) {
			c.Fsync, c.Rotate = FsyncBatch, RotateConfig{MaxSize: 1 << 20, MaxAge: time.Hour, Keep: 3, Gzip: true}
		}, nil},
		{"never", func(c *FileConfig) { c.Fsync = FsyncNever }, nil},
		{"missing path", func(c *FileConfig) { c.Path = "" }, []string{"path"}},
		{"directory path", func(c *FileConfig) { c.Path = "out/" }, []string{"path"}},
		{"dot path", func(c *FileConfig) { c.Path = "out/." }, []string{"path"}},
		{"bad fsync", func(c *FileConfig) { c.Fsync = "sometimes" }, []string{"fsync"}},
		{"empty fsync", func(c *FileConfig) { c.Fsync = "" }, []string{"fsync"}},
		{"zero buffer", func(c *FileConfig) { c.BufferSize = 0 }, []string{"buffer_size"}},
		{"huge buffer", func(c *FileConfig) { c.BufferSize = 1 << 30 }, []string{"buffer_size"}},
		{"negative rotation", func(c *FileConfig) {
			c.Rotate = RotateConfig{MaxSize: -1, MaxAge: -time.Second, Keep: -1}
		}, []string{"rotate.max_size", "rotate.max_age", "rotate.keep"}},
		{"keep and gzip without trigger", func(c *FileConfig) {
			c.Rotate = RotateConfig{Keep: 2, Gzip: true}
		}, []string{"rotate.keep", "rotate.gzip"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewFileConfig()
			c.Path = "out/x.jsonl"
			tc.edit(c)
			if got := fieldsOf(c.Validate()); !slices.Equal(got, tc.want) {
				t.Fatalf("fields = %v, want %v (%v)", got, tc.want, c.Validate())
			}
		})
	}
}

func TestFileConfigPaths(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"out/x.jsonl", "/etc/etld/out/x.jsonl"},
		{"../x.jsonl", "/etc/x.jsonl"},
		{"/var/log/x.jsonl", "/var/log/x.jsonl"},
	} {
		c := NewFileConfig()
		c.Path = tc.path
		c.ResolvePaths("/etc/etld")
		if c.OutputPath() != tc.want {
			t.Errorf("%q resolved to %q, want %q", tc.path, c.OutputPath(), tc.want)
		}
	}
}

// fakeClock is a settable clock for max_age.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// syncCounter counts fsyncs of the active file (directories and
// compressed copies are not counted). It does not really fsync: tests need
// no durability and fsync is slow on some CI disks.
type syncCounter struct {
	path string
	n    int
}

func (c *syncCounter) sync(f *os.File) error {
	if f.Name() == c.path {
		c.n++
	}
	return nil
}

type fileTest struct {
	t     *testing.T
	path  string
	sink  *FileSink
	clock *fakeClock
	syncs *syncCounter
}

// newFileTest opens a file sink on dir/out/x.jsonl with the config edited
// by edit; it is closed at the end of the test.
func newFileTest(t *testing.T, dir string, edit func(c *FileConfig)) *fileTest {
	t.Helper()
	c := NewFileConfig()
	c.Path = "out/x.jsonl"
	if edit != nil {
		edit(c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.ResolvePaths(dir)
	ft := &fileTest{t: t, path: c.Path, clock: &fakeClock{time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}}
	ft.syncs = &syncCounter{path: c.Path}
	ft.sink = newFileSink(stages.Settings{}, c, fileOptions{now: ft.clock.now, sync: ft.syncs.sync})
	if err := ft.sink.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ft.sink.Close(context.Background()) })
	return ft
}

func (ft *fileTest) write(lines ...string) {
	ft.t.Helper()
	if err := ft.sink.Write(context.Background(), batchOf(lines...)); err != nil {
		ft.t.Fatal(err)
	}
}

func (ft *fileTest) flush() {
	ft.t.Helper()
	if err := ft.sink.Flush(context.Background()); err != nil {
		ft.t.Fatal(err)
	}
}

func (ft *fileTest) close() {
	ft.t.Helper()
	if err := ft.sink.Close(context.Background()); err != nil {
		ft.t.Fatal(err)
	}
}

func TestFileSinkWritesLinesInOrder(t *testing.T) {
	dir := t.TempDir()
	ft := newFileTest(t, dir, func(c *FileConfig) { c.BufferSize = 100 })
	if st, err := os.Stat(filepath.Dir(ft.path)); err != nil || !st.IsDir() || st.Mode().Perm() != 0o755 {
		t.Fatalf("parent dir: %v, %v", st, err)
	}
	want := numbered("a", 0, 50, 30)
	ft.write(want[:20]...)
	ft.write()
	ft.write(want[20:]...)
	ft.flush()
	if got := ft.sink.Active(); got.Path != ft.path || got.Seq != 1 || got.Size != int64(50*31) {
		t.Fatalf("Active = %+v", got)
	}
	ft.write("", "tail") // an empty record is an empty line
	ft.close()
	got, sealed := readSegments(t, ft.path)
	if want = append(want, "", "tail"); !slices.Equal(got, want) || len(sealed) != 0 {
		t.Fatalf("lines = %q, sealed = %v; want %q", got, sealed, want)
	}
	if st, _ := os.Stat(ft.path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v", st.Mode())
	}
}

func TestFileSinkAppends(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "out", "x.jsonl"), []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ft := newFileTest(t, dir, nil)
	if got := ft.sink.Active().Size; got != 4 {
		t.Fatalf("Size at open = %d, want 4", got)
	}
	ft.write("new")
	ft.close()
	if got, _ := readSegments(t, ft.path); !slices.Equal(got, []string{"old", "new"}) {
		t.Fatalf("lines = %q", got)
	}
}

func TestFileSinkRotatesBySize(t *testing.T) {
	const maxSize = 1000
	tests := []struct {
		name       string
		keep       int
		gzip       bool
		wantSealed int // sealed segments left
	}{
		{"keep all", 0, false, 18},
		{"keep all gzip", 0, true, 18},
		{"keep 3 gzip", 3, true, 3},
		{"keep 2 plain", 2, false, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ft := newFileTest(t, dir, func(c *FileConfig) {
				c.BufferSize = 256 // flushes inside batches too
				c.Rotate = RotateConfig{MaxSize: maxSize, Keep: tc.keep, Gzip: tc.gzip}
			})
			// 100-byte lines: 10 per segment; 185 lines = 18 sealed + 5 active.
			var all []string
			for i := 0; i < 185; i += 37 {
				lines := numbered("s", i, i+37, 99)
				all = append(all, lines...)
				ft.write(lines...)
			}
			ft.close()
			got, sealed := readSegments(t, ft.path)
			if len(sealed) != tc.wantSealed {
				t.Fatalf("sealed = %v, want %d segments", sealed, tc.wantSealed)
			}
			for i, name := range sealed {
				want := rotate.SealedName("x.jsonl", uint64(18-len(sealed)+i+1))
				if tc.gzip {
					want += ".gz"
				}
				if name != want {
					t.Errorf("segment %d = %s, want %s", i, name, want)
				}
				if n := segmentSize(t, filepath.Join(filepath.Dir(ft.path), name)); n != maxSize {
					t.Errorf("%s holds %d bytes, want %d", name, n, maxSize)
				}
			}
			// Every line exactly once, in order: the retained suffix.
			if want := all[len(all)-len(got):]; !slices.Equal(got, want) || len(got) != 10*len(sealed)+5 {
				t.Fatalf("read back %d lines, want the last %d of %d in order", len(got), 10*len(sealed)+5, len(all))
			}
		})
	}
}

func TestFileSinkSealsExistingFileOverMaxSize(t *testing.T) {
	dir := t.TempDir()
	ft := newFileTest(t, dir, nil)
	ft.write("0123456789")
	ft.close()
	ft = newFileTest(t, dir, func(c *FileConfig) { c.Rotate.MaxSize = 5 })
	ft.write("a")
	ft.close()
	got, sealed := readSegments(t, ft.path)
	if !slices.Equal(sealed, []string{"x.jsonl.000001"}) || !slices.Equal(got, []string{"0123456789", "a"}) {
		t.Fatalf("sealed = %v, lines = %q", sealed, got)
	}
}

func TestFileSinkOversizedLineGoesAlone(t *testing.T) {
	dir := t.TempDir()
	ft := newFileTest(t, dir, func(c *FileConfig) { c.Rotate.MaxSize = 10 })
	big := strings.Repeat("b", 25)
	ft.write("a1", big, "a2", "a3", "a4", big)
	ft.close()
	got, sealed := readSegments(t, ft.path)
	if want := []string{"a1", big, "a2", "a3", "a4", big}; !slices.Equal(got, want) {
		t.Fatalf("lines = %q", got)
	}
	wantSizes := []int64{3, 26, 9} // "a1\n" | big | "a2\na3\na4\n"; active: big
	for i, name := range sealed {
		if n := fileSize(t, filepath.Join(filepath.Dir(ft.path), name)); i >= len(wantSizes) || n != wantSizes[i] {
			t.Errorf("%s: %d bytes", name, n)
		}
	}
	if len(sealed) != len(wantSizes) || fileSize(t, ft.path) != 26 {
		t.Fatalf("sealed = %v, active %d bytes", sealed, fileSize(t, ft.path))
	}
}

func TestFileSinkRotatesByAge(t *testing.T) {
	dir := t.TempDir()
	ft := newFileTest(t, dir, func(c *FileConfig) { c.Rotate.MaxAge = time.Minute })
	ft.write("a")
	ft.flush()
	ft.clock.t = ft.clock.t.Add(59 * time.Second)
	ft.write("b") // not old yet
	ft.flush()
	ft.clock.t = ft.clock.t.Add(time.Second)
	ft.flush() // old: sealed by Flush
	if _, sealed := readSegments(t, ft.path); !slices.Equal(sealed, []string{"x.jsonl.000001"}) {
		t.Fatalf("after flush: sealed = %v", sealed)
	}
	ft.clock.t = ft.clock.t.Add(time.Hour)
	ft.flush() // empty segment: nothing to seal
	ft.write("c")
	ft.clock.t = ft.clock.t.Add(2 * time.Minute)
	ft.write("d") // old: sealed by Write, before "d"
	ft.close()
	got, sealed := readSegments(t, ft.path)
	if !slices.Equal(sealed, []string{"x.jsonl.000001", "x.jsonl.000002"}) || !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Fatalf("sealed = %v, lines = %q", sealed, got)
	}
	if data, _ := os.ReadFile(ft.path); string(data) != "d\n" {
		t.Fatalf("active = %q", data)
	}
}

func TestFileSinkSequenceContinuesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	edit := func(c *FileConfig) { c.Rotate = RotateConfig{MaxSize: 4, Gzip: true} }
	ft := newFileTest(t, dir, edit)
	ft.write("1st", "2nd", "3rd")
	ft.close()
	ft = newFileTest(t, dir, edit)
	if got := ft.sink.Active(); got.Seq != 3 || got.Size != 4 {
		t.Fatalf("Active after restart = %+v, want seq 3 size 4", got)
	}
	ft.write("4th", "5th")
	ft.close()
	got, sealed := readSegments(t, ft.path)
	want := []string{"x.jsonl.000001.gz", "x.jsonl.000002.gz", "x.jsonl.000003.gz", "x.jsonl.000004.gz"}
	if !slices.Equal(sealed, want) || !slices.Equal(got, []string{"1st", "2nd", "3rd", "4th", "5th"}) {
		t.Fatalf("sealed = %v, lines = %q", sealed, got)
	}
}

func TestFileSinkFsyncPolicy(t *testing.T) {
	type counts struct{ afterWrite, afterFlush, afterRotate, afterClose int }
	tests := []struct {
		fsync string
		want  counts
	}{
		{FsyncCheckpoint, counts{0, 1, 2, 3}},
		{FsyncBatch, counts{1, 2, 4, 5}},
		{FsyncNever, counts{0, 0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.fsync, func(t *testing.T) {
			ft := newFileTest(t, t.TempDir(), func(c *FileConfig) {
				c.Fsync, c.Rotate.MaxSize = tc.fsync, 4
			})
			var got counts
			ft.write("a")
			got.afterWrite = ft.syncs.n
			ft.flush()
			got.afterFlush = ft.syncs.n
			ft.write("b", "c") // seals "a\nb\n": one fsync of the segment
			got.afterRotate = ft.syncs.n
			ft.close()
			got.afterClose = ft.syncs.n
			if got != tc.want {
				t.Fatalf("fsyncs = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestFileSinkCloseAndUse(t *testing.T) {
	ctx := context.Background()
	c := NewFileConfig()
	c.Path = filepath.Join(t.TempDir(), "never-opened")
	s := NewFileSink(stages.Settings{}, c)
	for range 2 {
		if err := s.Close(ctx); err != nil {
			t.Fatalf("Close without Open: %v", err)
		}
	}
	if _, err := os.Stat(c.Path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close without Open touched the file: %v", err)
	}
	if err := s.Write(ctx, batchOf("x")); err == nil || !strings.Contains(err.Error(), c.Path) {
		t.Fatalf("Write on a closed sink = %v", err)
	}
	if err := s.Open(ctx); err == nil {
		t.Fatal("Open after Close succeeded")
	}

	ft := newFileTest(t, t.TempDir(), nil)
	ft.write("x")
	ft.close()
	ft.close()
	if err := ft.sink.Write(ctx, batchOf("y")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	if got, _ := readSegments(t, ft.path); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("lines = %q", got)
	}
}

func TestFileSinkUnwritablePath(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "out", "x.jsonl"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "afile"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"directory at the file's path", filepath.Join(dir, "out", "x.jsonl"), "is a directory"},
		{"file at the parent's path", filepath.Join(dir, "afile", "x.jsonl"), "not a directory"},
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, struct{ name, path, want string }{"read-only dir", filepath.Join(ro, "x.jsonl"), "permission denied"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := NewFileConfig()
			c.Path = tc.path
			s := NewFileSink(stages.Settings{}, c)
			err := s.Open(context.Background())
			if err == nil {
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %q; want it to name %s and say %q", err, tc.path, tc.want)
			}
			if err := s.Close(context.Background()); err != nil {
				t.Fatalf("Close after a failed Open: %v", err)
			}
		})
	}
}

// BenchmarkFileSinkWrite measures Write throughput with batches of 1024
// lines of ~150 bytes (fsync: never, so the figure is the sink's own cost
// plus write(2) into the page cache).
func BenchmarkFileSinkWrite(b *testing.B) {
	for _, bc := range []struct {
		name string
		edit func(c *FileConfig)
	}{
		{"plain", func(c *FileConfig) {}},
		{"rotate64MiB", func(c *FileConfig) { c.Rotate = RotateConfig{MaxSize: 64 << 20, Keep: 2} }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := NewFileConfig()
			c.Path = filepath.Join(b.TempDir(), "bench.jsonl")
			c.Fsync = FsyncNever
			bc.edit(c)
			s := NewFileSink(stages.Settings{}, c)
			ctx := context.Background()
			if err := s.Open(ctx); err != nil {
				b.Fatal(err)
			}
			defer s.Close(ctx)
			lines := numbered(`{"ts":"2030-01-01T00:00:00Z","level":"info","msg":"benchmark line","n"`, 0, 1024, 149)
			batch := batchOf(lines...)
			var size int64
			for _, r := range batch.Records {
				size += int64(len(r.Raw)) + 1
			}
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Write(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)*1024/b.Elapsed().Seconds(), "lines/s")
		})
	}
}
