package nats

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/etld/etld/internal/natstest"
)

// lagProxy forwards TCP connections to a server. Once lag is set, what
// the server sends reaches the client lag after the proxy read it: a
// server that answers, but far behind.
type lagProxy struct {
	ln     net.Listener
	target string
	lag    atomic.Int64 // time.Duration

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startLagProxy(t *testing.T, target string) *lagProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lagProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *lagProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *lagProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(s, c)
			s.Close()
			c.Close()
		}()
		go func() {
			defer p.wg.Done()
			p.lagged(c, s)
			c.Close()
			s.Close()
		}()
	}
}

// lagged copies src to dst, each chunk lag after it was read, in order.
func (p *lagProxy) lagged(dst, src net.Conn) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range ch {
			time.Sleep(time.Until(c.at)) // the lag injected, not a synchronisation
			if _, err := dst.Write(c.b); err != nil {
				for range ch {
				}
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			ch <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(time.Duration(p.lag.Load()))}
		}
		if err != nil {
			break
		}
	}
	close(ch)
	<-done
}

func (p *lagProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestSinkSlowAcks: a server whose every ack comes later than timeout
// (behind, not down) gets every record, and Flush ends up succeeding: the
// sink waits longer for the acks of the publishes in flight instead of
// publishing them all again behind them at every attempt, which never
// catches up.
func TestSinkSlowAcks(t *testing.T) {
	srv := natstest.Start(t)
	if srv.External() {
		t.Skip("needs the in-process server's address behind a proxy")
	}
	stream := srv.Stream(t, "slow")
	px := startLagProxy(t, strings.TrimPrefix(srv.URL, "nats://"))
	cfg := NewSinkConfig()
	cfg.URL, cfg.Subject, cfg.Timeout = px.url(), stream+".out", 200*time.Millisecond
	ctx := context.Background()
	s := newSink(settings(t, "out"), cfg)
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	px.lag.Store(int64(5 * cfg.Timeout)) // every ack 5 timeouts late, at least
	if err := s.Write(ctx, sinkBatch(0, 500)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(hang)
	for attempt := 1; ; attempt++ {
		err := s.Flush(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Flush still fails after %v (%d attempts) with every ack %v late: %v", hang, attempt, 5*cfg.Timeout, err)
		}
	}
	px.lag.Store(0)
	if got := srv.Messages(t, stream); len(got) != 500 || got[499] != `{"n":499}` {
		t.Fatalf("the stream holds %d messages, want the 500 written once each", len(got))
	}
	if n := testutil.ToFloat64(s.published); n < 500 {
		t.Errorf("etld_nats_published_total = %v, want at least 500", n)
	}
}
