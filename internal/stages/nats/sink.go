package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/etld/etld/internal/stages"
)

// SinkConfig is the config of the `nats` sink.
type SinkConfig struct {
	ConnConfig `yaml:",inline"`

	Subject    string `yaml:"subject" doc:"subject to publish to (required, no wildcards); a JetStream stream must capture it"`
	MaxPending int    `yaml:"max_pending" doc:"publishes in flight, not acked yet: the window of asynchronous publishing"`
	MsgID      bool   `yaml:"msg_id" doc:"give each publish a Nats-Msg-Id made of the pipeline, the sink, the source and the record's origin, so that the stream drops a re-send within its duplicate window (exactly once); false publishes at least once, for records that share an origin (one input line routed twice into this sink)"`
}

// NewSinkConfig returns a SinkConfig with its defaults.
func NewSinkConfig() *SinkConfig {
	return &SinkConfig{ConnConfig: ConnConfig{URL: defaultURL, Timeout: defaultTimeout}, MaxPending: 16384, MsgID: true}
}

// Validate implements stages.Validator.
func (c *SinkConfig) Validate() error {
	errs := []error{c.ConnConfig.validate()}
	switch {
	case c.Subject == "":
		errs = append(errs, stages.FieldErr("subject", errors.New("required")))
	case strings.ContainsAny(c.Subject, "*> \t") || strings.HasPrefix(c.Subject, ".") || strings.HasSuffix(c.Subject, ".") || strings.Contains(c.Subject, ".."):
		errs = append(errs, stages.FieldErr("subject", fmt.Errorf("%q is not a subject to publish to (no wildcards, spaces or empty tokens)", c.Subject)))
	}
	if c.MaxPending < 1 || c.MaxPending > 1_000_000 {
		errs = append(errs, stages.FieldErr("max_pending", fmt.Errorf("must be between 1 and 1000000, got %d", c.MaxPending)))
	}
	return errors.Join(errs...)
}

// ResolvePaths implements stages.PathResolver.
func (c *SinkConfig) ResolvePaths(dir string) { resolvePaths(dir, &c.Creds, &c.TLS) }

// CheckFiles implements stages.FileChecker.
func (c *SinkConfig) CheckFiles() error { return c.ConnConfig.checkFiles() }

func sinkFactory() stages.Factory {
	return stages.Factory{
		Kind:      stages.KindSink,
		Type:      "nats",
		Doc:       "Publishes records to a NATS JetStream subject, each with a stable Nats-Msg-Id so that the stream keeps a re-sent record once.",
		NewConfig: func() any { return NewSinkConfig() },
		NewSink: func(s stages.Settings, cfg any) (stages.Sink, error) {
			c, ok := cfg.(*SinkConfig)
			if !ok {
				return nil, fmt.Errorf("nats sink %q: config is %T, want *SinkConfig", s.ID, cfg)
			}
			return newSink(s, c), nil
		},
	}
}

// Sink is the `nats` sink. Its methods run on the sink's writer
// goroutine; the client's ack and error callbacks on its own.
type Sink struct {
	cfg  *SinkConfig
	set  stages.Settings
	what string
	c    conn

	ready  bool
	stream string
	slab   []byte // payload copies of publishes in flight
	idbuf  []byte
	wait   time.Duration // how long Flush waits for acks: timeout, doubled at each Flush they do not all come in

	mu      sync.Mutex
	failed  []*nats.Msg // publishes to send again (refused, timed out, lost in a reconnect)
	lastErr error

	published, duplicates, resent prometheus.Counter
}

const slabSize = 1 << 20

// ackWaitMax is the longest wait for a publish's ack, in timeouts. An
// ack slower than timeout is waited for (longer at each Flush), not
// answered with a re-send: a server that is behind would get further
// behind with every copy, and never catch up. A publish is sent again
// only when the server refuses it, the connection drops or its ack is
// ackWaitMax timeouts late.
const ackWaitMax = 32

func newSink(s stages.Settings, c *SinkConfig) *Sink {
	what := fmt.Sprintf("nats sink %q", s.ID)
	return &Sink{
		cfg: c, set: s, what: what, c: conn{what: what},
		published: s.Counter("etld_nats_published_total",
			"Records published to NATS and acknowledged by the stream."),
		duplicates: s.Counter("etld_nats_duplicates_total",
			"Publishes the stream dropped as duplicates of a Nats-Msg-Id it holds (re-sends after a restart)."),
		resent: s.Counter("etld_nats_resent_total",
			"Publishes sent again after a failure or a missing ack."),
	}
}

// Health implements stages.HealthReporter.
func (s *Sink) Health() error { return s.c.report() }

// Open connects and checks that a stream captures the subject. A server
// that cannot be reached is not an error (Write retries).
func (s *Sink) Open(ctx context.Context) error {
	err := s.c.dial(ctx, &s.cfg.ConnConfig, s.set,
		jetstream.WithPublishAsyncMaxPending(s.cfg.MaxPending),
		jetstream.WithPublishAsyncTimeout(ackWaitMax*s.cfg.Timeout),
		jetstream.WithPublishAsyncAckHandler(s.onAck),
		jetstream.WithPublishAsyncErrHandler(s.onErr))
	if err != nil {
		return openErr(ctx, err)
	}
	if err := s.setup(ctx); err != nil && !down(s.c.nc, err) {
		s.c.close()
		s.c.nc = nil
		return openErr(ctx, err)
	}
	return nil
}

func (s *Sink) setup(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	name, err := s.c.js.StreamNameBySubject(tctx, s.cfg.Subject)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		err = fmt.Errorf("%s: no stream captures subject %q", s.what, s.cfg.Subject)
	} else if err != nil {
		err = fmt.Errorf("%s: looking up the stream of subject %q: %w", s.what, s.cfg.Subject, err)
	}
	if err != nil {
		s.c.setFault(err)
		return err
	}
	s.c.setFault(nil)
	s.stream, s.ready = name, true
	return nil
}

// Write publishes every record asynchronously; at most max_pending wait
// for their acks at a time.
func (s *Sink) Write(ctx context.Context, b *stages.Batch) error {
	if s.c.nc == nil {
		return errors.New(s.what + ": write before open")
	}
	if !s.ready {
		if err := s.setup(ctx); err != nil {
			return err
		}
	}
	if err := s.resend(); err != nil {
		return err
	}
	for i := range b.Records {
		r := &b.Records[i]
		if len(s.slab)+len(r.Raw) > cap(s.slab) {
			s.slab = make([]byte, 0, max(slabSize, len(r.Raw)))
		}
		n := len(s.slab)
		s.slab = append(s.slab, r.Raw...)
		m := &nats.Msg{Subject: s.cfg.Subject, Data: s.slab[n:len(s.slab):len(s.slab)]}
		if id := s.msgID(r); id != "" {
			m.Header = nats.Header{jetstream.MsgIDHeader: []string{id}}
		}
		if err := s.publish(m); err != nil {
			b.Records = b.Records[i:]
			if errors.Is(err, nats.ErrMaxPayload) {
				return stages.Permanent(fmt.Errorf("%s: %w", s.what, err))
			}
			return fmt.Errorf("%s: publish: %w", s.what, err)
		}
	}
	b.Records = b.Records[:0]
	return nil
}

// msgID is the record's Nats-Msg-Id: the pipeline, the sink, the source
// and the record's place in it (file and offset, or the stream sequence
// of an upstream nats source). Records without a place get none (they
// are published at least once).
func (s *Sink) msgID(r *stages.Record) string {
	if !s.cfg.MsgID || r.Origin == nil || r.Offset < 0 {
		return ""
	}
	b := append(s.idbuf[:0], s.set.Pipeline...)
	b = append(b, '/')
	b = append(b, s.set.ID...)
	b = append(b, '/')
	b = append(b, r.Origin.Source...)
	b = append(b, '/')
	b = append(b, r.Origin.Path...)
	b = append(b, ':')
	b = strconv.AppendInt(b, r.Offset, 10)
	s.idbuf = b
	return string(b)
}

// publish sends m; its ack comes to onAck or onErr.
func (s *Sink) publish(m *nats.Msg) error {
	_, err := s.c.js.PublishMsgAsync(m, jetstream.WithStallWait(s.cfg.Timeout))
	return err
}

// onAck counts an acked publish (the client's goroutine).
func (s *Sink) onAck(_ jetstream.JetStream, _ *nats.Msg, ack *jetstream.PubAck) {
	s.published.Inc()
	if ack != nil && ack.Duplicate {
		s.duplicates.Inc()
	}
}

// onErr keeps a failed publish for resend (the client's goroutine).
func (s *Sink) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	s.mu.Lock()
	s.failed = append(s.failed, &nats.Msg{Subject: m.Subject, Data: m.Data, Header: m.Header})
	s.lastErr = err
	s.mu.Unlock()
}

// resend publishes the failed publishes again (their Nats-Msg-Id makes a
// publish that did reach the stream a duplicate it drops).
func (s *Sink) resend() error {
	s.mu.Lock()
	failed := s.failed
	s.failed = nil
	s.mu.Unlock()
	for i, m := range failed {
		if err := s.publish(m); err != nil {
			s.mu.Lock()
			s.failed = append(failed[i:], s.failed...)
			s.mu.Unlock()
			return fmt.Errorf("%s: publish again: %w", s.what, err)
		}
		s.resent.Inc()
	}
	return nil
}

// Flush waits for the ack of every publish, sending the failed ones
// again: once it returns nil, the stream holds every record written.
// The client runs the ack and error callbacks of a publish before it
// counts it as complete. Acks that take longer than its wait leave the
// publishes in flight: Flush fails, and the next one waits twice as
// long for them (up to ackWaitMax timeouts).
func (s *Sink) Flush(ctx context.Context) error {
	if s.c.nc == nil {
		return nil
	}
	if s.wait == 0 {
		s.wait = s.cfg.Timeout
	}
	for round := 0; ; round++ {
		if err := s.resend(); err != nil {
			s.c.setFault(err)
			return err
		}
		timer := time.NewTimer(s.wait)
		select {
		case <-s.c.js.PublishAsyncComplete():
			timer.Stop()
		case <-timer.C:
			n := s.c.js.PublishAsyncPending()
			s.wait = min(2*s.wait, ackWaitMax*s.cfg.Timeout)
			err := fmt.Errorf("%s: %d publishes not acknowledged yet; waiting up to %v for them", s.what, n, s.wait)
			s.c.setFault(err)
			return err
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		}
		s.mu.Lock()
		n, lastErr := len(s.failed), s.lastErr
		s.mu.Unlock()
		if n == 0 {
			s.c.setFault(nil)
			s.wait = s.cfg.Timeout
			s.slab = s.slab[:0] // nothing in flight references it any more
			return nil
		}
		if round > 0 {
			err := fmt.Errorf("%s: %d publishes not acknowledged: %v; sending them again", s.what, n, lastErr)
			s.c.setFault(err)
			return err
		}
	}
}

// Close flushes what it can and disconnects. What was not acked is sent
// again by the next run (from the sources' last checkpoint).
func (s *Sink) Close(ctx context.Context) error {
	if s.c.nc == nil {
		return nil
	}
	var err error
	if s.c.nc.IsConnected() {
		fctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		err = s.Flush(fctx)
		cancel()
	}
	s.c.close()
	s.c.nc = nil
	return err
}
