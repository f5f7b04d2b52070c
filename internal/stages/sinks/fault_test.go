package sinks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// Fault injection for the file sink (SPEC §3.4): writes and fsyncs that
// fail with ENOSPC, EACCES or EIO for a while and then work again. The
// sink is driven the way the runtime's sink writer drives it: a failed
// Write or Flush is retried with the same batch until it succeeds. In the
// end every line must be in the output exactly once, in order, and at no
// point may the sink count as written (Active().Size, its checkpoint
// state) bytes that the file does not hold.
//
// Writes are injected between the sink's line buffer and its rotate.File
// (the lineWriter's io.Writer), fsyncs through the sink's sync hook (which
// also sees the directory fsyncs of a rotation). Real ENOSPC and EACCES
// are in fault_linux_test.go.

// faultWriter fails the next `fails` writes with err, taking nothing:
// what rotate.File.Write reports after a write that failed (it truncates
// whatever part of it reached the file). A write that fails halfway in
// the kernel is in fault_linux_test.go (a real ENOSPC) and
// sink_file_linux_test.go (EFBIG).
type faultWriter struct {
	w      io.Writer
	err    error
	fails  int
	failed int
}

func (f *faultWriter) Write(p []byte) (int, error) {
	if f.fails == 0 {
		return f.w.Write(p)
	}
	f.fails--
	f.failed++
	return 0, f.err
}

// faultSync is the sink's fsync hook: it fails the next `fails` calls
// (files and directories alike) with err, and does not really fsync
// (durability is not under test).
type faultSync struct {
	err    error
	fails  int
	failed int
}

func (f *faultSync) sync(*os.File) error {
	if f.fails == 0 {
		return nil
	}
	f.fails--
	f.failed++
	return f.err
}

// faultSink is an open file sink on dir/out/x.jsonl with both injectors
// in place.
type faultSink struct {
	t     *testing.T
	path  string
	sink  *FileSink
	write *faultWriter
	fsync *faultSync
	tries int // failed operations retried
}

func newFaultSink(t *testing.T, edit func(*FileConfig)) *faultSink {
	t.Helper()
	c := NewFileConfig()
	c.Path = "out/x.jsonl"
	edit(c)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.ResolvePaths(t.TempDir())
	fs := &faultSink{t: t, path: c.Path, fsync: &faultSync{}}
	fs.sink = newFileSink(stages.Settings{}, c, fileOptions{sync: fs.fsync.sync})
	if err := fs.sink.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	fs.write = &faultWriter{w: fs.sink.lw.w}
	fs.sink.lw.w = fs.write
	t.Cleanup(func() { _ = fs.sink.Close(context.Background()) })
	return fs
}

// retry runs op until it succeeds, like the runtime's sink writer, and
// checks after every failure that it failed with one of the injected
// errors and that nothing is counted that is not in the file.
func (fs *faultSink) retry(what string, op func() error) {
	fs.t.Helper()
	for i := 0; ; i++ {
		err := op()
		if err == nil {
			return
		}
		if i > 100 {
			fs.t.Fatalf("%s still fails after %d retries: %v", what, i, err)
		}
		if !errors.Is(err, fs.write.err) && !errors.Is(err, fs.fsync.err) {
			fs.t.Fatalf("%s: %v; want an injected error (%v or %v)", what, err, fs.write.err, fs.fsync.err)
		}
		fs.tries++
		fs.checkCounted(what + " failed")
	}
}

// checkCounted checks that the sink counts no byte the active file does
// not hold: Active().Size is at most the file's size, and the file up to
// it holds whole lines.
func (fs *faultSink) checkCounted(when string) {
	fs.t.Helper()
	a := fs.sink.Active()
	data, err := os.ReadFile(fs.path)
	if err != nil {
		fs.t.Fatalf("%s: %v", when, err)
	}
	if a.Size > int64(len(data)) {
		fs.t.Fatalf("%s: the sink counts %d bytes in %s, which holds %d", when, a.Size, filepath.Base(fs.path), len(data))
	}
	if a.Size > 0 && data[a.Size-1] != '\n' {
		fs.t.Fatalf("%s: the %d bytes counted end in a partial line: %q", when, a.Size, data[max(0, a.Size-40):a.Size])
	}
}

// checkFlushed checks the state after a successful Flush: everything the
// sink counts is in the file, and nothing else.
func (fs *faultSink) checkFlushed(when string) {
	fs.t.Helper()
	a := fs.sink.Active()
	fi, err := os.Stat(fs.path)
	if err != nil {
		fs.t.Fatalf("%s: %v", when, err)
	}
	if a.Size != fi.Size() {
		fs.t.Fatalf("%s: after a successful Flush the sink counts %d bytes, the file holds %d", when, a.Size, fi.Size())
	}
	fs.checkCounted(when)
	if _, err := fs.sink.State(); err != nil {
		fs.t.Fatalf("%s: State: %v", when, err)
	}
}

// writeAll writes lines to the sink in batches of 1 to most lines that
// batch makes, with bursts of failing writes before some and a Flush (a
// checkpoint barrier, failing too at times) after some, each retried
// until it works; then a last Flush and Close. It checks that writes did
// fail, that no Write left more records in its batch than it was given,
// and that the output is every line once, in order, and returns the
// sealed segments.
func (fs *faultSink) writeAll(rng *rand.Rand, lines []string, most int, batch func([]string) *stages.Batch) (sealed []string) {
	t := fs.t
	t.Helper()
	ctx := context.Background()
	for i := 0; i < len(lines); {
		n := min(1+rng.Intn(most), len(lines)-i)
		b := batch(lines[i : i+n])
		if rng.Intn(3) == 0 {
			fs.write.fails = 1 + rng.Intn(3) // the disk is full for a while
		}
		fs.retry("Write", func() error {
			before := b.Len()
			err := fs.sink.Write(ctx, b)
			if b.Len() > before {
				t.Fatalf("Write left %d records of %d in the batch", b.Len(), before)
			}
			return err
		})
		i += n
		if rng.Intn(4) == 0 { // a checkpoint barrier
			if rng.Intn(2) == 0 {
				fs.write.fails = 1 + rng.Intn(2)
			}
			fs.retry("Flush", func() error { return fs.sink.Flush(ctx) })
			fs.checkFlushed(fmt.Sprintf("Flush after %d lines", i))
		}
	}
	fs.retry("Flush", func() error { return fs.sink.Flush(ctx) })
	fs.checkFlushed("the last Flush")
	if err := fs.sink.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if fs.write.failed == 0 || fs.tries == 0 {
		t.Fatal("no write failed: the test tests nothing")
	}
	got, sealed := readSegments(t, fs.path)
	if !slices.Equal(got, lines) {
		t.Fatalf("after %d failed writes: %s", fs.write.failed, faultLineDiff(got, lines))
	}
	return sealed
}

// TestFileSinkWriteFaultsThenRecover: writes fail with ENOSPC (a full
// disk) or EACCES (an output made unwritable) in bursts, inside Write
// (when the buffer fills up or before a rotation) and inside Flush (a
// checkpoint barrier), with and without rotation and gzip; every
// operation is retried until it succeeds. Every line is written exactly
// once, in order, and the sink never counts a byte the file lacks.
func TestFileSinkWriteFaultsThenRecover(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EACCES} {
		for _, rot := range []string{"no rotation", "rotate+gzip"} {
			name := fmt.Sprintf("%s/%s", errno, rot)
			t.Run(name, func(t *testing.T) {
				fs := newFaultSink(t, func(c *FileConfig) {
					c.BufferSize = 100
					if rot != "no rotation" {
						c.Rotate = RotateConfig{MaxSize: 700, Gzip: true}
					}
				})
				fs.write.err = errno
				fs.fsync.err = syscall.EIO
				rng := rand.New(rand.NewSource(int64(len(name))))
				lines := numbered("rec", 0, 600, 19) // 20 bytes a line
				sealed := fs.writeAll(rng, lines, 12, func(l []string) *stages.Batch { return batchOf(l...) })
				if rot != "no rotation" && len(sealed) < 5 {
					t.Fatalf("only %d sealed segments: the rotation path is not exercised", len(sealed))
				}
				t.Logf("%d injected write failures, %d retries, %d sealed segments", fs.write.failed, fs.tries, len(sealed))
			})
		}
	}
}

// TestFileSinkFsyncFaultsThenRecover: fsyncs that fail (ENOSPC, as on
// NFS or thin-provisioned storage, and EIO) in Flush, in a rotation
// before the segment is sealed and after (the directory fsync), then
// work again: Flush and Write are retried and every line is written
// once.
func TestFileSinkFsyncFaultsThenRecover(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EIO} {
		t.Run(errno.Error(), func(t *testing.T) {
			fs := newFaultSink(t, func(c *FileConfig) {
				c.BufferSize = 64
				c.Rotate = RotateConfig{MaxSize: 300, Gzip: true}
			})
			fs.write.err = syscall.ENOSPC
			fs.fsync.err = errno
			rng := rand.New(rand.NewSource(7))
			lines := numbered("s", 0, 400, 19)
			ctx := context.Background()
			for i := 0; i < len(lines); {
				n := min(1+rng.Intn(10), len(lines)-i)
				b := batchOf(lines[i : i+n]...)
				if rng.Intn(3) == 0 {
					fs.fsync.fails = 1 + rng.Intn(2) // hits the next rotation's fsyncs, or the next Flush's
				}
				fs.retry("Write", func() error { return fs.sink.Write(ctx, b) })
				i += n
				if rng.Intn(3) == 0 {
					fs.retry("Flush", func() error { return fs.sink.Flush(ctx) })
					fs.checkFlushed(fmt.Sprintf("Flush after %d lines", i))
				}
			}
			fs.fsync.fails = 1
			fs.retry("Flush", func() error { return fs.sink.Flush(ctx) })
			fs.checkFlushed("the last Flush")
			if err := fs.sink.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if fs.fsync.failed == 0 {
				t.Fatal("no fsync failed: the test tests nothing")
			}
			got, sealed := readSegments(t, fs.path)
			if !slices.Equal(got, lines) {
				t.Fatalf("after %d failed fsyncs: %s", fs.fsync.failed, faultLineDiff(got, lines))
			}
			t.Logf("%d injected fsync failures, %d retries, %d sealed segments", fs.fsync.failed, fs.tries, len(sealed))
		})
	}
}

// TestFileSinkCloseAfterWriteFault: a sink whose last write failed and
// is closed (a graceful stop that gave up) leaves only whole, counted
// lines in the file: its checkpoint state matches the file, so a restart
// that rolls back to it neither loses nor duplicates a committed line.
func TestFileSinkCloseAfterWriteFault(t *testing.T) {
	fs := newFaultSink(t, func(c *FileConfig) { c.BufferSize = 64 })
	fs.write.err = syscall.ENOSPC
	ctx := context.Background()
	lines := numbered("c", 0, 20, 19)
	if err := fs.sink.Write(ctx, batchOf(lines[:10]...)); err != nil {
		t.Fatal(err)
	}
	if err := fs.sink.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	fs.checkFlushed("Flush")
	committed := fs.sink.Active().Size
	fs.write.fails = 100
	b := batchOf(lines[10:]...)
	if err := fs.sink.Write(ctx, b); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Write = %v, want ENOSPC", err)
	}
	if err := fs.sink.Close(ctx); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Close = %v, want the ENOSPC of its flush", err)
	}
	data, err := os.ReadFile(fs.path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(data)) != committed || !bytes.HasSuffix(data, []byte("\n")) {
		t.Fatalf("after a failed close the file holds %d bytes (%q...), want the %d committed", len(data), data[:min(len(data), 40)], committed)
	}
}

// faultLineDiff describes how got differs from want: lost and duplicated
// lines, or the first position where the order differs.
func faultLineDiff(got, want []string) string {
	n := map[string]int{}
	for _, l := range got {
		n[l]++
	}
	var lost, dup []string
	for _, l := range want {
		switch n[l] {
		case 0:
			lost = append(lost, l)
		case 1:
		default:
			dup = append(dup, l)
		}
	}
	if len(lost) > 0 || len(dup) > 0 || len(got) != len(want) {
		return fmt.Sprintf("%d lines, want %d: lost %d %.5q, duplicated %d %.5q", len(got), len(want), len(lost), lost, len(dup), dup)
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("line %d is %q, want %q", i+1, got[i], want[i])
		}
	}
	return "equal"
}
