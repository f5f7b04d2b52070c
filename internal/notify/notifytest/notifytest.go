// Package notifytest plays systemd's side of the notify protocol in
// tests: a unixgram socket that collects the datagrams a process sends to
// $NOTIFY_SOCKET, in-process or in a child.
package notifytest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// HangTimeout bounds Next: it only turns a missing message into a
// failure; no assertion depends on how fast a message comes.
const HangTimeout = 60 * time.Second

// Listen opens a unixgram socket whose datagrams arrive, one string each,
// on the returned channel, which is closed when the test ends. It sets
// $NOTIFY_SOCKET for the test when setEnv is true (the test cannot be
// parallel then); else the caller passes the path to a child process.
func Listen(t testing.TB, setEnv bool) (string, <-chan string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "etld-notify-") // short: socket paths have a length limit
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	msgs := make(chan string, 1024)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	})
	t.Cleanup(func() {
		conn.Close()
		wg.Wait()
		os.RemoveAll(dir)
	})
	if setEnv {
		t.Setenv("NOTIFY_SOCKET", path)
	}
	return path, msgs
}

// Next returns the next datagram for which keep is true, skipping the
// others (periodic STATUS= lines, watchdog pings). It fails the test when
// none comes within HangTimeout; what names the awaited message.
func Next(t testing.TB, msgs <-chan string, what string, keep func(string) bool) string {
	t.Helper()
	deadline := time.NewTimer(HangTimeout)
	defer deadline.Stop()
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed while waiting for %s", what)
			}
			if keep(m) {
				return m
			}
		case <-deadline.C:
			t.Fatalf("no %s notification within %v", what, HangTimeout)
		}
	}
}

// Lifecycle keeps the messages of the start/reload/stop protocol: not the
// periodic STATUS= lines nor the watchdog pings.
func Lifecycle(m string) bool {
	return !strings.HasPrefix(m, "STATUS=") && m != "WATCHDOG=1"
}
