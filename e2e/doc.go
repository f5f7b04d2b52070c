// Package e2e holds end-to-end tests of etld: they build the etld binary
// once, run it on real files in temporary directories, and count every
// record that comes out (lost = 0, duplicated = 0).
//
//	go test -race -count=1 ./e2e/
//
// Environment:
//
//	ETLD_E2E_BIN=/path/to/etld   use this binary instead of building one
//	                             (a relative path is relative to e2e/)
//	ETLD_E2E_RACE=1              build the binary with -race
//
// Every wait is a poll with a deadline (a hang guard, never a timing
// assertion). shutdown_linux_test.go needs Linux (it inspects a pipe).
//
// The package has no non-test code besides this comment.
package e2e
