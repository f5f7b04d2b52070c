//go:build !unix

package state

// Lock is a no-op where flock(2) is not available.
func (s *Store) Lock() error { return nil }

// Unlock is a no-op where flock(2) is not available.
func (s *Store) Unlock() {}
