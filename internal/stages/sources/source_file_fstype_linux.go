package sources

import "syscall"

// localFS reports whether dir is on a local filesystem whose every write
// inotify reports (ext2/3/4, xfs, btrfs, tmpfs, f2fs). Network and FUSE
// filesystems, overlayfs and anything unknown report false: their files
// keep the tick's poll at full rate.
func localFS(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false
	}
	switch uint32(st.Type) { //nolint:unconvert // int64 on some architectures
	case 0xef53, // ext2, ext3, ext4
		0x58465342, // xfs
		0x9123683e, // btrfs
		0x01021994, // tmpfs
		0xf2f52010: // f2fs
		return true
	}
	return false
}
