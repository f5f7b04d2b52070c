package syslog

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/stagetest"
	"github.com/etld/etld/internal/tlsconf/tlsconftest"
)

// open builds and opens a source on a free port (or the config's path).
func open(t *testing.T, edit func(c *Config)) *source {
	t.Helper()
	c := NewConfig()
	c.Address = "127.0.0.1:0"
	edit(c)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	s, err := newSource(stages.Settings{Pipeline: "p", ID: "in"}, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Open(context.Background()); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// got is what Read returned: records' Raw, and rejects.
type got struct {
	records []string
	rejects []stages.Reject
}

// readUntil reads until n records and rejects together came, failing
// after a deadline.
func readUntil(t *testing.T, s *source, n int) got {
	t.Helper()
	var g got
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for len(g.records)+len(g.rejects) < n {
		b, err := s.Read(ctx)
		if err != nil {
			t.Fatalf("Read after %d records and %d rejects (want %d): %v", len(g.records), len(g.rejects), n, err)
		}
		for _, r := range b.Records {
			g.records = append(g.records, string(r.Raw))
		}
		for _, r := range b.Rejects {
			r.Record.Raw = []byte(string(r.Record.Raw)) // outlives the batch
			g.rejects = append(g.rejects, r)
		}
		b.Release()
	}
	return g
}

func dial(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func send(t *testing.T, c net.Conn, data string) {
	t.Helper()
	if _, err := c.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
}

func fields(t *testing.T, raw string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatalf("record %s: %v", raw, err)
	}
	return m
}

func octet(msg string) string { return fmt.Sprintf("%d %s", len(msg), msg) }

func TestTCPParsesBothFramingsAndAddsPeer(t *testing.T) {
	s := open(t, func(*Config) {})
	c := dial(t, "tcp", s.addr())
	send(t, c, octet("<165>1 2024-12-04T10:00:00.5Z web01 app 42 ID7 [ex@1 k=\"v\"] first")+
		"<13>Dec  4 10:00:01 web02 sshd[7]: second\n"+
		"Dec  4 10:00:02 web03 cron: third\n"+
		octet("1 - web04 - - - - fourth"))
	g := readUntil(t, s, 4)
	if len(g.rejects) > 0 {
		t.Fatalf("rejects: %v", g.rejects[0].Err)
	}
	first := fields(t, g.records[0])
	for k, v := range map[string]any{"hostname": "web01", "appname": "app", "procid": "42", "msgid": "ID7",
		"facility": "local4", "severity": "notice", "message": "first", "timestamp": "2024-12-04T10:00:00.5Z",
		"peer": c.LocalAddr().String()} {
		if first[k] != v {
			t.Errorf("first record %s = %v, want %v (%s)", k, first[k], v, g.records[0])
		}
	}
	for i, want := range map[int][2]string{1: {"web02", "second"}, 2: {"web03", "third"}, 3: {"web04", "fourth"}} {
		m := fields(t, g.records[i])
		if m["hostname"] != want[0] || m["message"] != want[1] || m["peer"] != c.LocalAddr().String() {
			t.Errorf("record %d = %s, want hostname %s, message %s and the peer", i, g.records[i], want[0], want[1])
		}
	}
}

func TestParseFalseKeepsTheMessage(t *testing.T) {
	s := open(t, func(c *Config) { c.Parse = false })
	c := dial(t, "tcp", s.addr())
	send(t, c, octet("not syslog at all")+"neither\n")
	g := readUntil(t, s, 2)
	if strings.Join(g.records, "|") != "not syslog at all|neither" {
		t.Errorf("records %q", g.records)
	}
}

// TestGarbageConnection: bad frames on one connection are rejected (and
// a bad declared length closes that connection) while another
// connection goes on.
func TestGarbageConnection(t *testing.T) {
	s := open(t, func(c *Config) { c.MaxMessageBytes = 100; c.Parse = false })
	good := dial(t, "tcp", s.addr())
	bad := dial(t, "tcp", s.addr())
	send(t, bad, "ok \xff\xfe not utf-8\n"+strings.Repeat("y", 300)+"\n"+"999 declared too long")
	send(t, good, "a\n")
	g := readUntil(t, s, 4)
	// The bad connection was closed by the source.
	_ = bad.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := bad.Read(make([]byte, 1)); err == nil {
		t.Error("the connection with a bad declared length is still open")
	}
	send(t, good, "b\n")
	g2 := readUntil(t, s, 1)
	if strings.Join(append(g.records, g2.records...), "|") != "a|b" {
		t.Errorf("good records %q", append(g.records, g2.records...))
	}
	var errs []string
	for _, r := range g.rejects {
		errs = append(errs, r.Err.Error())
	}
	want := []string{"not valid UTF-8", "over max_message_bytes", "declared message length 999"}
	if len(errs) != len(want) {
		t.Fatalf("rejects %q, want %d", errs, len(want))
	}
	for i := range want {
		if !strings.Contains(errs[i], want[i]) {
			t.Errorf("reject %d: %q, want %q", i, errs[i], want[i])
		}
	}
	if g.rejects[1].Length != 300 || len(g.rejects[1].Record.Raw) != 100 {
		t.Errorf("over-long reject: length %d, kept %d bytes", g.rejects[1].Length, len(g.rejects[1].Record.Raw))
	}
	if n := value(t, s.framesRejected); n != 3 {
		t.Errorf("frames rejected = %v, want 3", n)
	}
}

func TestHalfFrameAtDisconnect(t *testing.T) {
	s := open(t, func(c *Config) { c.Parse = false })
	c := dial(t, "tcp", s.addr())
	send(t, c, "whole\n40 <13>cut")
	_ = c.Close()
	g := readUntil(t, s, 2)
	if len(g.records) != 1 || len(g.rejects) != 1 || !strings.Contains(g.rejects[0].Err.Error(), "middle of a message") ||
		string(g.rejects[0].Record.Raw) != "40 <13>cut" {
		t.Errorf("got %q and %+v", g.records, g.rejects)
	}
}

func TestParserRejectsAreBadRecords(t *testing.T) {
	s := open(t, func(*Config) {})
	c := dial(t, "tcp", s.addr())
	send(t, c, "<999>nope\n<13>Dec  4 10:00:01 h t: fine\n")
	g := readUntil(t, s, 2)
	if len(g.records) != 1 || len(g.rejects) != 1 || !strings.Contains(g.rejects[0].Err.Error(), "priority") {
		t.Errorf("got %q and %+v", g.records, g.rejects)
	}
}

func TestUDP(t *testing.T) {
	s := open(t, func(c *Config) { c.Mode = "udp"; c.MaxMessageBytes = 50 })
	c := dial(t, "udp", s.addr())
	const n = 200
	for i := range n {
		send(t, c, fmt.Sprintf("<13>Dec  4 10:00:01 h t: m%d\n", i))
	}
	send(t, c, "<13>"+strings.Repeat("z", 60))
	g := readUntil(t, s, n+1)
	if len(g.rejects) != 1 || len(g.records) != n {
		t.Fatalf("%d records, %d rejects", len(g.records), len(g.rejects))
	}
	for i, r := range g.records {
		m := fields(t, r)
		if m["message"] != fmt.Sprintf("m%d", i) || m["peer"] != c.LocalAddr().String() {
			t.Fatalf("record %d: %s", i, r)
		}
	}
}

func TestUnixStream(t *testing.T) {
	dir, err := os.MkdirTemp("", "sl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	path := filepath.Join(dir, "log.sock")
	// A stale socket file from a crash is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = stale.Close()
	s := open(t, func(c *Config) { c.Mode = "unix"; c.Path = path })
	c := dial(t, "unix", path)
	send(t, c, "<13>Dec  4 10:00:01 h t: local\n")
	g := readUntil(t, s, 1)
	if m := fields(t, g.records[0]); m["message"] != "local" || m["peer"] != path {
		t.Errorf("record %s", g.records[0])
	}
}

func TestTLS(t *testing.T) {
	cert, key, client := tlsconftest.WritePair(t, t.TempDir())
	s := open(t, func(c *Config) { c.TLS.Cert, c.TLS.Key = cert, key })
	c, err := tls.Dial("tcp", s.addr(), client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send(t, c, octet("<13>1 - h a - - - over tls"))
	g := readUntil(t, s, 1)
	if m := fields(t, g.records[0]); m["message"] != "over tls" {
		t.Errorf("record %s", g.records[0])
	}
	// A client speaking plain text gets nothing in.
	plain := dial(t, "tcp", s.addr())
	send(t, plain, "<13>Dec  4 10:00:01 h t: plain\n")
	_ = plain.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = plain.Read(make([]byte, 1)) // the server ends the failed handshake
	send(t, c, octet("<13>1 - h a - - - after"))
	if g := readUntil(t, s, 1); len(g.records) != 1 || !strings.Contains(g.records[0], "after") {
		t.Errorf("got %q and %+v", g.records, g.rejects)
	}
}

func TestMaxConnections(t *testing.T) {
	s := open(t, func(c *Config) { c.MaxConnections = 1; c.Parse = false })
	first := dial(t, "tcp", s.addr())
	send(t, first, "one\n")
	readUntil(t, s, 1) // the first is served
	second := dial(t, "tcp", s.addr())
	_ = second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := second.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the connection over max_connections was not closed: %v", err)
	}
	if n := value(t, s.refused); n != 1 {
		t.Errorf("refused = %v, want 1", n)
	}
	send(t, first, "two\n")
	if g := readUntil(t, s, 1); g.records[0] != "two" {
		t.Errorf("got %q", g.records)
	}
}

func TestBindErrorNamesTheAddress(t *testing.T) {
	s := open(t, func(*Config) {})
	c := NewConfig()
	c.Address = s.addr()
	s2, err := newSource(stages.Settings{ID: "in"}, c)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	err = s2.Open(context.Background())
	if err == nil || !strings.Contains(err.Error(), s.addr()) || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Open on a busy port: %v", err)
	}
}

func TestReadHonoursCancel(t *testing.T) {
	s := open(t, func(*Config) {})
	ctx, cancel := context.WithCancel(context.Background())
	go cancel()
	if _, err := s.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Read: %v", err)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		edit  func(*Config)
		field string
	}{
		{func(c *Config) { c.Mode = "sctp" }, "mode"},
		{func(c *Config) { c.Address = "nope" }, "address"},
		{func(c *Config) { c.Mode = "unix" }, "path"},
		{func(c *Config) { c.Path = "x.sock" }, "path"},
		{func(c *Config) { c.MaxMessageBytes = 0 }, "max_message_bytes"},
		{func(c *Config) { c.MaxConnections = 0 }, "max_connections"},
		{func(c *Config) { c.TLS.Cert = "c.pem" }, "tls"},
		{func(c *Config) { c.Mode = "udp"; c.TLS.Cert, c.TLS.Key = "c", "k" }, "tls"},
		{func(c *Config) { c.Timezone = "Mars/Base" }, "timezone"},
	} {
		cfg := NewConfig()
		c.edit(cfg)
		var fe *stages.FieldError
		if err := cfg.Validate(); !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("want an error at %q, got %v", c.field, err)
		}
	}
	if err := NewConfig().Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// value is the value of a counter.
func value(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestHealthReportsBadRenewedTLSFiles: certificate files replaced by
// unusable ones keep the last good pair in use and make the stage
// unhealthy.
func TestHealthReportsBadRenewedTLSFiles(t *testing.T) {
	cert, key, client := tlsconftest.WritePair(t, t.TempDir())
	s := open(t, func(c *Config) { c.TLS.Cert, c.TLS.Key = cert, key })
	if err := s.Health(); err != nil {
		t.Fatalf("healthy at start: %v", err)
	}
	if err := os.WriteFile(key, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for s.Health() == nil {
		if time.Now().After(deadline) {
			t.Fatal("still healthy with a broken key file")
		}
		// Files are looked at on handshakes, at most once a second.
		c, err := tls.Dial("tcp", s.addr(), client)
		if err != nil {
			t.Fatalf("the last good pair is not used: %v", err)
		}
		_ = c.Close()
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("unhealthy: %v", s.Health())
}

// readToEnd reads a drained source until ErrEndOfInput.
func readToEnd(t *testing.T, s *source) got {
	t.Helper()
	var g got
	stagetest.ReadToEnd(t, s, 20*time.Second, func(b *stages.Batch) {
		for _, r := range b.Records {
			g.records = append(g.records, string(r.Raw))
		}
		for _, r := range b.Rejects {
			r.Record.Raw = []byte(string(r.Record.Raw))
			g.rejects = append(g.rejects, r)
		}
		b.Release()
	})
	return g
}

// TestDrainKeepsWhatWasReceived: messages etld received but the
// pipeline has not read yet (queued for Read) all come out after Drain,
// then the end; the listener is closed and new input is refused. Close
// instead would drop them.
func TestDrainKeepsWhatWasReceived(t *testing.T) {
	for _, mode := range []string{"tcp", "udp"} {
		t.Run(mode, func(t *testing.T) {
			s := open(t, func(c *Config) { c.Mode = mode; c.Parse = false })
			conns, per := 3, 300
			var sent int
			for k := range conns {
				c := dial(t, mode, s.addr())
				for i := range per {
					msg := fmt.Sprintf("<13>Dec  4 10:00:01 h t: c%d m%d\n", k, i)
					send(t, c, msg)
					sent += len(msg)
				}
			}
			// Wait until etld holds received messages that nothing read
			// yet: everything sent was received (and is queued or held by
			// the connections' goroutines), or the queue is full (and the
			// kernel may hold more).
			deadline := time.Now().Add(20 * time.Second)
			for value(t, s.bytesIn) < float64(sent) && len(s.out) < cap(s.out) {
				if time.Now().After(deadline) {
					t.Fatalf("received %v of %d bytes, the queue holds %d batches", value(t, s.bytesIn), sent, len(s.out))
				}
				time.Sleep(time.Millisecond)
			}
			s.Drain()
			g := readToEnd(t, s)
			// Every byte etld received comes out: each message plus its
			// newline, nothing rejected.
			var out int
			for _, r := range g.records {
				out += len(r) + 1
			}
			if received := int(value(t, s.bytesIn)); out != received || len(g.rejects) != 0 || out == 0 {
				t.Fatalf("drained %d records (%d bytes with newlines) and %d rejects; etld received %d of %d bytes sent",
					len(g.records), out, len(g.rejects), received, sent)
			}
			seen := map[string]bool{}
			for _, r := range g.records {
				if seen[r] {
					t.Fatalf("twice: %s", r)
				}
				seen[r] = true
			}
			if mode == "tcp" {
				if c, err := net.DialTimeout("tcp", s.addr(), time.Second); err == nil {
					c.Close()
					t.Error("the listener still accepts after Drain")
				}
			}
		})
	}
}
