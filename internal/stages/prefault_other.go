//go:build !linux

package stages

// prefault does nothing off Linux: see prefault_linux.go.
func prefault([]byte) {}
