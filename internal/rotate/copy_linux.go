package rotate

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// copier holds what WriteFrom needs to copy into the active file inside
// the kernel: copy_file_range refuses a destination opened O_APPEND (as
// the active file is, so that a retried write lands after a truncation),
// so it copies through a second descriptor of the same file, opened
// without O_APPEND, at the explicit offset Size.
type copier struct {
	f   *os.File // the second descriptor; nil until needed
	of  *os.File // the active descriptor f was opened for
	off bool     // copying failed as unsupported: WriteFrom only writes
}

func (c *copier) close() {
	if c.f != nil {
		_ = c.f.Close()
	}
	c.f, c.of = nil, nil
}

// errUnsupported marks copy_file_range errors that say the kernel or the
// file systems cannot copy between these files (not a failure of the
// output): the caller writes instead, for good.
var errUnsupported = errors.New("copy_file_range unsupported")

// dst returns the second descriptor of the active file, opening it when
// the active file changed (rotation, Reattach).
func (c *copier) dst(active *os.File) (*os.File, error) {
	if c.f != nil && c.of == active {
		return c.f, nil
	}
	c.close()
	rc, err := active.SyscallConn()
	if err != nil {
		return nil, err
	}
	var f *os.File
	cerr := rc.Control(func(fd uintptr) {
		f, err = os.OpenFile("/proc/self/fd/"+strconv.FormatUint(uint64(fd), 10), os.O_WRONLY, 0)
	})
	if cerr != nil {
		return nil, cerr
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reopen the output: %v", errUnsupported, err)
	}
	c.f, c.of = f, active
	return f, nil
}

// WriteFrom is Write for bytes p that were read from src at offset off:
// it copies them from src inside the kernel (copy_file_range: no copy
// through user memory) and writes from p what it could not copy, so the
// file ends up with p either way. It returns how many bytes of p it
// copied (the rest it wrote).
//
// The copy reads src as it is now, like cat would. src shorter than
// off+len(p) (truncated since the read) or closed (src.SyscallConn holds
// its descriptor for the copy, so a Close cannot swap in a reused one;
// a closed src fails instead) leaves the rest to the write from p. Bytes
// rewritten in place in src between the read and the copy would be
// copied as they are now: the caller only passes files it reads once.
//
// Like Write it is all or nothing: on error (ENOSPC, EIO) the file is
// truncated back to its size before the call. When copy_file_range is
// unsupported between the two files (EXDEV, EINVAL, ENOSYS, EOPNOTSUPP,
// EBADF), WriteFrom writes p and stops trying for good.
func (r *File) WriteFrom(p []byte, src *os.File, off int64) (int, error) {
	if r.cp.off || src == nil || len(p) == 0 {
		_, err := r.Write(p)
		return 0, err
	}
	if err := r.ready(); err != nil {
		return 0, err
	}
	dst, err := r.cp.dst(r.f)
	if err != nil {
		r.cp.off = true
		_, err := r.Write(p)
		return 0, err
	}
	if r.Size() == 0 {
		r.created = r.o.Now()
	}
	start := r.Size()
	copied, err := copyRange(dst, start, src, off, len(p), r.o.Path)
	if errors.Is(err, errUnsupported) {
		r.cp.off = true
		err = nil
	}
	if err != nil {
		r.setSize(start)
		r.dirty = true
		r.cleanup()
		return 0, err
	}
	r.setSize(start + int64(copied))
	if copied < len(p) {
		if _, err := r.Write(p[copied:]); err != nil {
			r.setSize(start)
			r.dirty = true
			r.cleanup()
			return 0, err
		}
	}
	return copied, nil
}

// copyRange copies up to n bytes from src at soff to dst at doff and
// returns how many it copied: fewer when src ends first or is closed.
// name is the output's path, for errors.
func copyRange(dst *os.File, doff int64, src *os.File, soff int64, n int, name string) (int, error) {
	sc, err := src.SyscallConn()
	if err != nil {
		return 0, nil
	}
	dc, err := dst.SyscallConn()
	if err != nil {
		return 0, nil
	}
	done := 0
	var cerr error
	serr := sc.Control(func(sfd uintptr) {
		cerr = dc.Control(func(dfd uintptr) {
			for done < n {
				k, e := unix.CopyFileRange(int(sfd), &soff, int(dfd), &doff, n-done, 0)
				if e == unix.EINTR {
					continue
				}
				if e != nil {
					switch e {
					case unix.EXDEV, unix.EINVAL, unix.ENOSYS, unix.EOPNOTSUPP, unix.EBADF:
						err = fmt.Errorf("%w: %v", errUnsupported, e)
					default:
						err = &os.PathError{Op: "copy_file_range", Path: name, Err: e}
					}
					return
				}
				if k == 0 {
					return // src ends here
				}
				done += k
			}
		})
	})
	if serr != nil {
		return done, nil // src closed: write the rest
	}
	if cerr != nil {
		return done, cerr
	}
	return done, err
}
