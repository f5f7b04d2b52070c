package httpsrc

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/tlsconf"
)

// Source is the `http_server` source.
//
//	client ─POST─▶ handler: read, parse ─(in, unbuffered)─▶ Read ─▶ pipeline
//	   ▲                                                     │ seq of the last whole body returned = State
//	   └──── 200 once done is closed ◀── Committed(state) ◀──┘ (ack: checkpoint; ack: received closes done in Read)
//
// Each request is parsed by its own handler goroutine, then handed to
// Read through an unbuffered channel: nothing queues beyond the
// handlers that wait (at most max_connections bodies), and a handler
// that cannot hand its body over within ack_timeout answers 503. Read
// returns the records of one or more bodies per batch (a large body
// spans several batches) and numbers each body once all of its records
// were returned. The state is that number: Committed(state) acknowledges
// every body up to it, whose handlers then answer 200.
//
// Read, State, Restore and Committed run on the source's goroutine;
// handlers only touch the channels and the body they own until they
// hand it over.
type Source struct {
	cfg Config
	set stages.Settings
	log zerolog.Logger

	in      chan *body
	closing chan struct{} // closed by Close: waiting handlers answer 503
	once    sync.Once
	closed  atomic.Bool

	srv    *http.Server
	served chan struct{} // closed when Serve returned
	addr   atomic.Pointer[net.Addr]
	tls    *tlsconf.Server
	broken atomic.Pointer[error] // the listener failed

	// The source's goroutine only.
	cur *body  // the body whose records Read is returning
	seq uint64 // number of the last body whose records were all returned

	mu      sync.Mutex
	waiting []*body // returned, not acknowledged yet (ack: checkpoint), by seq

	m metrics
}

type metrics struct {
	conns                                 prometheus.Gauge
	bytes, requests, acked, refused, busy prometheus.Counter
}

// New returns the source for c (no I/O: Open listens).
func New(s stages.Settings, c *Config) *Source {
	return &Source{
		cfg: *c, set: s, log: s.Logger,
		in: make(chan *body), closing: make(chan struct{}), served: make(chan struct{}),
		m: metrics{
			conns:    s.Gauge("etld_http_connections", "Client connections open now."),
			bytes:    s.Counter("etld_http_received_bytes_total", "Bytes of request bodies read."),
			requests: s.Counter("etld_http_requests_total", "Requests received."),
			acked:    s.Counter("etld_http_requests_acknowledged_total", "Requests answered 200: their records are acknowledged (durable with ack: checkpoint)."),
			refused:  s.Counter("etld_http_requests_refused_total", "Requests answered 4xx (auth, method, size, type, malformed JSON): nothing of them was written."),
			busy:     s.Counter("etld_http_requests_unavailable_total", "Requests answered 503: not acknowledged within ack_timeout, or the source was stopping; clients should retry."),
		},
	}
}

var (
	_ stages.Source         = (*Source)(nil)
	_ stages.Stateful       = (*Source)(nil)
	_ stages.Committer      = (*Source)(nil)
	_ stages.HealthReporter = (*Source)(nil)
)

// Open listens on the address and starts serving. A busy port is an
// error naming the address.
func (s *Source) Open(ctx context.Context) error {
	if s.closed.Load() {
		return errors.New("http_server: open after close")
	}
	ts, err := tlsconf.NewServer(&s.cfg.TLS)
	if err != nil {
		return fmt.Errorf("http_server: %w", err)
	}
	s.tls = ts
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("http_server: %w", err)
	}
	addr := ln.Addr()
	s.addr.Store(&addr)
	ln = newLimitListener(ln, s.cfg.MaxConnections, s.m.conns)
	if ts != nil {
		ln = tls.NewListener(ln, ts.Config())
	}
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(debugWriter{s.log}, "", 0),
	}
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			err = fmt.Errorf("listener on %s failed: %w", addr, err)
			s.broken.Store(&err)
			s.log.Error().Err(err).Msg("http_server stopped taking requests")
		}
	}()
	s.log.Info().Str("address", addr.String()).Str("path", s.cfg.Path).Bool("tls", ts != nil).Str("ack", s.cfg.Ack).Msg("http_server listening")
	return nil
}

// Addr is the address the source listens on (the port chosen when the
// address says :0), or nil before Open.
func (s *Source) Addr() net.Addr {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return nil
}

// Health implements stages.HealthReporter.
func (s *Source) Health() error {
	if err := s.broken.Load(); err != nil {
		return *err
	}
	if s.tls != nil {
		return s.tls.Err()
	}
	return nil
}

// Read returns the records of the next bodies, waiting for one.
func (s *Source) Read(ctx context.Context) (*stages.Batch, error) {
	if s.closed.Load() {
		return nil, errors.New("http_server: read after close")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.cur == nil {
		select {
		case s.cur = <-s.in:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	batch := &stages.Batch{Records: stages.NewRecords(min(len(s.cur.recs)-s.cur.next, maxBatchRecords))}
	size := 0
	var finished []*body
	for s.cur != nil {
		b := s.cur
		if b.next == 0 {
			batch.Rejects = append(batch.Rejects, b.rejects...)
		}
		for b.next < len(b.recs) && len(batch.Records) < maxBatchRecords && size < maxBatchBytes {
			batch.Records = append(batch.Records, b.recs[b.next])
			size += len(b.recs[b.next].Raw)
			b.next++
		}
		if b.next < len(b.recs) {
			b.split = true // the rest goes into the next batches
			break
		}
		if !b.split && b.buf != nil {
			batch.Own(b.buf) // every record of b is in this batch
		}
		b.recs, b.rejects, b.buf = nil, nil, nil // the batch has them now
		finished = append(finished, b)
		s.cur = nil
		if len(batch.Records) >= maxBatchRecords || size >= maxBatchBytes {
			break
		}
		select { // more bodies queued: fill the batch
		case s.cur = <-s.in:
		default:
		}
	}
	for _, b := range finished {
		s.seq++
		b.seq = s.seq
	}
	if len(finished) > 0 {
		if s.cfg.Ack == AckReceived {
			for _, b := range finished {
				close(b.done)
			}
		} else {
			s.mu.Lock()
			s.waiting = append(s.waiting, finished...)
			s.mu.Unlock()
			if s.set.RequestCheckpoint != nil {
				s.set.RequestCheckpoint() // somebody waits for it
			}
		}
	}
	return batch, nil
}

// State implements stages.Stateful: the number of the last body whose
// records were all returned by Read.
func (s *Source) State() ([]byte, error) { return strconv.AppendUint(nil, s.seq, 10), nil }

// Restore implements stages.Stateful. Nothing is replayed (the clients
// send again what was not acknowledged); body numbers go on from the
// restored one.
func (s *Source) Restore(state []byte) error {
	n, err := strconv.ParseUint(string(state), 10, 64)
	if err != nil {
		return fmt.Errorf("http_server: bad state %q: %w", state, err)
	}
	s.seq = n
	return nil
}

// Committed implements stages.Committer: every body up to the number in
// state is durable, its handler answers 200.
func (s *Source) Committed(_ context.Context, state []byte) error {
	n, err := strconv.ParseUint(string(state), 10, 64)
	if err != nil {
		return fmt.Errorf("http_server: bad committed state %q: %w", state, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := 0
	for ; i < len(s.waiting) && s.waiting[i].seq <= n; i++ {
		close(s.waiting[i].done)
	}
	s.waiting = slices.Delete(s.waiting, 0, i)
	return nil
}

// Close stops the listener. Handlers still waiting (for the hand-off or
// for a commit) answer 503: the client sends the body again. Idempotent.
func (s *Source) Close() error {
	s.once.Do(func() {
		s.closed.Store(true)
		close(s.closing)
		if s.srv == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			_ = s.srv.Close() // a client that does not read its answer
		}
		<-s.served
	})
	return nil
}

// ServeHTTP answers one request.
func (s *Source) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.m.requests.Inc()
	if r.URL.Path != s.cfg.Path {
		s.refuse(w, http.StatusNotFound, "no such path: records go to "+s.cfg.Path)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.refuse(w, http.StatusMethodNotAllowed, "use POST")
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="etld"`)
		s.refuse(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	isJSON, ok := contentKind(r.Header.Get("Content-Type"))
	if !ok {
		s.refuse(w, http.StatusUnsupportedMediaType, "Content-Type must be text/plain, application/x-ndjson or application/json")
		return
	}
	max := int64(s.cfg.MaxBodyBytes)
	if r.ContentLength > max {
		s.refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over max_body_bytes (%d)", max))
		return
	}
	data, err := readBody(http.MaxBytesReader(w, r.Body, max), r.ContentLength)
	s.m.bytes.Add(float64(len(data)))
	if err != nil {
		if _, over := errors.AsType[*http.MaxBytesError](err); over {
			s.refuse(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over max_body_bytes (%d)", max))
		} else {
			s.refuse(w, http.StatusBadRequest, "reading the body: "+err.Error())
		}
		return
	}
	b := &body{done: make(chan struct{})}
	o := &stages.Origin{Source: s.set.ID, Path: "http:" + r.RemoteAddr}
	if isJSON {
		if err := parseJSON(b, data, o); err != nil {
			s.refuse(w, http.StatusBadRequest, err.Error()+"; nothing of the body was written")
			return
		}
	} else {
		parseLines(b, data, o, int(s.cfg.MaxLineBytes))
	}
	b.accepted, b.rejected = len(b.recs), len(b.rejects)
	if b.accepted == 0 && b.rejected == 0 {
		s.answer(w, b)
		return
	}
	s.deliver(w, r, b)
}

// deliver hands b to Read and answers once it is acknowledged, or 503.
func (s *Source) deliver(w http.ResponseWriter, r *http.Request, b *body) {
	timeout := time.NewTimer(s.cfg.AckTimeout)
	defer timeout.Stop()
	select {
	case s.in <- b:
	case <-timeout.C:
		s.unavailable(w, "the pipeline did not take the body within ack_timeout ("+s.cfg.AckTimeout.String()+"); nothing of it was written")
		return
	case <-s.closing:
		s.unavailable(w, "the source is stopping; nothing of the body was written")
		return
	case <-r.Context().Done():
		return // the client left: nothing taken
	}
	select {
	case <-b.done:
	case <-timeout.C:
	case <-s.closing:
	case <-r.Context().Done():
	}
	select {
	case <-b.done:
		s.answer(w, b)
	default:
		s.unavailable(w, "the records were not acknowledged within ack_timeout ("+s.cfg.AckTimeout.String()+") or the source stopped; some may be written: send the body again")
	}
}

// authorized reports whether r carries the configured bearer token (or
// none is configured), comparing in constant time.
func (s *Source) authorized(r *http.Request) bool {
	want := s.cfg.Auth.BearerToken
	if want == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (s *Source) answer(w http.ResponseWriter, b *body) {
	s.m.acked.Inc()
	writeJSON(w, http.StatusOK, map[string]int{"accepted": b.accepted, "rejected": b.rejected})
}

func (s *Source) refuse(w http.ResponseWriter, code int, msg string) {
	s.m.refused.Inc()
	s.log.Debug().Int("status", code).Str("error", msg).Msg("http_server request refused")
	writeJSON(w, code, map[string]string{"error": msg})
}

func (s *Source) unavailable(w http.ResponseWriter, msg string) {
	s.m.busy.Inc()
	select {
	case <-s.closing: // the client reconnects, to this etld's successor
		w.Header().Set("Connection", "close")
	default:
	}
	w.Header().Set("Retry-After", strconv.Itoa(defaultRetryAfter))
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// contentKind tells a JSON body from a body of lines; ok is false for a
// type that is neither. A missing type is lines.
func contentKind(ct string) (isJSON, ok bool) {
	if ct == "" {
		return false, true
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false, false
	}
	switch mt {
	case "application/json":
		return true, true
	case "text/plain", "application/x-ndjson", "application/jsonl", "application/jsonlines":
		return false, true
	}
	return false, false
}

// readBody reads a request body into a buffer from stages.NewBuffer,
// sized by its length when known, but growing with what arrives beyond
// 256 KiB: a Content-Length alone does not reserve memory.
func readBody(r io.Reader, length int64) ([]byte, error) {
	size := 64 << 10
	if length >= 0 {
		size = int(min(length+1, 256<<10)) // +1: the read that sees the end needs room
	}
	buf := stages.NewBuffer(size)
	for {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, cap(buf))
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// debugWriter sends net/http's own messages (TLS handshake errors, ...)
// to the stage's log at debug level.
type debugWriter struct{ log zerolog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}

// limitListener accepts at most n connections at once and counts them.
type limitListener struct {
	net.Listener
	sem   chan struct{}
	conns prometheus.Gauge
	done  chan struct{}
	once  sync.Once
}

func newLimitListener(l net.Listener, n int, conns prometheus.Gauge) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n), conns: conns, done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	l.conns.Inc()
	return &limitConn{Conn: c, l: l}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.conns.Dec()
		<-c.l.sem
	})
	return err
}
