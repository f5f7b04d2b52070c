package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/etld/etld/internal/tlsconf/tlsconftest"
)

// The syslog source end to end: real sockets into the etld binary, every
// message counted in the output file.

// slFreeAddr returns a loopback address with a port free right now.
func slFreeAddr(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// slConfig is a pipeline from a syslog source with the given options to
// out.jsonl, with a dead-letter file rejects.jsonl.
func slConfig(options string) string {
	return `version: 1
dead_letter: rejects
sources:
  in:
    type: syslog
` + indent(options, "    ") + `
workers:
  pass:
    inputs: [in]
    steps:
      - set: { via: etld }
sinks:
  out:
    type: file
    inputs: [pass]
    path: out.jsonl
  rejects:
    type: file
    path: rejects.jsonl
`
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := range lines {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n")
}

// slStart runs etld on a syslog pipeline and waits until it listens.
func slStart(t *testing.T, dir, options string) *proc {
	t.Helper()
	cfg := writeConfig(t, dir, "syslog.yaml", slConfig(options))
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.eventually("etld logs that the syslog source listens", func() bool { return p.logged("syslog source listening") })
	return p
}

// slLines returns the JSON objects of a file written by etld.
func slLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(string(readFile(t, path))))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: line %q: %v", filepath.Base(path), sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// slAwait waits until path has at least n lines.
func slAwait(p *proc, path string, n int) {
	p.t.Helper()
	c := &lineCounter{path: path}
	p.eventually(func() string { return fmt.Sprintf("%s has %d of %d lines", filepath.Base(path), c.count(), n) },
		func() bool { return c.count() >= n })
}

// slStop stops etld gracefully.
func slStop(p *proc) {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	p.expectExit(p.wait(), 0, "SIGTERM")
}

// slMessage is message seq of client c in one of four formats: RFC 5424
// or RFC 3164, with or without PRI.
func slMessage(c, seq int) string {
	text := fmt.Sprintf("c%d-%d", c, seq)
	switch seq % 4 {
	case 0:
		return fmt.Sprintf("<%d>1 2026-12-04T10:00:00.%03dZ host%d app %d ID%d [ex@1 seq=\"%d\"] %s", 8*16+seq%8, seq%1000, c, c, seq, seq, text)
	case 1:
		return fmt.Sprintf("1 2026-12-04T10:00:01Z host%d app %d - - %s", c, c, text)
	case 2:
		return fmt.Sprintf("<%d>Dec  4 10:00:02 host%d app[%d]: %s", 8*16+seq%8, c, c, text)
	default:
		return fmt.Sprintf("Dec  4 10:00:03 host%d app[%d]: %s", c, c, text)
	}
}

// slFrame frames msg: octet counting or a newline.
func slFrame(msg string, octets bool) string {
	if octets {
		return fmt.Sprintf("%d %s", len(msg), msg)
	}
	return msg + "\n"
}

// TestSyslogTCPClients: 8 concurrent clients, half octet-counted and half
// newline-framed, each mixing RFC 5424 and 3164 with and without PRI,
// and one connection sending garbage meanwhile. Every message is in the
// output exactly once with its fields; the garbage is in the dead-letter
// file, and nothing else.
func TestSyslogTCPClients(t *testing.T) {
	dir := t.TempDir()
	addr := slFreeAddr(t, "tcp")
	p := slStart(t, dir, "address: "+addr+"\nmax_message_bytes: 1KiB")
	const clients, perClient = 8, 2500
	var wg sync.WaitGroup
	local := make([]string, clients)
	for c := range clients {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		local[c] = conn.LocalAddr().String()
		wg.Go(func() {
			defer conn.Close()
			w := bufio.NewWriter(conn)
			for seq := range perClient {
				_, _ = w.WriteString(slFrame(slMessage(c, seq), c%2 == 0))
			}
			if err := w.Flush(); err != nil {
				t.Errorf("client %d: %v", c, err)
			}
		})
	}
	garbage, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = garbage.Write([]byte("<13>Dec  4 10:00:00 h app: \xff\xfe latin-1\n" + strings.Repeat("x", 5000) + "\n99999 <13>1 - h a - - - cut"))
	wg.Wait()
	out, rejects := filepath.Join(dir, "out.jsonl"), filepath.Join(dir, "rejects.jsonl")
	slAwait(p, out, clients*perClient)
	slAwait(p, rejects, 3)
	_ = garbage.Close()
	slStop(p)

	seen := map[string]int{}
	for _, m := range slLines(t, out) {
		msg, _ := m["message"].(string)
		seen[msg]++
		var c, seq int
		if _, err := fmt.Sscanf(msg, "c%d-%d", &c, &seq); err != nil {
			t.Fatalf("unexpected record %v", m)
		}
		want := map[string]any{"hostname": fmt.Sprintf("host%d", c), "appname": "app", "procid": fmt.Sprint(c),
			"peer": local[c], "via": "etld"}
		if seq%2 == 0 {
			want["facility"], want["severity"] = "local0", []string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"}[seq%8]
		}
		for k, v := range want {
			if m[k] != v {
				t.Fatalf("record %v: %s = %v, want %v", m, k, m[k], v)
			}
		}
		if seq%4 == 0 {
			if sd, _ := m["structured_data"].(map[string]any); sd == nil || sd["ex@1"].(map[string]any)["seq"] != fmt.Sprint(seq) {
				t.Fatalf("record %v: structured data lost", m)
			}
		}
	}
	lost, dup := 0, 0
	for c := range clients {
		for seq := range perClient {
			switch n := seen[fmt.Sprintf("c%d-%d", c, seq)]; {
			case n == 0:
				lost++
			case n > 1:
				dup += n - 1
			}
		}
	}
	if lost != 0 || dup != 0 || len(seen) != clients*perClient {
		t.Errorf("lost %d, duplicated %d, %d distinct messages of %d", lost, dup, len(seen), clients*perClient)
	}
	var errs []string
	for _, r := range slLines(t, rejects) {
		errs = append(errs, fmt.Sprint(r["error"]))
	}
	want := []string{"not valid UTF-8", "over max_message_bytes", "declared message length 99999"}
	if len(errs) != len(want) {
		t.Fatalf("dead letters %q, want %d", errs, len(want))
	}
	for i := range want {
		if !strings.Contains(errs[i], want[i]) {
			t.Errorf("dead letter %d: %q, want %q", i, errs[i], want[i])
		}
	}
}

// TestSyslogUDP: datagrams sent at a modest pace; at least 99% arrive
// (UDP may drop), none twice.
func TestSyslogUDP(t *testing.T) {
	dir := t.TempDir()
	addr := slFreeAddr(t, "udp")
	p := slStart(t, dir, "mode: udp\naddress: "+addr)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 5000
	for seq := range n {
		if _, err := conn.Write([]byte(slMessage(0, seq))); err != nil {
			t.Fatal(err)
		}
		if seq%100 == 99 {
			time.Sleep(time.Millisecond) // a modest pace, not a synchronisation
		}
	}
	out := filepath.Join(dir, "out.jsonl")
	slAwait(p, out, n*99/100)
	slStop(p)
	seen := map[string]bool{}
	for _, m := range slLines(t, out) {
		msg := fmt.Sprint(m["message"])
		if seen[msg] {
			t.Errorf("%s twice", msg)
		}
		seen[msg] = true
		if m["peer"] != conn.LocalAddr().String() {
			t.Fatalf("record %v: peer is not %s", m, conn.LocalAddr())
		}
	}
	t.Logf("udp: %d of %d datagrams delivered", len(seen), n)
	if len(seen) < n*99/100 {
		t.Errorf("%d of %d delivered", len(seen), n)
	}
}

// TestSyslogUnixSocket: a unix stream socket, parse: false keeps the
// messages as sent.
func TestSyslogUnixSocket(t *testing.T) {
	dir := t.TempDir()
	sockDir, err := os.MkdirTemp("", "sl") // socket paths are limited to ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "log.sock")
	p := slStart(t, dir, "mode: unix\npath: "+sock+"\nparse: false")
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var sent strings.Builder
	const n = 1000
	for seq := range n {
		sent.WriteString(slFrame(slMessage(1, seq), seq%3 == 0))
	}
	if _, err := conn.Write([]byte(sent.String())); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close()
	out := filepath.Join(dir, "out.jsonl")
	// parse: false with a set step: the line is not an object, so set
	// rejects it; use the dead-letter file to count what came through.
	slAwait(p, filepath.Join(dir, "rejects.jsonl"), n)
	slStop(p)
	recs := slLines(t, filepath.Join(dir, "rejects.jsonl"))
	for _, r := range recs {
		// The message as sent, its framing removed: the text is its last word.
		msg := fmt.Sprint(r["record"])
		var seq int
		if _, err := fmt.Sscanf(msg[strings.LastIndexByte(msg, ' ')+1:], "c1-%d", &seq); err != nil || msg != slMessage(1, seq) {
			t.Fatalf("dead letter %v is not a message as sent", r)
		}
		r["text"] = msg[strings.LastIndexByte(msg, ' ')+1:]
	}
	slExactlyOnce(t, recs, "text", 1, 0, n)
	if len(readFile(t, out)) != 0 {
		t.Errorf("out has %d bytes", len(readFile(t, out)))
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket file is still there after etld stopped: %v", err)
	}
}

// TestSyslogTLS: a TLS round trip with a generated certificate.
func TestSyslogTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key, client := tlsconftest.WritePair(t, dir)
	addr := slFreeAddr(t, "tcp")
	p := slStart(t, dir, fmt.Sprintf("address: %s\ntls: {cert: %s, key: %s}", addr, filepath.Base(cert), filepath.Base(key)))
	conn, err := tls.Dial("tcp", addr, client)
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	for seq := range n {
		if _, err := conn.Write([]byte(slFrame(slMessage(2, seq), true))); err != nil {
			t.Fatal(err)
		}
	}
	_ = conn.Close()
	out := filepath.Join(dir, "out.jsonl")
	slAwait(p, out, n)
	slStop(p)
	slExactlyOnce(t, slLines(t, out), "message", 2, 0, n)
}

// TestSyslogReloadChangesPort: a reload that moves the listener to
// another port closes the old one (its port can be bound again) and
// receives on the new one; nothing sent before or after is lost.
func TestSyslogReloadChangesPort(t *testing.T) {
	dir := t.TempDir()
	a, b := slFreeAddr(t, "tcp"), slFreeAddr(t, "tcp")
	p := slStart(t, dir, "address: "+a)
	send := func(addr string, from, n int) {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for seq := from; seq < from+n; seq++ {
			if _, err := conn.Write([]byte(slFrame(slMessage(3, seq), false))); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := filepath.Join(dir, "out.jsonl")
	send(a, 0, 100)
	slAwait(p, out, 100)
	writeConfig(t, dir, "syslog.yaml", slConfig("address: "+b))
	p.eventually("the source listens on the new port", func() bool {
		return strings.Contains(p.stderr.String(), `"address":"`+b+`"`)
	})
	if c, err := net.Dial("tcp", a); err == nil {
		c.Close()
		t.Errorf("the old port %s still accepts connections after the reload", a)
	}
	if l, err := net.Listen("tcp", a); err != nil {
		t.Errorf("the old port is not released: %v", err)
	} else {
		l.Close()
	}
	send(b, 100, 100)
	slAwait(p, out, 200)
	slStop(p)
	slExactlyOnce(t, slLines(t, out), "message", 3, 0, 200)
}

// TestSyslogPortInUse: a busy port is a start error naming the pipeline,
// the stage and the address.
func TestSyslogPortInUse(t *testing.T) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := writeConfig(t, dir, "syslog.yaml", slConfig("address: "+l.Addr().String()))
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	code := p.wait()
	msg := p.stderr.String()
	for _, want := range []string{`pipeline \"syslog\": stage \"in\"`, l.Addr().String(), "address already in use"} {
		if !strings.Contains(msg, want) {
			t.Errorf("stderr does not say %q:\n%s", want, tail(msg, 2000))
		}
	}
	if code == 0 {
		t.Errorf("etld exited 0 on a busy port")
	}
	t.Logf("exit %d: %s", code, tail(msg, 600))
}

// slExactlyOnce checks that recs hold messages c<c>-<from> to
// c<c>-<from+n-1> in field, each exactly once.
func slExactlyOnce(t *testing.T, recs []map[string]any, field string, c, from, n int) {
	t.Helper()
	seen := map[string]int{}
	for _, m := range recs {
		seen[fmt.Sprint(m[field])]++
	}
	lost, dup := 0, 0
	for seq := from; seq < from+n; seq++ {
		k := fmt.Sprintf("c%d-%d", c, seq)
		switch {
		case seen[k] == 0:
			lost++
		case seen[k] > 1:
			dup += seen[k] - 1
		}
		delete(seen, k)
	}
	if lost != 0 || dup != 0 || len(seen) != 0 {
		t.Errorf("lost %d, duplicated %d, %d unexpected records (of %d)", lost, dup, len(seen), n)
	}
}

// TestSyslogReloadToBusyPort: a reload onto a port in use fails with the
// pipeline, the stage and the address named, and the listener on the old
// port keeps receiving.
func TestSyslogReloadToBusyPort(t *testing.T) {
	dir := t.TempDir()
	a := slFreeAddr(t, "tcp")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	p := slStart(t, dir, "address: "+a)
	writeConfig(t, dir, "syslog.yaml", slConfig("address: "+busy.Addr().String()))
	p.eventually("the reload fails on the busy port", func() bool {
		return strings.Contains(p.stderr.String(), `pipeline \"syslog\": stage \"in\": open: syslog source: listen tcp `+busy.Addr().String()) &&
			strings.Count(p.stderr.String(), `"address":"`+a+`"`) >= 2 // listening again on the old port
	})
	conn, err := net.Dial("tcp", a)
	if err != nil {
		t.Fatalf("the old port does not accept after the failed reload: %v", err)
	}
	for seq := range 50 {
		if _, err := conn.Write([]byte(slFrame(slMessage(4, seq), true))); err != nil {
			t.Fatal(err)
		}
	}
	_ = conn.Close()
	out := filepath.Join(dir, "out.jsonl")
	slAwait(p, out, 50)
	slStop(p)
	slExactlyOnce(t, slLines(t, out), "message", 4, 0, 50)
}
