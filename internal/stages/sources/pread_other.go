//go:build !unix

package sources

import (
	"errors"
	"io"
	"os"
)

// preadAt reads into b from f at off: n < len(b) with a nil error is the
// end of the file for now (see the Unix version).
func preadAt(f *os.File, b []byte, off int64) (int, error) {
	n, err := f.ReadAt(b, off)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}
