package e2e

import (
	"fmt"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHTTPStopWhileBlocked: the sink writes to a pipe nobody reads, so
// requests wait for acknowledgements that cannot come (ack_timeout is
// long). SIGTERM then cannot drain within --shutdown-timeout: etld exits
// 1, and every waiting request is answered 503 with Retry-After on the
// way (or its connection is closed) instead of hanging. The per-stage
// metrics count the connections and bytes meanwhile.
func TestHTTPStopWhileBlocked(t *testing.T) {
	dir := t.TempDir()
	addr, admin := freeAddr(t), freeAddr(t)
	p, pr := startPiped(t, dir, addr, "10m", "--admin", admin, "--shutdown-timeout", "2s")
	load := startHTTPLoad(t, "http://"+addr+"/", 4, 1000, 200)
	var inPipe int
	p.eventually(func() string {
		load.mu.Lock()
		defer load.mu.Unlock()
		return fmt.Sprintf("the output pipe nearly full (%d bytes in it, answers %v)", inPipe, load.codes)
	}, func() bool {
		n, err := unix.IoctlGetInt(int(pr.Fd()), unix.TIOCINQ) // bytes waiting in the pipe
		inPipe = n
		// A pipe holds up to 64 KiB, less when writes left pages part
		// full; what the 4 waiting bodies add (4 x 30 KiB) cannot fit.
		return err == nil && n >= 48<<10
	})
	label := `pipeline="piped",stage="web"`
	p.eventually("4 connections in etld_http_connections", func() bool {
		return crashMetric(admin, "etld_http_connections", label) == 4
	})
	if crashMetric(admin, "etld_http_received_bytes_total", label) <= 0 || crashMetric(admin, "etld_http_requests_total", label) < 4 {
		t.Errorf("byte and request counters did not count")
	}
	p.signal(syscall.SIGTERM)
	p.expectExit(p.wait(), 1, "SIGTERM with the sink blocked past --shutdown-timeout")
	load.halt() // returns: no request hung
	load.mu.Lock()
	defer load.mu.Unlock()
	if load.codes[503] == 0 {
		t.Errorf("no 503 for the requests waiting at the stop; answers %v", load.codes)
	}
	for code, n := range load.codes {
		if code != 200 && code != 503 && code != refused && code != broken {
			t.Errorf("%d answers %d", n, code)
		}
	}
}
