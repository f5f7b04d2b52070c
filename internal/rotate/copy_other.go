//go:build !linux

package rotate

import "os"

type copier struct{}

func (c *copier) close() {}

// WriteFrom is Write: in-kernel copies are Linux only (see copy_linux.go).
func (r *File) WriteFrom(p []byte, _ *os.File, _ int64) (int, error) {
	_, err := r.Write(p)
	return 0, err
}
