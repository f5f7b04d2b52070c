//go:build !linux

package fswatch

// newPaced is Linux only: elsewhere New uses fsnotify.
func newPaced() (backend, error) { return nil, errNoPaced }
