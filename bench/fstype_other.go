//go:build !linux

package main

// fsType names the filesystem holding path; only Linux is supported.
func fsType(string) string { return "unknown" }
