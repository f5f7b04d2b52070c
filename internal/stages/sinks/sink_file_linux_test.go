package sinks

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
)

// TestFileSinkRetryAfterDiskFull makes writes fail for real with
// RLIMIT_FSIZE (EFBIG once the file would grow past the limit; Go ignores
// SIGXFSZ), after part of a buffer reached the file, then retries the same
// batch: the file must hold every line exactly once and never a torn one.
//
// RLIMIT_FSIZE holds for the whole process, so the test runs in a child
// process of its own: in this one, any other write past the limit while it
// is set (go test's own log of the files a test opened, which it flushes
// when its buffer fills) would fail too.
func TestFileSinkRetryAfterDiskFull(t *testing.T) {
	if os.Getenv("ETLD_TEST_FSIZE_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFileSinkRetryAfterDiskFull$", "-test.v")
		cmd.Env = append(os.Environ(), "ETLD_TEST_FSIZE_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child process: %v\n%s", err, out)
		}
		if !bytes.Contains(out, []byte("--- PASS: TestFileSinkRetryAfterDiskFull")) {
			t.Fatalf("the child process did not pass the test:\n%s", out)
		}
		return
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Skip(err)
	}
	setLimit := func(n uint64) {
		t.Helper()
		lim := old
		lim.Cur = min(n, old.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old) })

	for _, fsync := range []string{FsyncCheckpoint, FsyncBatch} {
		t.Run(fsync, func(t *testing.T) {
			ft := newFileTest(t, t.TempDir(), func(c *FileConfig) { c.BufferSize = 64; c.Fsync = fsync })
			lines := numbered("d", 0, 40, 19) // 20 bytes a line, 800 bytes
			b := batchOf(lines...)
			// The buffer hands 60-byte chunks (3 lines) to the file; the
			// sixth one is cut after 10 bytes, and must be truncated away.
			setLimit(310)
			err := ft.sink.Write(context.Background(), b)
			if !errors.Is(err, syscall.EFBIG) {
				setLimit(old.Cur)
				t.Fatalf("Write = %v, want EFBIG", err)
			}
			if got := len(b.Records); got == 0 || got == len(lines) {
				t.Errorf("%d records left to retry; want some accepted, some not", got)
			}
			if got := fileSize(t, ft.path); got != 300 {
				t.Errorf("after the failure the file holds %d bytes, want the 300 known good", got)
			}
			if got := ft.sink.Active().Size; got != 300 {
				t.Errorf("Active().Size = %d, want 300", got)
			}
			setLimit(old.Cur) // space freed
			if err := ft.sink.Write(context.Background(), b); err != nil {
				t.Fatalf("retry: %v", err)
			}
			ft.close()
			if got, _ := readSegments(t, ft.path); !slices.Equal(got, lines) {
				t.Fatalf("lines = %q\nwant %q", got, lines)
			}
		})
	}
}
