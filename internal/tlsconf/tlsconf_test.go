package tlsconf

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etld/etld/internal/tlsconf/tlsconftest"
)

// writePair writes a self-signed certificate for 127.0.0.1 named cn and
// its key into dir, returning their paths.
func writePair(t *testing.T, dir, cn string) (cert, key string) {
	t.Helper()
	cert, key, _ = tlsconftest.WriteNamedPair(t, dir, cn)
	return cert, key
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestValidateReportsEachFile(t *testing.T) {
	dir := t.TempDir()
	c := &ServerConfig{Cert: "nope.pem", Key: "nope.key", ClientCA: "ca.pem"}
	c.ResolvePaths(dir)
	must(t, os.WriteFile(filepath.Join(dir, "ca.pem"), []byte("not pem"), 0o600))
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate = %v; files are CheckFiles' job", err)
	}
	err := c.CheckFiles()
	if err == nil || !strings.Contains(err.Error(), "tls.cert:") || !strings.Contains(err.Error(), "tls.client_ca:") {
		t.Fatalf("Validate = %v, want errors at tls.cert and tls.client_ca", err)
	}
	if err := (&ServerConfig{Cert: "x"}).Validate(); err == nil || !strings.Contains(err.Error(), "needs both cert and key") {
		t.Fatalf("cert without key: %v", err)
	}
	if err := (&ClientConfig{Cert: "x"}).Validate(); err == nil || !strings.Contains(err.Error(), "go together") {
		t.Fatalf("client cert without key: %v", err)
	}
	if s, err := NewServer(&ServerConfig{}); s != nil || err != nil {
		t.Fatalf("TLS off: %v, %v", s, err)
	}
}

// TestServerFollowsItsFiles serves TLS, renews the certificate on disk
// and checks that a later handshake gets the new one without a restart.
func TestServerFollowsItsFiles(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir, "first")
	c := &ServerConfig{Cert: cert, Key: key}
	must(t, c.Validate())
	must(t, c.CheckFiles())
	srv, err := NewServer(c)
	must(t, err)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv.Config())
	must(t, err)
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	peer := func() string {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true})
		must(t, err)
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := peer(); got != "first" {
		t.Fatalf("served %q, want first", got)
	}
	writePair(t, dir, "second")
	// Force the next handshake to look at the files (the check is at most
	// once a second) and make sure the mtime moved.
	future := time.Now().Add(2 * time.Second)
	must(t, os.Chtimes(cert, future, future))
	srv.mu.Lock()
	srv.checked = time.Time{}
	srv.mu.Unlock()
	if got := peer(); got != "second" {
		t.Fatalf("after renewal served %q, want second", got)
	}
	// A broken renewal keeps the last good pair and says why.
	must(t, os.WriteFile(key, []byte("garbage"), 0o600))
	srv.mu.Lock()
	srv.checked = time.Time{}
	srv.mu.Unlock()
	if got := peer(); got != "second" {
		t.Fatalf("after a broken renewal served %q, want second", got)
	}
	if srv.Err() == nil {
		t.Fatal("broken renewal not reported by Err")
	}
}
