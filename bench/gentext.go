package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Text feeds of workload W3: feed i (from 1) is, by i mod 3, an nginx
// access log (access-I.log), a logfmt application log (app-I.logfmt) or
// a syslog file (syslog-I.log), so that 4 feeds are two access logs, one
// app log and one syslog. Every feed starts at midnight on January 1 of
// baseYear, UTC, and each line is 0-19 ms after the previous one (about
// 10 ms on average), so the feeds interleave closely in time. The data is
// deterministic for a year: syslog lines have no year, and etld takes the
// current one, so the other feeds are written in the current year too.

type textKind int

const (
	kindNginx textKind = iota
	kindLogfmt
	kindSyslog
)

func textKindOf(i int) textKind { return textKind((i - 1) % 3) }

func textFeedName(i int) string {
	switch textKindOf(i) {
	case kindNginx:
		return fmt.Sprintf("access-%d.log", i)
	case kindLogfmt:
		return fmt.Sprintf("app-%d.logfmt", i)
	}
	return fmt.Sprintf("syslog-%d.log", i)
}

var (
	textIPs     = []string{"203.0.113.9", "198.51.100.4", "192.0.2.33", "203.0.113.120", "198.51.100.250"}
	textUsers   = []string{"-", "-", "-", "alice", "bob"}
	textMethods = []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	textPaths   = []string{"/", "/api/users", "/api/orders", "/api/orders/1742", "/static/app.js", "/favicon.ico", "/login?next=%2Faccount"}
	textStatus  = []int{200, 200, 200, 201, 204, 301, 304, 404, 500}
	textRefs    = []string{"-", "https://shop.example/", "https://shop.example/cart"}
	textAgents  = []string{"curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36", "Go-http-client/2.0"}
	textLevels  = []string{"debug", "info", "info", "info", "warn", "error"}
	textMsgs    = []string{`"request served"`, `"cache miss"`, `"slow query \"users\""`, "retrying", `"connection reset by peer"`}
	textHosts   = []string{"web1", "web2", "db1"}
	textProgs   = []string{"sshd[811]", "CRON[4312]", "kernel", "systemd[1]", "postfix/smtpd[2231]"}
	textSysMsgs = []string{
		"Accepted publickey for deploy from 203.0.113.5 port 51514 ssh2",
		"(root) CMD (run-parts /etc/cron.hourly)",
		"[UFW BLOCK] IN=eth0 OUT= SRC=198.51.100.7 DST=192.0.2.10 PROTO=TCP DPT=23",
		"Started Daily apt download activities.",
		"connect from unknown[192.0.2.77]",
	}
)

// genText writes feeds x lines text feeds into dir (seed 1, baseYear).
func genText(dir string, feeds, lines, baseYear int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := 1; i <= feeds; i++ {
		if err := genTextFeed(filepath.Join(dir, textFeedName(i)), i, lines, baseYear); err != nil {
			return err
		}
	}
	return nil
}

func genTextFeed(path string, i, lines, baseYear int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	r := rand.New(rand.NewPCG(1, uint64(i)))
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	t := time.Date(baseYear, time.January, 1, 0, 0, 0, 0, time.UTC)
	var b []byte
	for n := range lines {
		t = t.Add(time.Duration(r.IntN(20)) * time.Millisecond)
		b = b[:0]
		switch textKindOf(i) {
		case kindNginx:
			b = fmt.Appendf(b, `%s - %s [%s] "%s %s HTTP/1.1" %d %d "%s" "%s"`,
				pick(textIPs), pick(textUsers), t.Format("02/Jan/2006:15:04:05 -0700"), pick(textMethods), pick(textPaths),
				textStatus[r.IntN(len(textStatus))], r.IntN(20000), pick(textRefs), pick(textAgents))
		case kindLogfmt:
			// %q: a path with '=' must be quoted in logfmt.
			b = fmt.Appendf(b, "ts=%s level=%s msg=%s path=%q status=%d duration_ms=%d req=%d",
				t.Format("2006-01-02T15:04:05.000Z07:00"), pick(textLevels), pick(textMsgs), pick(textPaths),
				textStatus[r.IntN(len(textStatus))], r.IntN(2000), n)
			if n%7 == 0 {
				b = append(b, " cached"...)
			}
		case kindSyslog:
			if n%5 == 0 {
				b = append(b, "<86>"...)
			}
			b = t.AppendFormat(b, time.Stamp)
			b = fmt.Appendf(b, " %s %s: %s", pick(textHosts), pick(textProgs), pick(textSysMsgs))
		}
		b = append(b, '\n')
		if _, err := w.Write(b); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// textDataDir names W3's data directory; the year is part of it, since
// syslog times take the current year.
func textDataDir(base string, feeds, lines, year int) string {
	return filepath.Join(base, "etld-bench-text-"+strconv.Itoa(feeds)+"x"+strconv.Itoa(lines)+"-"+strconv.Itoa(year))
}
