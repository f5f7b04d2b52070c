package httpsrc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/tlsconf/tlsconftest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hang bounds every wait for something that must happen; it is a guard
// against hangs, not a performance assertion.
const hang = 20 * time.Second

type fixture struct {
	t   *testing.T
	src *Source
	url string
	cl  *http.Client
}

func open(t *testing.T, edit func(*Config)) *fixture {
	t.Helper()
	c := NewConfig()
	c.Address = "127.0.0.1:0"
	if edit != nil {
		edit(c)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	var checkpoints int
	set := stages.Settings{Pipeline: "p", ID: "web", Logger: zerolog.New(zerolog.NewTestWriter(t)),
		RequestCheckpoint: func() { checkpoints++ }}
	src := New(set, c)
	if err := src.Open(context.Background()); err != nil {
		t.Fatalf("Open: %v", err)
	}
	tr := &http.Transport{}
	scheme := "http"
	if c.TLS.On() {
		scheme = "https"
		certPEM, _ := os.ReadFile(c.TLS.Cert)
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(certPEM)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	f := &fixture{t: t, src: src, url: scheme + "://" + src.Addr().String() + c.Path, cl: &http.Client{Transport: tr, Timeout: hang}}
	t.Cleanup(func() {
		if err := src.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		tr.CloseIdleConnections()
	})
	return f
}

type reply struct {
	code  int
	body  string
	retry string
	err   error
}

// post sends a request in the background; the reply comes on the channel.
func (f *fixture) post(method, ctype, body string, hdr ...string) <-chan reply {
	ch := make(chan reply, 1)
	req, err := http.NewRequest(method, f.url, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	go func() {
		resp, err := f.cl.Do(req)
		if err != nil {
			ch <- reply{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		ch <- reply{code: resp.StatusCode, body: strings.TrimSpace(string(b)), retry: resp.Header.Get("Retry-After")}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan reply) reply {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("request: %v", r.err)
		}
		return r
	case <-time.After(hang):
		t.Fatal("no answer")
	}
	return reply{}
}

// notYet fails when the request was already answered.
func notYet(t *testing.T, ch <-chan reply, why string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("answered %d %s %s", r.code, r.body, why)
	default:
	}
}

func (f *fixture) read() *stages.Batch {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	b, err := f.src.Read(ctx)
	if err != nil {
		f.t.Fatalf("Read: %v", err)
	}
	return b
}

func (f *fixture) commitState() {
	f.t.Helper()
	st, err := f.src.State()
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.src.Committed(context.Background(), st); err != nil {
		f.t.Fatal(err)
	}
}

func raws(b *stages.Batch) []string {
	var out []string
	for _, r := range b.Records {
		out = append(out, string(r.Raw))
	}
	return out
}

func TestAckCheckpointAnswersOnceCommitted(t *testing.T) {
	f := open(t, func(c *Config) { c.MaxLineBytes = 8 })
	before, _ := f.src.State()
	ch := f.post("POST", "text/plain", "a\nbb\nthis line is too long\n\nc")
	b := f.read()
	if got := strings.Join(raws(b), "|"); got != "a|bb||c" {
		t.Errorf("records %q", got)
	}
	if len(b.Rejects) != 1 || b.Rejects[0].Length != 21 || string(b.Rejects[0].Record.Raw) != "this lin" {
		t.Errorf("rejects %+v", b.Rejects)
	}
	if o := b.Records[1].OriginString(); !strings.HasPrefix(o, "http:127.0.0.1:") || !strings.HasSuffix(o, ":2") {
		t.Errorf("origin %q", o)
	}
	// An older checkpoint does not cover the body.
	if err := f.src.Committed(context.Background(), before); err != nil {
		t.Fatal(err)
	}
	notYet(t, ch, "before the checkpoint covering the body was committed")
	f.commitState()
	if r := wait(t, ch); r.code != 200 || r.body != `{"accepted":4,"rejected":1}` {
		t.Errorf("answer %d %s", r.code, r.body)
	}
}

func TestAckReceivedAnswersOnceRead(t *testing.T) {
	f := open(t, func(c *Config) { c.Ack = AckReceived })
	ch := f.post("POST", "application/x-ndjson", `{"a":1}`+"\n"+`{"a":2}`+"\n")
	if got := raws(f.read()); len(got) != 2 {
		t.Errorf("records %q", got)
	}
	if r := wait(t, ch); r.code != 200 || r.body != `{"accepted":2,"rejected":0}` {
		t.Errorf("answer %d %s", r.code, r.body)
	}
}

func TestJSONBodies(t *testing.T) {
	f := open(t, func(c *Config) { c.Ack = AckReceived })
	ch := f.post("POST", "application/json; charset=utf-8", "[\n  {\"a\": 1,\n   \"s\": \"x y\\n\"},\n  7,\n  {\"b\": [1, 2]}\n]\n")
	b := f.read()
	if got := strings.Join(raws(b), "|"); got != `{"a":1,"s":"x y\n"}|{"b":[1,2]}` {
		t.Errorf("records %s", got)
	}
	for _, r := range b.Records {
		if !r.Parsed {
			t.Errorf("record %s not parsed", r.Raw)
		}
	}
	if len(b.Rejects) != 1 || string(b.Rejects[0].Record.Raw) != "7" || !strings.Contains(b.Rejects[0].Err.Error(), "want an object, got a number") {
		t.Errorf("rejects %+v", b.Rejects)
	}
	if r := wait(t, ch); r.code != 200 || r.body != `{"accepted":2,"rejected":1}` {
		t.Errorf("answer %d %s", r.code, r.body)
	}

	ch = f.post("POST", "application/json", `{"one": "object"}`)
	if got := raws(f.read()); len(got) != 1 || got[0] != `{"one":"object"}` {
		t.Errorf("records %q", got)
	}
	wait(t, ch)
}

func TestRefusedRequestsWriteNothing(t *testing.T) {
	f := open(t, func(c *Config) {
		c.Path = "/in"
		c.MaxBodyBytes = 64
		c.Auth.BearerToken = "s3cret"
	})
	auth := []string{"Authorization", "Bearer s3cret"}
	cases := []struct {
		name, method, ctype, body string
		hdr                       []string
		code                      int
		want                      string
	}{
		{"no token", "POST", "text/plain", "x\n", nil, 401, "bearer token"},
		{"wrong token", "POST", "text/plain", "x\n", []string{"Authorization", "Bearer s3crex"}, 401, "bearer token"},
		{"method", "GET", "", "", auth, 405, "use POST"},
		{"too big", "POST", "text/plain", strings.Repeat("x", 65), auth, 413, "max_body_bytes"},
		{"malformed JSON", "POST", "application/json", `[{"a":1},{"b":]`, auth, 400, "invalid JSON"},
		{"bad UTF-8 in JSON", "POST", "application/json", "{\"a\":\"\xff\"}", auth, 400, "UTF-8"},
		{"type", "POST", "application/x-www-form-urlencoded", "a=b", auth, 415, "Content-Type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := wait(t, f.post(c.method, c.ctype, c.body, c.hdr...))
			if r.code != c.code || !strings.Contains(r.body, c.want) {
				t.Errorf("answer %d %s, want %d with %q", r.code, r.body, c.code, c.want)
			}
		})
	}
	// Over the limit without a Content-Length (chunked): 413 too.
	req, _ := http.NewRequest("POST", f.url, io.MultiReader(strings.NewReader(strings.Repeat("y\n", 40))))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := f.cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked body over the limit: %d", resp.StatusCode)
	}
	// Another path: 404.
	other := *f
	other.url = strings.TrimSuffix(f.url, "/in") + "/other"
	if r := wait(t, other.post("POST", "text/plain", "x", auth...)); r.code != 404 {
		t.Errorf("other path: %d", r.code)
	}
	// Nothing of the refused bodies reached Read: the next body is first.
	ch := f.post("POST", "text/plain", "ok\n", auth...)
	if got := raws(f.read()); len(got) != 1 || got[0] != "ok" {
		t.Errorf("records after refused requests: %q", got)
	}
	f.commitState()
	if r := wait(t, ch); r.code != 200 {
		t.Errorf("with the token: %d %s", r.code, r.body)
	}
	// An empty body is acknowledged at once.
	if r := wait(t, f.post("POST", "text/plain", "", auth...)); r.code != 200 || r.body != `{"accepted":0,"rejected":0}` {
		t.Errorf("empty body: %d %s", r.code, r.body)
	}
}

func TestBusyPipelineAnswers503(t *testing.T) {
	f := open(t, func(c *Config) { c.AckTimeout = 50 * time.Millisecond })
	// Nobody reads: the body cannot be handed over.
	r := wait(t, f.post("POST", "text/plain", "x\n"))
	if r.code != 503 || r.retry == "" || !strings.Contains(r.body, "did not take the body") {
		t.Errorf("answer %d %q %s", r.code, r.retry, r.body)
	}
	// Read, but no checkpoint comes.
	ch := f.post("POST", "text/plain", "y\n")
	f.read()
	if r := wait(t, ch); r.code != 503 || r.retry == "" || !strings.Contains(r.body, "not acknowledged") {
		t.Errorf("answer %d %q %s", r.code, r.retry, r.body)
	}
}

func TestCloseAnswersWaitingRequests(t *testing.T) {
	f := open(t, nil)
	returned := f.post("POST", "text/plain", "a\n")
	f.read()
	queued := f.post("POST", "text/plain", "b\n")
	// The second request is being served (then waits for the hand-off)
	// once the request counter shows both.
	deadline := time.Now().Add(hang)
	for metricValue(f.src.m.requests) < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := f.src.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []<-chan reply{returned, queued} {
		if r := wait(t, ch); r.code != 503 || r.retry == "" {
			t.Errorf("answer %d %s, want 503", r.code, r.body)
		}
	}
	if _, err := f.src.Read(context.Background()); err == nil {
		t.Error("Read after Close succeeded")
	}
}

func TestLargeBodySpansBatches(t *testing.T) {
	f := open(t, nil)
	var sb strings.Builder
	for i := range 2500 {
		fmt.Fprintf(&sb, "line %d\n", i)
	}
	ch := f.post("POST", "text/plain", sb.String())
	start, _ := f.src.State()
	var got []string
	for len(got) < 2500 {
		b := f.read()
		got = append(got, raws(b)...)
		if st, _ := f.src.State(); len(got) < 2500 && string(st) != string(start) {
			t.Fatalf("state moved to %s with %d of 2500 records returned", st, len(got))
		}
	}
	if got[0] != "line 0" || got[2499] != "line 2499" {
		t.Errorf("records %q ... %q", got[0], got[2499])
	}
	f.commitState()
	if r := wait(t, ch); r.body != `{"accepted":2500,"rejected":0}` {
		t.Errorf("answer %d %s", r.code, r.body)
	}
}

func TestSmallBodiesShareABatch(t *testing.T) {
	f := open(t, nil)
	var chans []<-chan reply
	for i := range 3 {
		chans = append(chans, f.post("POST", "text/plain", fmt.Sprintf("r%d\n", i)))
	}
	var got []string
	for len(got) < 3 {
		got = append(got, raws(f.read())...)
	}
	f.commitState()
	for _, ch := range chans {
		if r := wait(t, ch); r.code != 200 {
			t.Errorf("answer %d %s", r.code, r.body)
		}
	}
}

func TestRestoreContinuesNumbering(t *testing.T) {
	f := open(t, nil)
	if err := f.src.Restore([]byte("41")); err != nil {
		t.Fatal(err)
	}
	ch := f.post("POST", "text/plain", "x\n")
	f.read()
	if st, _ := f.src.State(); string(st) != "42" {
		t.Errorf("state %s, want 42", st)
	}
	if err := f.src.Committed(context.Background(), []byte("42")); err != nil {
		t.Fatal(err)
	}
	if r := wait(t, ch); r.code != 200 {
		t.Errorf("answer %d", r.code)
	}
	if err := f.src.Restore([]byte("x")); err == nil {
		t.Error("Restore of a bad state succeeded")
	}
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := NewConfig()
	c.Address = ln.Addr().String()
	src := New(stages.Settings{ID: "web"}, c)
	defer src.Close()
	err = src.Open(context.Background())
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Open on a busy port: %v", err)
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key, _ := tlsconftest.WriteNamedPair(t, dir, "etld test")
	f := open(t, func(c *Config) {
		c.TLS.Cert, c.TLS.Key = cert, key
		c.Ack = AckReceived
	})
	ch := f.post("POST", "text/plain", "secret\n")
	if got := raws(f.read()); len(got) != 1 || got[0] != "secret" {
		t.Errorf("records %q", got)
	}
	if r := wait(t, ch); r.code != 200 {
		t.Errorf("answer %d", r.code)
	}
	// Plain HTTP to the TLS listener gets nothing through.
	plain := *f
	plain.url = strings.Replace(f.url, "https://", "http://", 1)
	if r := <-plain.post("POST", "text/plain", "x\n"); r.err == nil && r.code == 200 {
		t.Errorf("plain HTTP accepted")
	}
	if err := f.src.Health(); err != nil {
		t.Errorf("Health: %v", err)
	}
}

func TestMaxConnections(t *testing.T) {
	f := open(t, func(c *Config) { c.MaxConnections = 1; c.Ack = AckReceived })
	hold, err := net.Dial("tcp", f.src.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(hang)
	for gaugeValue(f.src.m.conns) < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ch := f.post("POST", "text/plain", "x\n")
	// The request cannot be served while the first connection is open:
	// a Read now would block, so read only after releasing it.
	notYet(t, ch, "while max_connections connections were open")
	if g := gaugeValue(f.src.m.conns); g != 1 {
		t.Errorf("connections %v, want 1", g)
	}
	hold.Close()
	f.read()
	if r := wait(t, ch); r.code != 200 {
		t.Errorf("answer %d", r.code)
	}
}

func TestValidate(t *testing.T) {
	c := NewConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if c.Address != "127.0.0.1:8080" {
		t.Errorf("default address %q: listeners bind loopback by default", c.Address)
	}
	c.Address, c.Path, c.Ack, c.AckTimeout = "8080", "in", "never", 0
	c.MaxBodyBytes, c.MaxLineBytes, c.MaxConnections = 0, 0, 0
	c.Auth.BearerToken = "a b"
	c.TLS.Cert = "x.pem"
	var fields []string
	for _, e := range err2list(c.Validate()) {
		if fe, ok := errors.AsType[*stages.FieldError](e); ok {
			fields = append(fields, fe.Field)
		}
	}
	want := "address,path,ack,ack_timeout,max_body_bytes,max_line_bytes,max_connections,auth.bearer_token,tls"
	if strings.Join(fields, ",") != want {
		t.Errorf("fields %v, want %s", fields, want)
	}
}

func err2list(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	_ = g.Write(&m)
	return m.GetGauge().GetValue()
}

func metricValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
