//go:build !linux

package sources

// localFS reports whether inotify sees every write on dir's filesystem:
// only known on Linux, so elsewhere the tick polls at full rate.
func localFS(dir string) bool { return false }
