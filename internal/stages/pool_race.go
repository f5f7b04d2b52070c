//go:build race

package stages

// poison overwrites a released buffer, so that code still reading a
// record of a released batch sees garbage under the race detector (which
// the tests run with) instead of the expected bytes.
func poison(b []byte) {
	for i := range b {
		b[i] = 0xde
	}
}
