//go:build unix

package sources

import (
	"os"
	"syscall"
)

// identityOf returns the device and inode of a file. path is unused on Unix.
func identityOf(fi os.FileInfo, path string) fileID {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{path: path}
	}
	return fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)} //nolint:unconvert // Dev is int32 on some platforms
}
