package notify

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor bounds every receive: no assertion depends on speed.
const waitFor = 10 * time.Second

// listen plays the service manager: a unixgram socket named by
// $NOTIFY_SOCKET for the rest of the test.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "")
	t.Setenv("WATCHDOG_PID", "")
	return conn
}

// recv returns the next datagram, failing the test after d.
func recv(t *testing.T, conn *net.UnixConn, d time.Duration) string {
	t.Helper()
	msg, err := tryRecv(conn, d)
	if err != nil {
		t.Fatalf("no notify message within %v: %v", d, err)
	}
	return msg
}

func tryRecv(conn *net.UnixConn, d time.Duration) (string, error) {
	if err := conn.SetReadDeadline(time.Now().Add(d)); err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func TestMessagesInOrder(t *testing.T) {
	conn := listen(t)
	if !Enabled() {
		t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
	}

	if err := Ready("2 pipelines running\nsecond line"); err != nil {
		t.Fatal(err)
	}
	if got, want := recv(t, conn, waitFor), "READY=1\nSTATUS=2 pipelines running second line"; got != want {
		t.Fatalf("Ready: got %q, want %q", got, want)
	}

	if err := Status("1 pipeline running, 10 records/s"); err != nil {
		t.Fatal(err)
	}
	if got, want := recv(t, conn, waitFor), "STATUS=1 pipeline running, 10 records/s"; got != want {
		t.Fatalf("Status: got %q, want %q", got, want)
	}

	before := monotonicUsec(t)
	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	after := monotonicUsec(t)
	got := recv(t, conn, waitFor)
	lines := strings.Split(got, "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("Reloading: got %q, want RELOADING=1 then MONOTONIC_USEC=N", got)
	}
	usec, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil || usec < before || usec > after {
		t.Fatalf("MONOTONIC_USEC=%d (%v), want within [%d, %d] (CLOCK_MONOTONIC)", usec, err, before, after)
	}

	if err := Ready(""); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, conn, waitFor); got != "READY=1" {
		t.Fatalf("Ready after reload: got %q, want READY=1", got)
	}

	if err := Stopping(); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, conn, waitFor); got != "STOPPING=1" {
		t.Fatalf("Stopping: got %q, want STOPPING=1", got)
	}
}

func monotonicUsec(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

func TestNoSocketIsNoOp(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000000")
	if Enabled() {
		t.Fatal("Enabled() = true without NOTIFY_SOCKET")
	}
	for name, f := range map[string]func() error{
		"Ready":     func() error { return Ready("x") },
		"Reloading": Reloading,
		"Stopping":  Stopping,
		"Status":    func() error { return Status("x") },
	} {
		if err := f(); err != nil {
			t.Errorf("%s without NOTIFY_SOCKET: %v", name, err)
		}
	}
	if d, err := WatchdogInterval(); d != 0 || err != nil {
		t.Errorf("WatchdogInterval without NOTIFY_SOCKET = %v, %v; want 0, nil", d, err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	listen(t)
	if d, err := WatchdogInterval(); d != 0 || err != nil {
		t.Fatalf("no WATCHDOG_USEC: %v, %v; want 0, nil", d, err)
	}
	t.Setenv("WATCHDOG_USEC", "30000000")
	if d, err := WatchdogInterval(); d != 30*time.Second || err != nil {
		t.Fatalf("WATCHDOG_USEC=30000000: %v, %v; want 30s", d, err)
	}
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	if d, err := WatchdogInterval(); d != 0 || err != nil {
		t.Fatalf("WATCHDOG_PID of another process: %v, %v; want 0, nil", d, err)
	}
	t.Setenv("WATCHDOG_PID", "")
	t.Setenv("WATCHDOG_USEC", "soon")
	if _, err := WatchdogInterval(); err == nil {
		t.Fatal("WATCHDOG_USEC=soon: no error")
	}
}

// TestWatchdogStopsWhileUnhealthy: pings flow while healthy, none is
// sent while unhealthy, and they resume with health. Every ping is sent
// right after a healthy() call that returned true, so once healthy() has
// returned false, the number of pings received must equal the number of
// true answers exactly, whatever the timing.
func TestWatchdogStopsWhileUnhealthy(t *testing.T) {
	conn := listen(t)
	const timeout = 20 * time.Millisecond // a ping every 10ms

	var healthy atomic.Bool
	healthy.Store(true)
	var trueAnswers atomic.Int64
	falseAnswers := make(chan struct{}, 1000)
	check := func() bool {
		if healthy.Load() {
			trueAnswers.Add(1)
			return true
		}
		select {
		case falseAnswers <- struct{}{}:
		default:
		}
		return false
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { Watchdog(ctx, timeout, check) })
	defer func() {
		cancel()
		wg.Wait()
	}()

	received := 0
	for range 3 {
		if got := recv(t, conn, waitFor); got != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", got)
		}
		received++
	}

	healthy.Store(false)
	// Three unhealthy checks in a row: the watchdog has had two periods
	// to (wrongly) ping.
	for range 3 {
		select {
		case <-falseAnswers:
		case <-time.After(waitFor):
			t.Fatal("healthy() was not called again")
		}
	}
	sent := trueAnswers.Load()
	for int64(received) < sent {
		if got := recv(t, conn, waitFor); got != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", got)
		}
		received++
	}
	// Nothing more may come while unhealthy. Waiting a few periods for
	// a datagram that must not arrive is the only way to see an absence.
	if msg, err := tryRecv(conn, 5*timeout); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("while unhealthy: got %q, %v; want no ping", msg, err)
	}

	healthy.Store(true)
	if got := recv(t, conn, waitFor); got != "WATCHDOG=1" {
		t.Fatalf("after recovery: got %q, want WATCHDOG=1", got)
	}
}

func TestWatchdogOff(t *testing.T) {
	done := make(chan struct{})
	go func() {
		Watchdog(context.Background(), 0, func() bool { t.Error("healthy() called with the watchdog off"); return true })
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(waitFor):
		t.Fatal("Watchdog(0) did not return")
	}
}
