package engine

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: every
// stage goroutine, merge forwarder and AfterFunc hook must end with its
// pipeline.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
