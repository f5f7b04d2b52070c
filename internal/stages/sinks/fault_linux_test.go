package sinks

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// Real faults, where the test can make them: ENOSPC on a small tmpfs
// (needs root to mount it) and EACCES from a directory the process may
// not write (as root, the test drops its effective uid for the moment of
// the fault, since root ignores directory permissions).

// TestFileSinkRealDiskFull writes through a rotating, gzipping file sink
// onto a 64 KiB tmpfs until the disk is full: Write fails with ENOSPC,
// and the active file holds exactly the bytes the sink counts, whole
// lines only (the part of the failed write that reached the disk is
// truncated away). Once a filler file is deleted, retrying the same
// batches writes every line exactly once.
func TestFileSinkRealDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a 64 KiB tmpfs (a real ENOSPC); TestFileSinkWriteFaultsThenRecover injects it")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 32<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	c := NewFileConfig()
	c.Path = filepath.Join(dir, "out", "x.jsonl")
	c.BufferSize = 3000
	c.Rotate = RotateConfig{MaxSize: 8 << 10, Gzip: true}
	s := NewFileSink(stages.Settings{}, c)
	ctx := context.Background()
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)

	lines := numbered("full", 0, 4000, 29) // 30 bytes a line, 120,000 bytes: more than the disk
	failures := 0
	freed := false
	for i := 0; i < len(lines); i += 50 {
		b := batchOf(lines[i:min(i+50, len(lines))]...)
		for {
			err := s.Write(ctx, b)
			if err == nil {
				break
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Write: %v; want ENOSPC", err)
			}
			failures++
			data, rerr := os.ReadFile(c.Path)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if a := s.Active(); a.Size != int64(len(data)) || (len(data) > 0 && data[len(data)-1] != '\n') {
				t.Fatalf("after ENOSPC the sink counts %d bytes; the file holds %d ending in %q", a.Size, len(data), data[max(0, len(data)-10):])
			}
			if freed {
				t.Fatalf("ENOSPC again after the filler was deleted: %v", err)
			}
			if err := os.Remove(filler); err != nil { // space freed
				t.Fatal(err)
			}
			freed = true
		}
	}
	if failures == 0 {
		t.Fatal("the disk never filled up: the test tests nothing")
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got, sealed := readSegments(t, c.Path)
	if !slices.Equal(got, lines) {
		t.Fatalf("after ENOSPC: %s", faultLineDiff(got, lines))
	}
	t.Logf("%d failed writes; %d sealed segments", failures, len(sealed))
}

// TestFileSinkRealPermissionDenied: the output directory becomes
// unwritable while the sink runs. Rotating (which renames the active file
// in that directory) fails with EACCES and nothing is sealed; an output
// file deleted meanwhile cannot be recreated, so Flush fails with EACCES.
// Once the directory is writable again, retries of the same Write and
// Flush succeed and every line is in the output exactly once.
func TestFileSinkRealPermissionDenied(t *testing.T) {
	dir := t.TempDir()
	// The unprivileged user must reach the output directory: make the
	// temporary directories traversable by others.
	for d := dir; d != filepath.Dir(os.TempDir()) && d != "/"; d = filepath.Dir(d) {
		if d == os.TempDir() {
			break
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := NewFileConfig()
	c.Path = filepath.Join(dir, "out", "x.jsonl")
	c.BufferSize = 64
	c.Rotate = RotateConfig{MaxSize: 400}
	s := NewFileSink(stages.Settings{}, c)
	ctx := context.Background()
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	outDir := filepath.Dir(c.Path)
	lines := numbered("perm", 0, 60, 19) // 20 bytes a line: a rotation every 20 lines

	if err := s.Write(ctx, batchOf(lines[:15]...)); err != nil {
		t.Fatal(err)
	}
	restore := faultUnwritable(t, outDir)
	b := batchOf(lines[15:40]...)
	err := s.Write(ctx, b)
	if !errors.Is(err, fs.ErrPermission) {
		restore()
		t.Fatalf("Write across a rotation into an unwritable directory = %v; want EACCES", err)
	}
	if n := len(b.Records); n == 0 || n == 25 {
		t.Errorf("%d of 25 records left to retry; want the ones after the rotation point", n)
	}
	if _, err := os.Stat(c.Path + ".000001"); err == nil {
		t.Errorf("a segment was sealed although the rename failed")
	}
	restore()
	if err := s.Write(ctx, b); err != nil {
		t.Fatalf("retry once writable: %v", err)
	}

	// The output file vanishes while the directory is unwritable: the
	// flush cannot recreate it.
	if err := s.Write(ctx, batchOf(lines[40:50]...)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(dir, "moved.jsonl")
	if err := os.Rename(c.Path, moved); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, batchOf(lines[50:]...)); err != nil {
		t.Fatal(err)
	}
	restore = faultUnwritable(t, outDir)
	err = s.Flush(ctx)
	restore()
	if !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("Flush with the output gone and its directory unwritable = %v; want EACCES", err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush once writable: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ := readSegments(t, c.Path)
	movedLines, _ := readSegments(t, moved)
	// Lines handed to the file before the flush noticed the move went
	// with the moved file (the mover's choice); the rest are in the
	// recreated one. Together: every line once.
	if len(got) == 0 || got[len(got)-1] != lines[len(lines)-1] {
		t.Errorf("the recreated output does not end with the last line: %q", got)
	}
	all := append(slices.Clone(got), movedLines...)
	slices.Sort(all)
	want := slices.Clone(lines)
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Fatalf("output plus the moved file: %s", faultLineDiff(all, want))
	}
}

// faultUnwritable makes dir unwritable for this process and returns the
// function that undoes it: chmod 0555 when not root; as root, which
// ignores permissions, the directory stays 0755 root-owned and the
// process's effective uid becomes nobody's (65534) until restore (the
// real and saved uids stay 0, so it can switch back). Tests of this
// package do not run in parallel, so nothing else runs meanwhile.
func faultUnwritable(t *testing.T, dir string) (restore func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		return func() {
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := syscall.Setresuid(-1, 65534, -1); err != nil {
		t.Skipf("cannot drop the effective uid to make a directory unwritable for root: %v", err)
	}
	done := false
	restore = func() {
		if done {
			return
		}
		done = true
		if err := syscall.Setresuid(-1, 0, -1); err != nil {
			panic("cannot restore the effective uid 0: " + err.Error())
		}
	}
	t.Cleanup(restore)
	return restore
}
