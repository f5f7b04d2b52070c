// Package notify speaks systemd's notify protocol (sd_notify(3)) for a
// service with Type=notify: READY=1 once the pipelines run, RELOADING=1
// and READY=1 around a reload, STOPPING=1 at shutdown, STATUS= lines, and
// WATCHDOG=1 pings while the process is healthy.
//
// Every function is a no-op returning nil when $NOTIFY_SOCKET is unset (not
// started by systemd, or a unit whose type does not listen), so callers
// never need to check. The messages go through
// github.com/coreos/go-systemd/v22/daemon, one datagram per call.
package notify

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Enabled reports whether a service manager listens ($NOTIFY_SOCKET is
// set).
func Enabled() bool { return daemonSocket() != "" }

// Ready tells the service manager that start-up or a reload is complete.
// A non-empty status is sent with it as STATUS=.
func Ready(status string) error {
	msg := daemon.SdNotifyReady
	if status != "" {
		msg += "\nSTATUS=" + oneLine(status)
	}
	return send(msg)
}

// Reloading tells the service manager that a reload starts; Ready must
// follow when it is over, whatever its outcome. The message carries
// MONOTONIC_USEC (CLOCK_MONOTONIC now, in microseconds), which
// Type=notify-reload units require and Type=notify units accept.
func Reloading() error {
	return send(daemon.SdNotifyReloading + "\n" + strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
}

// Stopping tells the service manager that a graceful stop has begun.
func Stopping() error { return send(daemon.SdNotifyStopping) }

// Status sets the one-line status that `systemctl status` shows.
func Status(s string) error { return send("STATUS=" + oneLine(s)) }

// WatchdogInterval returns the watchdog timeout the service manager
// expects pings within ($WATCHDOG_USEC, for this process), or 0 when the
// watchdog is off. Pings should be sent at half of it.
func WatchdogInterval() (time.Duration, error) {
	if !Enabled() {
		return 0, nil
	}
	return daemon.SdWatchdogEnabled(false)
}

// Watchdog sends WATCHDOG=1 every half of timeout while healthy returns
// true, until ctx is done. healthy is called before every ping, from this
// goroutine only; while it returns false no ping is sent, so a wedged
// process is restarted by the service manager (WatchdogSec=). The first
// check happens at once. Watchdog returns at once when timeout <= 0.
func Watchdog(ctx context.Context, timeout time.Duration, healthy func() bool) {
	if timeout <= 0 {
		return
	}
	t := time.NewTicker(timeout / 2)
	defer t.Stop()
	for {
		if healthy() {
			_ = send(daemon.SdNotifyWatchdog) // a lost ping is retried at the next tick
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// send sends one datagram; nil when nobody listens.
func send(msg string) error {
	_, err := daemon.SdNotify(false, msg)
	return err
}

func daemonSocket() string { return os.Getenv("NOTIFY_SOCKET") }

// oneLine keeps a status on one line: a newline would start a new
// assignment in the datagram.
func oneLine(s string) string { return newlines.Replace(s) }

var newlines = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ")
