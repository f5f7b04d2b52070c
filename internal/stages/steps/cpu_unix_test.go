//go:build unix

package steps

import "syscall"

// processCPU is the user+system CPU time of the process so far, in ns:
// on a shared machine it varies less with load than wall time does.
func processCPU() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
