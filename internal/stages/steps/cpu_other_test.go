//go:build !unix

package steps

// processCPU is not measured here: the benchmarks report no CPU time.
func processCPU() int64 { return 0 }
