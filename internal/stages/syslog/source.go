package syslog

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/tlsconf"
)

// Batches: a receiving goroutine (one per connection, one for UDP) hands
// Read batches of up to batchRecords records; queued is how many may wait
// for Read, so that a slow pipeline stops reading from the sockets
// (TCP senders are held back; UDP datagrams are dropped by the kernel).
const (
	batchRecords = 1024
	queued       = 4
	// udpLinger is how long a UDP receiver keeps a partial batch while
	// Read is busy, to send fewer, fuller batches.
	udpLinger = 2 * time.Millisecond
)

var errClosed = errors.New("syslog source: read after close")

// source is the syslog source. Open binds the listener and starts the
// receiving goroutines; each frames messages, checks them, parses them
// (parse: true) and queues the batch for Read. Close stops and waits for
// them. It is not Stateful: syslog has no acknowledgement and nothing to
// resume, so what is queued or in flight when etld stops or crashes is
// lost.
type source struct {
	cfg    *Config
	id     string
	log    zerolog.Logger
	parser stages.Step // nil with parse: false
	tls    *tlsconf.Server

	out  chan *stages.Batch
	done chan struct{}
	wg   sync.WaitGroup
	// draining is closed by Drain: no new input; drained is closed once
	// every receiving goroutine has queued what it held.
	draining, drained chan struct{}
	drainOnce         sync.Once

	mu     sync.Mutex
	ln     net.Listener
	pc     *net.UDPConn
	conns  map[net.Conn]struct{}
	closed bool

	acceptErr atomic.Pointer[error]
	lastWarn  atomic.Int64 // unix nanos of the last refused-connection warning

	open           prometheus.Gauge
	connsTotal     prometheus.Counter
	refused        prometheus.Counter
	bytesIn        prometheus.Counter
	framesRejected prometheus.Counter
	closeOnce      sync.Once
}

func newSource(s stages.Settings, c *Config) (*source, error) {
	src := &source{
		cfg:      c,
		id:       s.ID,
		log:      s.Logger,
		out:      make(chan *stages.Batch, queued),
		done:     make(chan struct{}),
		draining: make(chan struct{}),
		drained:  make(chan struct{}),
		conns:    map[net.Conn]struct{}{},

		open:           s.Gauge("etld_syslog_connections", "Connections open now to a syslog source."),
		connsTotal:     s.Counter("etld_syslog_connections_total", "Connections accepted by a syslog source."),
		refused:        s.Counter("etld_syslog_connections_refused_total", "Connections a syslog source closed at once because max_connections were open."),
		bytesIn:        s.Counter("etld_syslog_received_bytes_total", "Bytes received by a syslog source (after TLS)."),
		framesRejected: s.Counter("etld_syslog_frames_rejected_total", "Messages a syslog source rejected before parsing: over max_message_bytes, invalid UTF-8, cut by a disconnect."),
	}
	if c.Parse {
		p, err := c.parser()
		if err != nil {
			return nil, fmt.Errorf("syslog source %q: %w", s.ID, err)
		}
		src.parser = p
	}
	return src, nil
}

// Health implements stages.HealthReporter: renewed TLS files that cannot
// be used, or a listener that fails to accept.
func (s *source) Health() error {
	if s.tls != nil {
		if err := s.tls.Err(); err != nil {
			return err
		}
	}
	if p := s.acceptErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Open binds the listener (a start error names the address) and starts
// receiving.
func (s *source) Open(ctx context.Context) error {
	s.mu.Lock()
	err := s.listen(ctx)
	s.mu.Unlock()
	if err == nil {
		s.logListening()
	}
	return err
}

// listen binds the socket and starts the receiving goroutines; s.mu is
// held.
func (s *source) listen(ctx context.Context) error {
	if s.closed {
		return errors.New("syslog source: open after close")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var lc net.ListenConfig
	switch s.cfg.Mode {
	case "udp":
		pc, err := lc.ListenPacket(ctx, "udp", s.cfg.Address)
		if err != nil {
			return fmt.Errorf("syslog source: %w", err)
		}
		s.pc = pc.(*net.UDPConn)
		_ = s.pc.SetReadBuffer(4 << 20) // ride out bursts while Read is busy; the kernel may cap it
		s.wg.Add(1)
		go s.receiveUDP()
		return nil
	case "unix":
		removeStaleSocket(s.cfg.Path)
		ln, err := lc.Listen(ctx, "unix", s.cfg.Path)
		if err != nil {
			return fmt.Errorf("syslog source: %w", err)
		}
		s.ln = ln
	default:
		ln, err := lc.Listen(ctx, "tcp", s.cfg.Address)
		if err != nil {
			return fmt.Errorf("syslog source: %w", err)
		}
		if s.cfg.TLS.On() {
			srv, err := tlsconf.NewServer(&s.cfg.TLS)
			if err != nil {
				_ = ln.Close()
				return fmt.Errorf("syslog source: %w", err)
			}
			s.tls = srv
			ln = tls.NewListener(ln, srv.Config())
		}
		s.ln = ln
	}
	s.wg.Add(1)
	go s.accept()
	return nil
}

func (s *source) logListening() {
	ev := s.log.Info().Str("mode", s.cfg.Mode).Bool("tls", s.tls != nil)
	if s.cfg.Mode == "unix" {
		ev = ev.Str("path", s.cfg.Path)
	} else {
		ev = ev.Str("address", s.addr())
	}
	ev.Msg("syslog source listening")
}

// addr is the address listened on (with the port the system chose for
// port 0).
func (s *source) addr() string {
	switch {
	case s.pc != nil:
		return s.pc.LocalAddr().String()
	case s.ln != nil:
		return s.ln.Addr().String()
	}
	return s.cfg.Address
}

// removeStaleSocket removes a socket file nobody listens on (left by a
// crash), so that Listen can create it again. Anything else at path is
// left for Listen to report.
func removeStaleSocket(path string) {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode()&os.ModeSocket == 0 {
		return
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		_ = c.Close()
		return
	}
	_ = os.Remove(path)
}

// Read returns the next batch received, waiting for one; ctx.Err() when
// ctx is done first (queued batches stay for the next Read). After Drain
// it returns what is queued, then stages.ErrEndOfInput.
func (s *source) Read(ctx context.Context) (*stages.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case b := <-s.out:
		return b, nil
	case <-s.done:
		return nil, errClosed
	case <-s.drained:
		select {
		case b := <-s.out:
			return b, nil
		default:
			return nil, stages.ErrEndOfInput
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Drain implements stages.Drainer: the listener closes, each connection
// stops reading (what the kernel buffered and etld did not read yet is
// not taken; a message cut in the middle is rejected, not lost silently)
// and queues what it framed; Read then returns the queue and ends. So a
// graceful stop or a reload that replaces the source loses nothing etld
// received.
func (s *source) Drain() {
	s.drainOnce.Do(func() {
		s.mu.Lock()
		close(s.draining)
		if s.ln != nil {
			_ = s.ln.Close()
		}
		if s.pc != nil {
			_ = s.pc.Close() // datagrams not read yet were never received
		}
		for c := range s.conns {
			_ = c.SetReadDeadline(time.Now())
		}
		s.mu.Unlock()
		go func() {
			s.wg.Wait()
			close(s.drained)
		}()
	})
}

// Close stops the listener and the connections, waits for the receiving
// goroutines and drops what they queued. Idempotent, safe without Open.
func (s *source) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.done)
		if s.ln != nil {
			_ = s.ln.Close()
		}
		if s.pc != nil {
			_ = s.pc.Close()
		}
		for c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		for {
			select {
			case b := <-s.out:
				b.Release()
			default:
				return
			}
		}
	})
	return nil
}

// accept serves the stream listener until Close.
func (s *source) accept() {
	defer s.wg.Done()
	delay := 5 * time.Millisecond
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.stopping() {
				return
			}
			err = fmt.Errorf("syslog source: accept: %w", err)
			s.acceptErr.Store(&err)
			s.log.Warn().Err(err).Dur("retry_in", delay).Msg("syslog listener cannot accept")
			select {
			case <-s.done:
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, time.Second)
			continue
		}
		s.acceptErr.Store(nil)
		delay = 5 * time.Millisecond
		if !s.track(c) {
			_ = c.Close()
			continue
		}
		s.wg.Add(1)
		go s.serve(c)
	}
}

// track registers an accepted connection; false when the source is
// closing or max_connections are open (counted and logged).
func (s *source) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.stopping() {
		return false
	}
	if len(s.conns) >= s.cfg.MaxConnections {
		s.refused.Inc()
		now := time.Now().UnixNano()
		if last := s.lastWarn.Load(); now-last > int64(time.Second) && s.lastWarn.CompareAndSwap(last, now) {
			s.log.Warn().Int("max_connections", s.cfg.MaxConnections).Str("peer", c.RemoteAddr().String()).
				Msg("syslog connection refused: max_connections open")
		}
		return false
	}
	s.conns[c] = struct{}{}
	s.open.Inc()
	s.connsTotal.Inc()
	return true
}

func (s *source) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.open.Dec()
	_ = c.Close()
}

// peerName is what the peer field holds: the remote address, or the
// socket path for unix connections (whose peers have no name).
func (s *source) peerName(a net.Addr) string {
	if s.cfg.Mode == "unix" || a == nil || a.String() == "" {
		return s.cfg.Path
	}
	return a.String()
}

// serve receives the messages of one stream connection until it ends.
func (s *source) serve(c net.Conn) {
	defer s.wg.Done()
	defer s.untrack(c)
	origin := &stages.Origin{Source: s.id, Path: s.peerName(c.RemoteAddr())}
	fr := newFramer(int(s.cfg.MaxMessageBytes))
	// A batch holds what one read brought: about a read buffer of bytes.
	bt := batcher{s: s, bufSize: len(fr.buf), recs: 512}
	for {
		n, err := c.Read(fr.space())
		fr.w += n
		if n > 0 {
			s.bytesIn.Add(float64(n))
		}
		for {
			kind, msg, length, ferr := fr.next()
			switch kind {
			case frameMsg:
				bt.add(msg, origin)
			case frameLong:
				bt.reject(msg, origin, length, fmt.Errorf("message over max_message_bytes (%d)", s.cfg.MaxMessageBytes))
				continue
			case frameFatal:
				bt.reject(msg, origin, length, ferr)
				bt.send()
				s.log.Warn().Str("peer", origin.Path).Err(ferr).Msg("syslog connection closed: bad frame")
				return
			}
			if kind == frameMore {
				break
			}
			if len(bt.b.Records) >= batchRecords && !bt.send() {
				return
			}
		}
		if err != nil {
			if rest := fr.rest(); rest != nil && !s.closing() {
				bt.reject(rest, origin, 0, errors.New("connection ended in the middle of a message"))
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !s.closing() {
				s.log.Debug().Str("peer", origin.Path).Err(err).Msg("syslog connection ended")
			}
			bt.send()
			return
		}
		if !bt.send() {
			return
		}
	}
}

// closing reports whether Close was called (what is held is dropped).
func (s *source) closing() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// stopping reports whether Close or Drain was called: no new input.
func (s *source) stopping() bool {
	select {
	case <-s.draining:
		return true
	default:
		return s.closing()
	}
}

// receiveUDP receives datagrams, one message each, until Close.
func (s *source) receiveUDP() {
	defer s.wg.Done()
	// Datagrams come one by one: batches start small and grow while
	// Read is behind.
	bt := batcher{s: s, bufSize: 16 << 10, recs: 64}
	max := int(s.cfg.MaxMessageBytes)
	buf := make([]byte, max+1)
	origins := map[netip.AddrPort]*stages.Origin{}
	lingering := false
	for {
		// Keep a partial batch only while Read has batches to take.
		linger := len(bt.b.Records)+len(bt.b.Rejects) > 0 && len(s.out) > 0
		if linger != lingering {
			var dl time.Time
			if linger {
				dl = time.Now().Add(udpLinger)
			}
			_ = s.pc.SetReadDeadline(dl)
			lingering = linger
		}
		if !linger && !bt.send() {
			return
		}
		n, addr, err := s.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				lingering = false
				_ = s.pc.SetReadDeadline(time.Time{})
				if !bt.send() {
					return
				}
				continue
			}
			if s.stopping() || errors.Is(err, net.ErrClosed) {
				if !s.closing() {
					bt.send() // drained: what is batched goes, then no more
				}
				return
			}
			s.log.Warn().Err(err).Msg("syslog udp receive failed")
			continue
		}
		s.bytesIn.Add(float64(n))
		o := origins[addr]
		if o == nil {
			if len(origins) >= 4096 {
				clear(origins) // many senders: keep the map small
			}
			o = &stages.Origin{Source: s.id, Path: addr.String()}
			origins[addr] = o
		}
		if n > max {
			bt.reject(buf[:max], o, 0, fmt.Errorf("datagram over max_message_bytes (%d)", max))
		} else if msg := trimEOL(buf[:n]); len(msg) > 0 {
			bt.add(msg, o)
		}
		if len(bt.b.Records) >= batchRecords && !bt.send() {
			return
		}
	}
}

// batcher builds the batches of one receiving goroutine: messages are
// copied into buffers the batch owns.
type batcher struct {
	s       *source
	bufSize int // the size of the buffers messages are copied into
	recs    int // the initial capacity of a batch's Records
	b       stages.Batch
	buf     []byte

	peer   []byte // `"peer":"..."` of peerOf
	peerOf *stages.Origin
}

// room makes room for n more bytes in buf.
func (bt *batcher) room(n int) {
	if cap(bt.buf)-len(bt.buf) >= n {
		return
	}
	bt.buf = stages.NewBuffer(max(bt.bufSize, n))
	bt.b.Own(bt.buf)
}

func (bt *batcher) copy(msg []byte) []byte {
	bt.room(len(msg))
	start := len(bt.buf)
	bt.buf = append(bt.buf, msg...)
	return bt.buf[start:len(bt.buf):len(bt.buf)]
}

// add adds a message; invalid UTF-8 makes it a bad record.
func (bt *batcher) add(msg []byte, o *stages.Origin) {
	if !utf8.Valid(msg) {
		bt.reject(msg, o, 0, errors.New("message is not valid UTF-8"))
		return
	}
	if bt.b.Records == nil {
		bt.b.Records = stages.NewRecords(bt.recs)
	}
	bt.b.Records = append(bt.b.Records, stages.Record{Raw: bt.copy(msg), Origin: o, Offset: -1})
}

// reject adds a bad record (length: the message's length when msg is its
// head, else 0).
func (bt *batcher) reject(msg []byte, o *stages.Origin, length int, err error) {
	bt.s.framesRejected.Inc()
	bt.b.Rejects = append(bt.b.Rejects, stages.Reject{
		Record: stages.Record{Raw: bt.copy(msg), Origin: o, Offset: -1},
		Err:    err,
		Length: int64(length),
	})
}

// send parses the batch and queues it for Read, waiting for room; false
// when the source is closing (the batch is dropped).
func (bt *batcher) send() bool {
	if len(bt.b.Records) == 0 && len(bt.b.Rejects) == 0 {
		return !bt.s.closing()
	}
	b := new(stages.Batch)
	*b = bt.b
	bt.b, bt.buf = stages.Batch{}, nil
	if bt.s.parser != nil && len(b.Records) > 0 {
		bt.s.parser.Process(b)
		bt.addPeers(b)
	}
	select {
	case bt.s.out <- b:
		return true
	case <-bt.s.done:
		b.Release()
		return false
	}
}

// addPeers adds the peer field to every parsed record.
func (bt *batcher) addPeers(b *stages.Batch) {
	total := 0
	for i := range b.Records {
		r := &b.Records[i]
		total += len(r.Raw) + 2*len(r.Origin.Path) + 16 // `,"peer":"..."`, a little escaping
	}
	out := stages.NewBuffer(total)
	for i := range b.Records {
		r := &b.Records[i]
		if r.Origin != bt.peerOf {
			bt.peerOf = r.Origin
			bt.peer = jsonrec.AppendString(jsonrec.AppendKey(bt.peer[:0], "peer"), r.Origin.Path)
		}
		start := len(out)
		var ok bool
		if out, ok = jsonrec.AppendMembers(out, r.Raw, bt.peer); ok {
			r.Raw = out[start:len(out):len(out)]
		}
	}
	b.Own(out)
}
