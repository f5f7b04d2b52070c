//go:build !linux

package stages

// Prefault does nothing off Linux: see prefault_linux.go.
func Prefault([]byte) {}
