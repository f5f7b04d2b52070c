package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/etld/etld/internal/tlsconf/tlsconftest"
)

// The http_server source end to end: a 200 means durable (nothing
// acknowledged is lost across kill -9), clients that retry what was not
// acknowledged get at-least-once, and duplicates come only from bodies
// that were sent more than once.

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// httpClient returns a client whose connections are closed at the end of
// the test (goleak).
func httpClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitTimeout}
}

type httpReply struct {
	code  int
	body  string
	retry string
}

// post sends one body; err is a transport error (refused, reset, ...).
func post(cl *http.Client, url, ctype string, body []byte, hdr ...string) (httpReply, error) {
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		return httpReply{}, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := cl.Do(req)
	if err != nil {
		return httpReply{}, err
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	return httpReply{resp.StatusCode, strings.TrimSpace(string(b)), resp.Header.Get("Retry-After")}, err
}

// waitListening polls until addr accepts connections.
func (p *proc) waitListening(addr string) {
	p.t.Helper()
	p.eventually("etld listens on "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// httpLoad is a set of clients that each send numbered bodies of
// records and send a body again until it is answered 200.
type httpLoad struct {
	t       testing.TB
	url     string
	clients int
	bodies  int // per client
	per     int // records per body
	stop    atomic.Bool
	acked   atomic.Int64 // bodies answered 200
	wg      sync.WaitGroup

	mu      sync.Mutex
	sent    map[string]int // body name -> times sent
	ackedBy map[string]bool
	codes   map[int]int
}

// Pseudo status codes of httpLoad.codes: the connection was refused (no
// listener), or the request failed after connecting (reset, EOF).
const (
	refused = -1
	broken  = -2
)

func startHTTPLoad(t testing.TB, url string, clients, bodies, per int) *httpLoad {
	l := &httpLoad{t: t, url: url, clients: clients, bodies: bodies, per: per,
		sent: map[string]int{}, ackedBy: map[string]bool{}, codes: map[int]int{}}
	for c := range clients {
		l.wg.Add(1)
		go l.client(c)
	}
	return l
}

func (l *httpLoad) bodyName(c, b int) string { return fmt.Sprintf("c%d", c) + "-" + fmt.Sprint(b) }

// records are the keys of body b of client c: feed "c<c>b<b>", seq 0..per-1.
func (l *httpLoad) body(c, b int) ([]byte, []string) {
	return feed(fmt.Sprintf("c%db%d", c, b), 0, l.per)
}

func (l *httpLoad) client(c int) {
	defer l.wg.Done()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: waitTimeout}
	for b := 0; b < l.bodies && !l.stop.Load(); {
		data, _ := l.body(c, b)
		name := l.bodyName(c, b)
		l.mu.Lock()
		l.sent[name]++
		l.mu.Unlock()
		r, err := post(cl, l.url, "application/x-ndjson", data)
		l.mu.Lock()
		switch op := (*net.OpError)(nil); {
		case err == nil:
			l.codes[r.code]++
		case errors.As(err, &op) && op.Op == "dial":
			l.codes[refused]++
		default:
			l.codes[broken]++
		}
		if err == nil && r.code == 503 && r.retry == "" {
			l.t.Errorf("body %s: 503 without Retry-After: %s", name, r.body)
		}
		if err == nil && r.code == 200 {
			if want := fmt.Sprintf(`{"accepted":%d,"rejected":0}`, l.per); r.body != want {
				l.t.Errorf("body %s: answer %s, want %s", name, r.body, want)
			}
			l.ackedBy[name] = true
		}
		l.mu.Unlock()
		if err == nil && r.code == 200 {
			l.acked.Add(1)
			b++
			continue
		}
		// Not acknowledged (etld down, 503, reset): send it again after
		// a pause, like a client with a retry policy.
		time.Sleep(20 * time.Millisecond)
	}
}

// halt stops the clients after their current request and waits for them.
func (l *httpLoad) halt() {
	l.stop.Store(true)
	l.wg.Wait()
}

// check compares the output keys with what the clients sent: every
// record of an acknowledged body is there (lost 0), no record is there
// twice unless its body was sent more than once, and nothing else is.
func (l *httpLoad) check(got []string) {
	l.t.Helper()
	n := map[string]int{}
	for _, k := range got {
		n[k]++
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var lost, badDup, extra, retried, dups int
	known := map[string]bool{}
	for c := range l.clients {
		for b := range l.bodies {
			name := l.bodyName(c, b)
			_, keys := l.body(c, b)
			for _, k := range keys {
				known[k] = true
				switch {
				case l.ackedBy[name] && n[k] == 0:
					if lost++; lost <= 5 {
						l.t.Errorf("record %s of acknowledged body %s is not in the output", k, name)
					}
				case n[k] > 1 && l.sent[name] < 2:
					if badDup++; badDup <= 5 {
						l.t.Errorf("record %s is in the output %d times, but its body %s was sent once", k, n[k], name)
					}
				case n[k] > 1:
					dups += n[k] - 1
				}
			}
			if l.sent[name] > 1 {
				retried++
			}
		}
	}
	for k := range n {
		if !known[k] {
			extra++
		}
	}
	if extra > 0 {
		l.t.Errorf("%d records in the output were never sent", extra)
	}
	l.t.Logf("bodies acknowledged %d, sent again %d; records acknowledged and lost %d, duplicated %d (all of bodies sent again); answers %v",
		len(l.ackedBy), retried, lost, dups, l.codes)
}

// TestHTTPAcknowledgedSurvivesKill9: 8 clients send bodies while etld is
// killed with -9 twice and restarted on the same state dir and port.
// Every record of every body answered 200 is in the output afterwards.
// checkpoint_interval is an hour, so every 200 comes from a checkpoint
// the source asked for.
func TestHTTPAcknowledgedSurvivesKill9(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, "http.yaml", `version: 1
checkpoint_interval: 1h
sources:
  web: {type: http_server, address: "`+addr+`", path: /ingest}
sinks:
  out: {type: file, inputs: [web], path: out.jsonl}
`)
	state := filepath.Join(dir, "state")
	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.waitListening(addr)
	load := startHTTPLoad(t, "http://"+addr+"/ingest", 8, 40, 50)
	for round, at := range []int64{60, 160} {
		p.eventually(fmt.Sprintf("%d bodies acknowledged before kill %d", at, round+1), func() bool { return load.acked.Load() >= at })
		p.kill()
		p = startEtld(t, dir, nil, runArgs(cfg, state)...)
		p.waitListening(addr)
	}
	p.eventually("every body acknowledged", func() bool { return load.acked.Load() == 8*40 })
	load.halt()
	p.expectExit(p.stop(), 0, "SIGTERM")
	load.check(outputKeys(t, filepath.Join(dir, "out.jsonl")))
}

// TestHTTPStatusCodes: each refusal writes nothing, and the bodies that
// are accepted are written exactly once; ack: received answers too.
func TestHTTPStatusCodes(t *testing.T) {
	dir := t.TempDir()
	a, b := freeAddr(t), freeAddr(t)
	cfg := writeConfig(t, dir, "http.yaml", `version: 1
sources:
  strict:
    type: http_server
    address: "`+a+`"
    auth: {bearer_token: "${HTTP_TEST_TOKEN:-t0ken}"}
    max_body_bytes: 1KiB
  quick: {type: http_server, address: "`+b+`", ack: received}
workers:
  parse: {inputs: [strict, quick], steps: [{parse_json: {}}]}
sinks:
  out: {type: file, inputs: [parse], path: out.jsonl}
  bad: {type: file, path: bad.jsonl}
dead_letter: bad
`)
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.waitListening(a)
	p.waitListening(b)
	cl := httpClient(t)
	auth := []string{"Authorization", "Bearer t0ken"}
	one, k1 := feed("ok", 0, 3)
	big, _ := feed("big", 0, 20)
	arr := []byte(`[{"key":"json-0"}, {"key":"json-1"}, "not an object"]`)
	cases := []struct {
		name, url, ctype string
		body             []byte
		hdr              []string
		code             int
		want             string
	}{
		{"no token", "http://" + a + "/", "text/plain", one, nil, 401, "bearer token"},
		{"wrong token", "http://" + a + "/", "text/plain", one, []string{"Authorization", "Bearer t0keN"}, 401, "bearer token"},
		{"too large", "http://" + a + "/", "text/plain", big, auth, 413, "max_body_bytes"},
		{"malformed JSON", "http://" + a + "/", "application/json", []byte(`[{"key":"x-0"},`), auth, 400, "invalid JSON"},
		{"other path", "http://" + a + "/x", "text/plain", one, auth, 404, "no such path"},
		{"accepted", "http://" + a + "/", "text/plain", one, auth, 200, `{"accepted":3,"rejected":0}`},
		{"JSON array", "http://" + b + "/", "application/json", arr, nil, 200, `{"accepted":2,"rejected":1}`},
	}
	for _, c := range cases {
		r, err := post(cl, c.url, c.ctype, c.body, c.hdr...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.code != c.code || !strings.Contains(r.body, c.want) {
			t.Errorf("%s: answer %d %s, want %d with %q", c.name, r.code, r.body, c.code, c.want)
		}
	}
	req, _ := http.NewRequest("GET", "http://"+a+"/", nil)
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	out := filepath.Join(dir, "out.jsonl")
	want := append(k1, "json-0", "json-1")
	p.waitForLines(out, len(want), want)
	p.expectExit(p.stop(), 0, "SIGTERM")
	checkExactlyOnce(t, "output", want, outputKeys(t, out))
	if bad := string(readFile(t, filepath.Join(dir, "bad.jsonl"))); strings.Count(bad, "\n") != 1 || !strings.Contains(bad, `"record":"\"not an object\""`) {
		t.Errorf("dead letter: %s", bad)
	}
}

// startPiped starts etld with an http_server source on addr (with
// ack_timeout) into the stdout sink, whose output goes to a pipe that
// nobody reads until the test reads the returned end.
func startPiped(t *testing.T, dir, addr, ackTimeout string, extra ...string) (*proc, *os.File) {
	t.Helper()
	cfg := writeConfig(t, dir, "piped.yaml", `version: 1
sources:
  web: {type: http_server, address: "`+addr+`", ack_timeout: `+ackTimeout+`}
sinks:
  out: {type: stdout, inputs: [web]}
`)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close() })
	p := startEtldOut(t, dir, nil, pw, runArgs(cfg, filepath.Join(dir, "state"), extra...)...)
	pw.Close()
	p.waitListening(addr)
	return p, pr
}

// TestHTTPBusyPipelineAnswers503: the sink writes to a pipe nobody
// reads, so the pipeline stops taking bodies; requests get 503 with
// Retry-After within ack_timeout instead of piling up. Once the pipe is
// read again, the retried bodies are acknowledged and nothing
// acknowledged is missing.
func TestHTTPBusyPipelineAnswers503(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	p, pr := startPiped(t, dir, addr, "300ms", "--shutdown-timeout", "20s")
	load := startHTTPLoad(t, "http://"+addr+"/", 4, 30, 200) // 4 x 30 bodies of 30 KiB: far more than a pipe holds
	p.eventually("a 503 with Retry-After", func() bool {
		load.mu.Lock()
		defer load.mu.Unlock()
		return load.codes[503] > 0
	})
	if n := load.acked.Load(); n == 4*30 {
		t.Fatalf("every body acknowledged while the output was blocked")
	}
	// Read the pipe from now on: the clients' retries get through.
	var outBuf bytes.Buffer
	copied := make(chan error, 1)
	go func() { _, err := io.Copy(&outBuf, pr); copied <- err }()
	p.eventually("every body acknowledged", func() bool { return load.acked.Load() == 4*30 })
	load.halt()
	p.expectExit(p.stop(), 0, "SIGTERM")
	if err := <-copied; err != nil && !errors.Is(err, os.ErrClosed) {
		t.Fatal(err)
	}
	load.check(keysOf(t, "stdout", splitLines(t, "stdout", outBuf.Bytes())))
}

// TestHTTPGracefulStop: SIGTERM while clients send: no request hangs,
// etld exits 0,
// and every acknowledged record is in the output.
func TestHTTPGracefulStop(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, "http.yaml", `version: 1
sources:
  web: {type: http_server, address: "`+addr+`"}
sinks:
  out: {type: file, inputs: [web], path: out.jsonl}
`)
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.waitListening(addr)
	load := startHTTPLoad(t, "http://"+addr+"/", 8, 1000, 20)
	p.eventually("40 bodies acknowledged", func() bool { return load.acked.Load() >= 40 })
	p.signal(syscall.SIGTERM)
	p.expectExit(p.wait(), 0, "SIGTERM under load")
	load.halt() // returns: no request hangs (the client timeout is the hang guard)
	load.check(outputKeys(t, filepath.Join(dir, "out.jsonl")))
	load.mu.Lock()
	defer load.mu.Unlock()
	// A request sent on a kept-alive connection just as the listener
	// closes can find the connection closed before the server read it
	// (EOF, counted as broken): nothing of it was taken, and the client
	// sends it again like any unanswered body. Anything else is a 200 or
	// a 503.
	for code, n := range load.codes {
		if code != 200 && code != 503 && code != refused && code != broken {
			t.Errorf("%d answers %d during the stop", n, code)
		}
	}
}

// TestHTTPReloadMovesListener: a reload that changes the address swaps
// the listener without losing acknowledged records; a reload to a busy
// port fails naming the pipeline and the stage, and the old address
// keeps serving; a busy port at start is exit 1 with the same names.
func TestHTTPReloadMovesListener(t *testing.T) {
	dir := t.TempDir()
	a, b := freeAddr(t), freeAddr(t)
	conf := func(addr string) string {
		return `version: 1
sources:
  web: {type: http_server, address: "` + addr + `"}
sinks:
  out: {type: file, inputs: [web], path: out.jsonl}
`
	}
	cfg := writeConfig(t, dir, "ingest.yaml", conf(a))
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.waitListening(a)
	cl := httpClient(t)
	var want []string
	send := func(addr, name string) {
		t.Helper()
		body, keys := feed(name, 0, 10)
		r, err := post(cl, "http://"+addr+"/", "text/plain", body)
		if err != nil || r.code != 200 {
			t.Fatalf("POST to %s: %v %d %s", addr, err, r.code, r.body)
		}
		want = append(want, keys...)
	}
	send(a, "before")
	writeConfig(t, dir, "ingest.yaml", conf(b))
	p.waitListening(b)
	p.eventually("the old address closed", func() bool {
		c, err := net.Dial("tcp", a)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	send(b, "after")

	busy, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	writeConfig(t, dir, "ingest.yaml", conf(a))
	p.eventually("the failed reload logged with pipeline and stage", func() bool {
		s := p.stderr.String()
		return strings.Contains(s, `pipeline \"ingest\": stage \"web\": open: http_server: listen tcp `+a) && strings.Contains(s, "address already in use")
	})
	p.waitListening(b)
	send(b, "kept")
	p.expectExit(p.stop(), 0, "SIGTERM")
	checkExactlyOnce(t, "output", want, outputKeys(t, filepath.Join(dir, "out.jsonl")))

	// At start: exit 1, naming them too.
	q := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state2"))...)
	q.expectExit(q.wait(), 1, "start on a busy port")
	if s := q.stderr.String(); !strings.Contains(s, "ingest") || !strings.Contains(s, "web") || !strings.Contains(s, a) {
		t.Errorf("start on a busy port: log does not name the pipeline, stage and address:\n%s", tail(s, 2000))
	}
}

// TestHTTPReloadUnderLoad: a reload that replaces the source (same
// address, another ack_timeout) while clients send: the old listener
// closes and the new one opens on the same port; bodies the old source
// had handed on are answered 200 from the reload's checkpoint, the rest
// 503 or refused and sent again. Nothing acknowledged is lost.
func TestHTTPReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	conf := func(timeout string) string {
		return `version: 1
sources:
  web: {type: http_server, address: "` + addr + `", ack_timeout: ` + timeout + `}
sinks:
  out: {type: file, inputs: [web], path: out.jsonl}
`
	}
	cfg := writeConfig(t, dir, "ingest.yaml", conf("30s"))
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.waitListening(addr)
	load := startHTTPLoad(t, "http://"+addr+"/", 4, 60, 50)
	for i, timeout := range []string{"20s", "10s"} {
		at := int64(40 + 60*i)
		p.eventually(fmt.Sprintf("%d bodies acknowledged", at), func() bool { return load.acked.Load() >= at })
		writeConfig(t, dir, "ingest.yaml", conf(timeout))
		p.eventually("reload "+timeout, func() bool {
			return strings.Count(p.stderr.String(), `"message":"pipeline reconfigured in place"`) == i+1
		})
	}
	p.eventually("every body acknowledged", func() bool { return load.acked.Load() == 4*60 })
	load.halt()
	p.expectExit(p.stop(), 0, "SIGTERM")
	load.check(outputKeys(t, filepath.Join(dir, "out.jsonl")))
}

// TestHTTPReloadTLS: HTTPS with a certificate; a reload to another
// certificate swaps the listener on the same address: clients that trust
// the new one get through, those trusting only the old one no longer do.
func TestHTTPReloadTLS(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	certA, keyA, _ := tlsconftest.WriteNamedPair(t, t.TempDir(), "first")
	certB, keyB, _ := tlsconftest.WriteNamedPair(t, t.TempDir(), "second")
	conf := func(cert, key string) string {
		return `version: 1
sources:
  web: {type: http_server, address: "` + addr + `", tls: {cert: "` + cert + `", key: "` + key + `"}}
sinks:
  out: {type: file, inputs: [web], path: out.jsonl}
`
	}
	cfg := writeConfig(t, dir, "tls.yaml", conf(certA, keyA))
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.waitListening(addr)
	trusting := func(cert string) *http.Client {
		pem, err := os.ReadFile(cert)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: waitTimeout}
	}
	clA, clB := trusting(certA), trusting(certB)
	url := "https://" + addr + "/"
	var want []string
	body, keys := feed("tls-a", 0, 5)
	if r, err := post(clA, url, "text/plain", body); err != nil || r.code != 200 {
		t.Fatalf("HTTPS with the first certificate: %v %d %s", err, r.code, r.body)
	}
	want = append(want, keys...)
	if _, err := post(clB, url, "text/plain", body); err == nil {
		t.Errorf("a client trusting only the second certificate got through before the reload")
	}
	writeConfig(t, dir, "tls.yaml", conf(certB, keyB))
	body, keys = feed("tls-b", 0, 5)
	p.eventually("the second certificate served", func() bool {
		clB.CloseIdleConnections()
		r, err := post(clB, url, "text/plain", body)
		return err == nil && r.code == 200
	})
	want = append(want, keys...)
	clA.CloseIdleConnections()
	if _, err := post(clA, url, "text/plain", body); err == nil {
		t.Errorf("a client trusting only the first certificate got through after the reload")
	}
	p.expectExit(p.stop(), 0, "SIGTERM")
	checkExactlyOnce(t, "output", want, outputKeys(t, filepath.Join(dir, "out.jsonl")))
}
