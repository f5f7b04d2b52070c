//go:build unix

package sources

import (
	"errors"
	"os"
	"syscall"
)

// preadAt reads into b from f at off with one pread(2): n < len(b) with
// a nil error is the end of the file for now. os.File.ReadAt goes on
// reading until b is full or it gets an error, so on a followed file,
// whose new bytes are short of the buffer, it made a second pread to
// see 0 bytes: at 10,000 files a line a second each, half the source's
// reads. f must be a regular file, used by one goroutine at a time and
// open for the call.
func preadAt(f *os.File, b []byte, off int64) (int, error) {
	for {
		n, err := syscall.Pread(int(f.Fd()), b, off)
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, syscall.EINTR):
			continue
		}
		return 0, &os.PathError{Op: "read", Path: f.Name(), Err: err}
	}
}
