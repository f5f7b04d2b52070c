//go:build linux

package e2e

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// blockedStdout starts etld on an endless generate source written to
// stdout, a pipe that nobody reads, and returns once the pipe is full:
// the stdout sink is then blocked in write(2), so no graceful stop can
// finish.
func blockedStdout(t *testing.T, extra ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	return startBlocked(t, dir, writeConfig(t, dir, "blocked.yaml", blockedPipeline), extra...)
}

// blockedPipeline writes an endless generate source to stdout.
const blockedPipeline = `version: 1
sources:
  gen: { type: generate }
sinks:
  out: { type: stdout, inputs: [gen] }
`

// startBlocked starts etld in dir on cfg, whose pipelines write to
// stdout, with stdout a pipe nobody reads, and returns once the pipe is
// full.
func startBlocked(t *testing.T, dir, cfg string, extra ...string) *proc {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() }) // after etld is killed (cleanups run last-in first-out)
	p := startEtldOut(t, dir, nil, w, runArgs(cfg, filepath.Join(dir, "state"), extra...)...)
	w.Close() // etld has its own copy
	p.eventually("the stdout pipe is full", func() bool { return pipeFull(t, r) })
	return p
}

// pipeFull reports whether the pipe read by r is full: it holds more
// than its capacity less one page (pipe buffers are pages, and a writer
// blocks when the rest of its write does not fit).
func pipeFull(t *testing.T, r *os.File) bool {
	rc, err := r.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	full := false
	if err := rc.Control(func(fd uintptr) {
		var n int32
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n))); e != 0 {
			return
		}
		size, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETPIPE_SZ, 0)
		full = e == 0 && int64(n) > int64(size)-4096
	}); err != nil {
		t.Fatal(err)
	}
	return full
}

// TestShutdownTimeout: --shutdown-timeout bounds a graceful stop. With a
// sink that cannot write (its stdout pipe is full and nobody reads it),
// SIGTERM cannot drain; once the timeout expires etld must exit 1 (SPEC
// §2, "Details").
func TestShutdownTimeout(t *testing.T) {
	t.Parallel()
	p := blockedStdout(t, "--shutdown-timeout", "300ms")
	p.signal(syscall.SIGTERM)
	// A hang guard, not a timing assertion: etld must exit at all.
	code := p.waitWithin(10*time.Second, "after SIGTERM with --shutdown-timeout 300ms and a blocked sink: the graceful stop is not bounded")
	p.expectExit(code, 1, "shutdown timeout")
	if !p.logged("shutdown timeout") {
		t.Errorf("no log says the shutdown timeout expired")
	}
}

// TestSecondSIGINT: a second SIGINT exits at once with 1, even while the
// graceful stop started by the first one cannot finish.
func TestSecondSIGINT(t *testing.T) {
	t.Parallel()
	p := blockedStdout(t, "--shutdown-timeout", "1h")
	p.signal(syscall.SIGINT)
	// Signals of one kind that arrive together may be merged into one:
	// send the second once the first is handled.
	p.eventually("the first SIGINT is handled", func() bool { return p.logged("stopping gracefully") })
	p.signal(syscall.SIGINT)
	code := p.waitWithin(20*time.Second, "after a second SIGINT")
	p.expectExit(code, 1, "second SIGINT")
}

// TestShutdownTimeoutSeveralStuck (issue 12, bug 2): the shutdown
// timeout bounds the whole stop, however many pipelines are stuck. Three
// pipelines (a directory config) write to stdout, a full pipe nobody
// reads; after SIGTERM etld must exit 1 once --shutdown-timeout and the
// hard stop's grace have passed, instead of waiting for the second stuck
// pipeline forever.
func TestShutdownTimeoutSeveralStuck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	for _, name := range []string{"a.yaml", "b.yaml", "c.yaml"} {
		writeConfig(t, conf, name, blockedPipeline)
	}
	p := startBlocked(t, dir, conf, "--shutdown-timeout", "1s")
	p.eventually("three pipelines started", func() bool { return rlCount(p, "pipeline started") >= 3 })
	p.signal(syscall.SIGTERM)
	// A hang guard, not a timing assertion: etld must exit at all.
	code := p.waitWithin(exitTimeout, "after SIGTERM with --shutdown-timeout 1s and three blocked sinks: the stop waits for a stuck pipeline forever")
	p.expectExit(code, 1, "shutdown timeout with three stuck pipelines")
	if !p.logged("shutdown timeout") {
		t.Errorf("no log says the shutdown timeout expired")
	}
}
