package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/stages"
)

// Batch limits of Read, like the line sources'.
const (
	batchMaxRecords = 1024
	batchMaxBytes   = 256 << 10
	// batchLinger is how long Read waits for more messages once it has
	// one, before returning a partial batch.
	batchLinger = 5 * time.Millisecond
	// metaRoom is the room Read keeps for a record's _meta (a larger one,
	// with many headers, still works: the buffer grows).
	metaRoom = 1 << 10
)

// SourceConfig is the config of the `nats` source.
type SourceConfig struct {
	ConnConfig `yaml:",inline"`

	Stream        string          `yaml:"stream" doc:"JetStream stream to read (required); it must exist"`
	Subject       string          `yaml:"subject" doc:"read only the stream's messages whose subject matches this filter (wildcards * and >); default: all of them"`
	Durable       string          `yaml:"durable" doc:"durable consumer name (required), created when missing; instances with the same durable share the messages"`
	StartAt       string          `yaml:"start_at" doc:"where a new durable starts: beginning (every message the stream holds) or end (messages published from now on); an existing durable resumes where it is"`
	AckWait       time.Duration   `yaml:"ack_wait" doc:"how long the server waits for the ack of a delivered message before it redelivers it; etld renews it (in progress) for messages waiting for a checkpoint, so it only matters after a crash: the messages of a killed instance come back after ack_wait"`
	MaxAckPending int             `yaml:"max_ack_pending" doc:"most messages delivered and not acked yet; acks come once per checkpoint, so allow at least twice the rate times checkpoint_interval, or reading stalls"`
	PullBatch     int             `yaml:"pull_batch" doc:"messages asked for in one pull request (the client buffers up to this many)"`
	Metadata      bool            `yaml:"metadata" doc:"give records a _meta object (subject, stream, seq, delivered, timestamp, headers): the payload must be a JSON object, _meta is added to its fields; other payloads are bad records"`
	MaxLineBytes  stages.ByteSize `yaml:"max_line_bytes" doc:"largest message payload; a larger one is a bad record (dead letter) that keeps its first max_line_bytes bytes, and is acked"`
}

// Start positions of a new durable.
const (
	StartBeginning = "beginning"
	StartEnd       = "end"
)

// NewSourceConfig returns a SourceConfig with its defaults.
func NewSourceConfig() *SourceConfig {
	return &SourceConfig{
		ConnConfig: ConnConfig{URL: defaultURL, Timeout: defaultTimeout},
		StartAt:    StartBeginning, AckWait: 30 * time.Second, MaxAckPending: 200_000, PullBatch: 4096,
		MaxLineBytes: 1 << 20,
	}
}

// Validate implements stages.Validator.
func (c *SourceConfig) Validate() error {
	errs := []error{c.ConnConfig.validate()}
	if c.Stream == "" {
		errs = append(errs, stages.FieldErr("stream", errors.New("required")))
	} else if strings.ContainsAny(c.Stream, ". *>") {
		errs = append(errs, stages.FieldErr("stream", fmt.Errorf("%q: a stream name has no '.', ' ', '*' or '>'", c.Stream)))
	}
	if c.Durable == "" {
		errs = append(errs, stages.FieldErr("durable", errors.New("required: the consumer that remembers what was acked")))
	} else if strings.ContainsAny(c.Durable, ". *>") {
		errs = append(errs, stages.FieldErr("durable", fmt.Errorf("%q: a consumer name has no '.', ' ', '*' or '>'", c.Durable)))
	}
	if c.StartAt != StartBeginning && c.StartAt != StartEnd {
		errs = append(errs, stages.FieldErr("start_at", fmt.Errorf("invalid value %q: want beginning or end", c.StartAt)))
	}
	if c.AckWait < time.Second {
		errs = append(errs, stages.FieldErr("ack_wait", fmt.Errorf("must be at least 1s, got %v", c.AckWait)))
	}
	if c.MaxAckPending < 1 {
		errs = append(errs, stages.FieldErr("max_ack_pending", fmt.Errorf("must be positive, got %d", c.MaxAckPending)))
	}
	if c.PullBatch < 1 || c.PullBatch > 100_000 {
		errs = append(errs, stages.FieldErr("pull_batch", fmt.Errorf("must be between 1 and 100000, got %d", c.PullBatch)))
	}
	if c.MaxLineBytes <= 0 || c.MaxLineBytes > 64<<20 {
		errs = append(errs, stages.FieldErr("max_line_bytes", fmt.Errorf("must be between 1 and 64MiB, got %d", int64(c.MaxLineBytes))))
	}
	return errors.Join(errs...)
}

// ResolvePaths implements stages.PathResolver.
func (c *SourceConfig) ResolvePaths(dir string) { resolvePaths(dir, &c.Creds, &c.TLS) }

// CheckFiles implements stages.FileChecker.
func (c *SourceConfig) CheckFiles() error { return c.ConnConfig.checkFiles() }

// ProducesFields implements stages.FieldsProducer: with metadata, records
// are JSON objects already.
func (c *SourceConfig) ProducesFields() bool { return c.Metadata }

func sourceFactory() stages.Factory {
	return stages.Factory{
		Kind:      stages.KindSource,
		Type:      "nats",
		Doc:       "Reads messages of a NATS JetStream stream through a durable pull consumer; acks them once a checkpoint covers them.",
		NewConfig: func() any { return NewSourceConfig() },
		NewSource: func(s stages.Settings, cfg any) (stages.Source, error) {
			c, ok := cfg.(*SourceConfig)
			if !ok {
				return nil, fmt.Errorf("nats source %q: config is %T, want *SourceConfig", s.ID, cfg)
			}
			return newSource(s, c), nil
		},
	}
}

// heldMsg is a delivered message whose record Read returned and that is
// not acked yet: what it takes to rebuild its ack subject.
type heldMsg struct{ sseq, dseq, dc uint64 }

// ackedRun is sequences whose acks the server confirmed while pull
// request number fetch was the newest one: a redelivery of them that the
// server sent before it got the acks can still be in that request's
// buffer (or an older one's), never in a later request.
type ackedRun struct {
	fetch uint64
	seqs  seqSet
}

// heldBatch is the messages of one Read.
type heldBatch struct {
	gen  uint64
	at   time.Time // when delivered or last marked in progress
	msgs []heldMsg
	seqs seqSet
}

// Source is the `nats` source. Read, State, Restore and Committed run on
// the runtime's source goroutine; the keeper goroutine only renews the
// ack deadline of held messages, under mu.
type Source struct {
	cfg    *SourceConfig
	log    zerolog.Logger
	what   string
	origin *stages.Origin

	set  stages.Settings
	c    conn
	cons jetstream.Consumer
	// fetches is the pull request in flight (one: the server shares
	// messages among a consumer's waiting requests, which would mix up
	// their order).
	fetches []jetstream.MessageBatch
	unfetch context.CancelFunc // ends the pull request in flight
	fetchNo uint64             // pull requests made so far
	// fetchWait is how long a pull request waits on the server.
	fetchWait time.Duration
	// recentAcks is what Committed acked (confirmed by the server) while a
	// pull request that may hold a redelivery of it is not drained yet:
	// such a redelivery is recognised and skipped, not emitted twice.
	recentAcks []ackedRun
	ready      bool
	tries      int       // failed attempts in a row
	nextTry    time.Time // when to try again after a failure

	mu     sync.Mutex
	held   []*heldBatch
	gen    uint64
	skip   seqSet // committed before a restart, maybe not acked
	prefix string // ack subject up to the delivery count, "$JS.ACK.<stream>.<consumer>."
	tail   int    // tokens after the consumer sequence in the ack subject

	stop   chan struct{}
	kept   sync.WaitGroup
	closed bool

	acked, skipped, redelivered prometheus.Counter
	unacked                     prometheus.Gauge
}

func newSource(s stages.Settings, c *SourceConfig) *Source {
	return &Source{
		cfg:       c,
		set:       s,
		log:       s.Logger,
		what:      fmt.Sprintf("nats source %q", s.ID),
		c:         conn{what: fmt.Sprintf("nats source %q", s.ID)},
		origin:    &stages.Origin{Source: s.ID, Path: "nats:" + c.Stream},
		stop:      make(chan struct{}),
		fetchWait: fetchWait,
		acked: s.Counter("etld_nats_acked_total",
			"Messages acknowledged to NATS once a checkpoint covered them."),
		skipped: s.Counter("etld_nats_skipped_total",
			"Messages delivered again that a committed checkpoint already held (after a restart, or a redelivery that crossed the ack): acked, not emitted."),
		redelivered: s.Counter("etld_nats_redelivered_total",
			"Messages delivered more than once by the server."),
		unacked: s.Gauge("etld_nats_unacked",
			"Messages emitted and waiting for a checkpoint before they are acked."),
	}
}

// Health implements stages.HealthReporter.
func (s *Source) Health() error { return s.c.report() }

// Restore implements stages.Stateful: the restored state's messages are
// in the committed output; when the server delivers them again (they
// were not acked before the stop), they are acked and skipped.
func (s *Source) Restore(state []byte) error {
	st, err := decodeState(state)
	if err != nil {
		return err
	}
	s.skip = st.Seqs
	return nil
}

// State implements stages.Stateful.
func (s *Source) State() ([]byte, error) {
	s.mu.Lock()
	st := sourceState{Gen: s.gen, Seqs: s.skip}
	for _, b := range s.held {
		st.Seqs = st.Seqs.union(b.seqs)
	}
	s.mu.Unlock()
	return st.encode()
}

// Open connects and sets up the durable consumer. A server that cannot
// be reached is not an error (Read retries); a missing stream, refused
// credentials or TLS are.
func (s *Source) Open(ctx context.Context) error {
	if err := s.c.dial(ctx, &s.cfg.ConnConfig, s.set); err != nil {
		return openErr(ctx, err)
	}
	if err := s.setup(ctx); err != nil && !down(s.c.nc, err) {
		s.c.close()
		s.c.nc = nil
		return openErr(ctx, err)
	}
	s.kept.Add(1)
	go s.keep()
	return nil
}

// setup finds the stream and creates or updates the durable consumer.
func (s *Source) setup(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	err := s.trySetup(tctx)
	if err != nil {
		err = fmt.Errorf("%s: %w", s.what, err)
		s.c.setFault(err)
		return err
	}
	s.c.setFault(nil)
	s.ready, s.tries = true, 0
	return nil
}

func (s *Source) trySetup(ctx context.Context) error {
	st, err := s.c.js.Stream(ctx, s.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %q not found", s.cfg.Stream)
	}
	if err != nil {
		return fmt.Errorf("stream %q: %w", s.cfg.Stream, err)
	}
	cc := jetstream.ConsumerConfig{
		Durable:       s.cfg.Durable,
		FilterSubject: s.cfg.Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxAckPending: s.cfg.MaxAckPending,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if s.cfg.StartAt == StartEnd {
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	if old, err := st.Consumer(ctx, s.cfg.Durable); err == nil {
		// An existing durable resumes where it is: its start position
		// cannot change.
		oc := old.CachedInfo().Config
		cc.DeliverPolicy, cc.OptStartSeq, cc.OptStartTime = oc.DeliverPolicy, oc.OptStartSeq, oc.OptStartTime
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("consumer %q: %w", s.cfg.Durable, err)
	}
	cons, err := st.CreateOrUpdateConsumer(ctx, cc)
	if err != nil {
		return fmt.Errorf("consumer %q: %w", s.cfg.Durable, err)
	}
	s.cons = cons
	s.fetches = s.fetches[:0]
	return nil
}

// fetchWait is how long a pull request waits for messages on the server
// (Source.fetchWait: tests make it longer).
const fetchWait = 500 * time.Millisecond

// next returns the next delivered message, keeping a pull request in
// flight. A message that came stays in its request's buffer when ctx is
// done first.
func (s *Source) next(ctx context.Context) (jetstream.Msg, error) {
	for {
		if len(s.fetches) == 0 {
			fctx, cancel := context.WithTimeout(context.Background(), s.fetchWait+s.fetchWait/10)
			b, err := s.cons.Fetch(s.cfg.PullBatch, jetstream.FetchContext(fctx))
			if err != nil {
				cancel()
				return nil, err
			}
			s.fetches, s.unfetch = append(s.fetches, b), cancel
			s.fetchNo++
		}
		select {
		case m, ok := <-s.fetches[0].Messages():
			if ok {
				return m, nil
			}
			err := s.fetches[0].Error()
			if errors.Is(err, context.DeadlineExceeded) {
				err = nil // the pull request expired: ask again
			}
			s.unfetch()
			s.fetches[0] = nil
			s.fetches = append(s.fetches[:0], s.fetches[1:]...)
			// Every message of that request has been through Read: a
			// redelivery of what was acked while it was the newest is
			// behind us.
			s.forgetAcked(s.fetchNo - uint64(len(s.fetches)))
			if err != nil {
				return nil, err
			}
			s.c.setFault(nil) // the server answers again
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Read returns the messages delivered now, waiting for at least one.
func (s *Source) Read(ctx context.Context) (*stages.Batch, error) {
	if s.closed {
		return nil, errors.New(s.what + ": read after close")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for !s.ready {
		if err := s.pause(ctx); err != nil {
			return nil, err
		}
		if err := s.setup(ctx); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s.log.Warn().Err(err).Msg("nats: setting up the consumer failed; retrying")
		}
	}
	b := &stages.Batch{}
	var held []heldMsg
	var seqs seqSet
	var buf []byte
	size := 0
	// Wait for the first message as long as ctx allows, then for the
	// rest of the batch batchLinger at most.
	wait := ctx
	linger, cancel := context.WithCancel(ctx)
	defer cancel()
	for len(b.Records)+len(b.Rejects) < batchMaxRecords && size < batchMaxBytes {
		m, err := s.next(wait)
		if err != nil {
			if wait.Err() != nil {
				break
			}
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				s.ready = false
			}
			err = fmt.Errorf("%s: %w", s.what, err)
			s.c.setFault(err)
			s.log.Warn().Err(err).Msg("nats: reading failed; retrying")
			if len(held) > 0 || !s.ready {
				break
			}
			if err := s.pause(ctx); err != nil {
				return nil, err
			}
			continue
		}
		s.tries = 0
		s.c.setFault(nil) // works again
		hm, ok := s.parseReply(m.Reply())
		if !ok {
			s.log.Warn().Str("reply", m.Reply()).Msg("nats: a message without a JetStream ack subject; ignored")
			continue
		}
		if hm.dc > 1 {
			s.redelivered.Inc()
		}
		if len(s.skip) > 0 && s.skip.has(hm.sseq) {
			// Committed before the restart, not acked then.
			s.publishAck(hm, ackAck)
			s.skip.remove(hm.sseq)
			s.skipped.Inc()
			continue
		}
		if hm.dc > 1 && (seqs.has(hm.sseq) || s.holds(hm)) {
			continue // ours already, not acked yet: the newest delivery acks it too
		}
		if s.ackedRecently(hm.sseq) {
			// Ours, committed and acked: the server sent this
			// delivery again (its ack_wait ran out, or it restarted)
			// before it got the ack. Acked again, harmless: it is not
			// pending any more.
			s.publishAck(hm, ackAck)
			s.skipped.Inc()
			continue
		}
		if wait == ctx {
			wait = linger
			t := time.AfterFunc(batchLinger, cancel)
			defer t.Stop()
		}
		held = append(held, hm)
		seqs.add(hm.sseq)
		// Records get a copy in a buffer the batch owns (and pools): the
		// client's message goes to the garbage collector at once.
		data := m.Data()
		size += len(data)
		keep := min(len(data), int(s.cfg.MaxLineBytes))
		if cap(buf)-len(buf) < keep+metaRoom {
			if buf != nil {
				b.Own(buf)
			}
			buf = stages.NewBuffer(max(batchMaxBytes, keep+metaRoom))
		}
		start := len(buf)
		buf = append(buf, data[:keep]...)
		rec := stages.Record{Raw: buf[start:len(buf):len(buf)], Origin: s.origin, Offset: int64(hm.sseq)}
		if keep < len(data) {
			b.Rejects = append(b.Rejects, stages.Reject{Record: rec, Length: int64(len(data)),
				Err: fmt.Errorf("message of %d bytes is over max_line_bytes (%d)", len(data), int64(s.cfg.MaxLineBytes))})
			continue
		}
		if s.cfg.Metadata {
			start := len(buf)
			var err error
			buf, err = appendWithMeta(buf, m, hm)
			if err != nil {
				buf = buf[:start]
				b.Rejects = append(b.Rejects, stages.Reject{Record: rec, Err: err})
				continue
			}
			rec.SetParsed(buf[start:len(buf):len(buf)])
		}
		if b.Records == nil {
			b.Records = stages.NewRecords(batchMaxRecords)
		}
		b.Records = append(b.Records, rec)
	}
	if buf != nil {
		b.Own(buf)
	}
	if len(held) > 0 {
		s.mu.Lock()
		s.held = append(s.held, &heldBatch{gen: s.gen, at: time.Now(), msgs: held, seqs: seqs})
		s.gen++
		n := 0
		for _, h := range s.held {
			n += len(h.msgs)
		}
		s.mu.Unlock()
		s.unacked.Set(float64(n))
	}
	if len(b.Records) == 0 && len(b.Rejects) == 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// pause waits before the next attempt after a failure, backing off. The
// time is absolute: Reads are interrupted at every checkpoint, which must
// not restart the wait.
func (s *Source) pause(ctx context.Context) error {
	if s.nextTry.IsZero() {
		s.nextTry = time.Now().Add(backoff(s.tries))
	}
	t := time.NewTimer(time.Until(s.nextTry))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	s.tries++
	s.nextTry = time.Time{}
	return nil
}

// holds reports whether m is held already (delivered again before its ack).
func (s *Source) holds(m heldMsg) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.held {
		if b.seqs.has(m.sseq) {
			for i := range b.msgs {
				if b.msgs[i].sseq == m.sseq {
					b.msgs[i] = m
				}
			}
			return true
		}
	}
	return false
}

// appendWithMeta appends the payload of m, a JSON object, with a _meta
// field in front.
func appendWithMeta(dst []byte, m jetstream.Msg, hm heldMsg) ([]byte, error) {
	data := m.Data()
	i := 0
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n') {
		i++
	}
	if i == len(data) || data[i] != '{' || !json.Valid(data) {
		return dst, errors.New("metadata: true needs a JSON object payload")
	}
	dst = append(dst, `{"_meta":{"subject":`...)
	dst = strconv.AppendQuote(dst, m.Subject())
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, hm.sseq, 10)
	dst = append(dst, `,"delivered":`...)
	dst = strconv.AppendUint(dst, hm.dc, 10)
	if md, err := m.Metadata(); err == nil {
		dst = append(dst, `,"stream":`...)
		dst = strconv.AppendQuote(dst, md.Stream)
		dst = append(dst, `,"timestamp":"`...)
		dst = md.Timestamp.UTC().AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	if h := m.Headers(); len(h) > 0 {
		hj, err := json.Marshal(h)
		if err == nil {
			dst = append(dst, `,"headers":`...)
			dst = append(dst, hj...)
		}
	}
	dst = append(dst, '}')
	rest := data[i+1:]
	j := 0
	for j < len(rest) && (rest[j] == ' ' || rest[j] == '\t' || rest[j] == '\r' || rest[j] == '\n') {
		j++
	}
	if j < len(rest) && rest[j] != '}' {
		dst = append(dst, ',')
	}
	return append(dst, rest...), nil
}

// Ack bodies.
const (
	ackAck      = "+ACK"
	ackProgress = "+WPI"
	ackNak      = "-NAK"
)

// parseReply reads the sequences of an ack subject,
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
// (with a domain and account hash after ACK in the newer form), and
// learns its prefix so that the ack can be sent without keeping the
// message.
func (s *Source) parseReply(reply string) (heldMsg, bool) {
	if s.prefix != "" && strings.HasPrefix(reply, s.prefix) {
		return parseNums(reply[len(s.prefix):])
	}
	tokens := strings.Split(reply, ".")
	if len(tokens) < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
		return heldMsg{}, false
	}
	off := 2
	if len(tokens) >= 12 {
		off = 4
	}
	prefix := strings.Join(tokens[:off+2], ".") + "."
	hm, ok := parseNums(reply[len(prefix):])
	if ok {
		s.mu.Lock()
		s.prefix, s.tail = prefix, len(tokens)-(off+5)
		s.mu.Unlock()
	}
	return hm, ok
}

// parseNums parses "<delivered>.<sseq>.<dseq>.<rest>".
func parseNums(s string) (heldMsg, bool) {
	var n [3]uint64
	for i := range n {
		end := strings.IndexByte(s, '.')
		if end < 0 {
			return heldMsg{}, false
		}
		v, err := strconv.ParseUint(s[:end], 10, 64)
		if err != nil {
			return heldMsg{}, false
		}
		n[i], s = v, s[end+1:]
	}
	return heldMsg{dc: n[0], sseq: n[1], dseq: n[2]}, true
}

// replyOf rebuilds the ack subject of m (timestamp and pending count are
// not read by the server). Call with mu held or from the source goroutine.
func (s *Source) replyOf(buf []byte, m heldMsg) []byte {
	buf = append(buf[:0], s.prefix...)
	buf = strconv.AppendUint(buf, m.dc, 10)
	buf = append(buf, '.')
	buf = strconv.AppendUint(buf, m.sseq, 10)
	buf = append(buf, '.')
	buf = strconv.AppendUint(buf, m.dseq, 10)
	for range s.tail {
		buf = append(buf, ".0"...)
	}
	return buf
}

// publishAck sends an ack of kind body for m without waiting.
func (s *Source) publishAck(m heldMsg, body string) {
	var buf [128]byte
	_ = s.c.nc.Publish(string(s.replyOf(buf[:0], m)), []byte(body))
}

// Committed implements stages.Committer: acks every message whose record
// the committed checkpoint holds, and confirms the acks with one
// acknowledged ack (the server handles a client's acks in order).
func (s *Source) Committed(ctx context.Context, state []byte) error {
	st, err := decodeState(state)
	if err != nil {
		return err
	}
	s.mu.Lock()
	var done []*heldBatch
	for _, b := range s.held {
		if b.gen < st.Gen {
			done = append(done, b)
		}
	}
	s.mu.Unlock()
	if err := s.ackAll(ctx, done); err != nil {
		return fmt.Errorf("%s: ack: %w (acked again after the next checkpoint; the server redelivers what was not)", s.what, err)
	}
	s.mu.Lock()
	n, left := 0, 0
	var acked seqSet
	for _, b := range s.held {
		if b.gen < st.Gen {
			n += len(b.msgs)
			acked = acked.union(b.seqs)
			continue
		}
		s.held[left] = b
		left++
	}
	clear(s.held[left:])
	s.held = s.held[:left]
	pending := 0
	for _, b := range s.held {
		pending += len(b.msgs)
	}
	s.mu.Unlock()
	s.rememberAcked(acked)
	s.acked.Add(float64(n))
	s.unacked.Set(float64(pending))
	if len(s.skip) > 0 && s.cons != nil {
		// Forget restored sequences the consumer has acked meanwhile
		// (before the stop, or by another instance).
		tctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		info, err := s.cons.Info(tctx)
		cancel()
		if err == nil {
			s.skip.below(info.AckFloor.Stream)
		}
	}
	return nil
}

// rememberAcked keeps seqs, just acked, until the pull request in flight
// (or the last one) is drained. The server hands a consumer's deliveries
// and its replies to acks to the client in order: a redelivery it sent
// before it got the acks is in a request made before they were confirmed,
// and once that request is drained none can come (what was acked is not
// pending on the server any more).
func (s *Source) rememberAcked(seqs seqSet) {
	if len(seqs) == 0 {
		return
	}
	if n := len(s.recentAcks); n > 0 && s.recentAcks[n-1].fetch == s.fetchNo {
		s.recentAcks[n-1].seqs = s.recentAcks[n-1].seqs.union(seqs)
		return
	}
	s.recentAcks = append(s.recentAcks, ackedRun{fetch: s.fetchNo, seqs: seqs})
}

// forgetAcked forgets what was acked while pull request fetch, now
// drained, or an older one was the newest.
func (s *Source) forgetAcked(fetch uint64) {
	i := 0
	for i < len(s.recentAcks) && s.recentAcks[i].fetch <= fetch {
		i++
	}
	if i > 0 {
		s.recentAcks = append(s.recentAcks[:0], s.recentAcks[i:]...)
	}
}

// ackedRecently reports whether seq was acked and a redelivery of it
// sent before the ack may still come.
func (s *Source) ackedRecently(seq uint64) bool {
	for _, r := range s.recentAcks {
		if r.seqs.has(seq) {
			return true
		}
	}
	return false
}

// ackAll acks the messages of bs and waits for the server to confirm.
func (s *Source) ackAll(ctx context.Context, bs []*heldBatch) error {
	var msgs []heldMsg
	for _, b := range bs {
		msgs = append(msgs, b.msgs...)
	}
	return s.sendAll(ctx, ackAck, msgs)
}

// sendAll sends body (an ack or a negative ack) for every message and
// waits for the server to confirm the last one: it handles a client's
// acks in order, so all of them are then done.
func (s *Source) sendAll(ctx context.Context, body string, msgs []heldMsg) error {
	if len(msgs) == 0 {
		return nil
	}
	var buf []byte
	for _, m := range msgs[:len(msgs)-1] {
		buf = s.replyOf(buf, m)
		if err := s.c.nc.Publish(string(buf), []byte(body)); err != nil {
			return err
		}
	}
	tctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	_, err := s.c.nc.RequestWithContext(tctx, string(s.replyOf(buf, msgs[len(msgs)-1])), []byte(body))
	return err
}

// keep renews the ack deadline of held messages (in progress) so that a
// slow checkpoint does not make the server redeliver them.
func (s *Source) keep() {
	defer s.kept.Done()
	every := max(s.cfg.AckWait/4, 250*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	var buf []byte
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			for _, b := range s.held {
				if now.Sub(b.at) < s.cfg.AckWait/2 {
					continue
				}
				for _, m := range b.msgs {
					buf = s.replyOf(buf, m)
					_ = s.c.nc.Publish(string(buf), []byte(ackProgress))
				}
				b.at = now
			}
			s.mu.Unlock()
		}
	}
}

// Close gives back what was delivered and not acked (negative ack, so
// that another instance gets it at once) and disconnects.
func (s *Source) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.stop)
	s.kept.Wait()
	if s.c.nc == nil {
		return nil
	}
	var back []heldMsg
	s.mu.Lock()
	for _, b := range s.held {
		back = append(back, b.msgs...)
	}
	s.mu.Unlock()
	// The messages of the pull request in flight go back too, after the
	// held ones (the server redelivers in that order). The request runs
	// to its end (at most fetchWait): ending it early would drop what
	// the server already sent, which would come back only after ack_wait.
	for _, f := range s.fetches {
		for m := range f.Messages() {
			if hm, ok := s.parseReply(m.Reply()); ok {
				back = append(back, hm)
			}
		}
	}
	if s.unfetch != nil {
		s.unfetch()
	}
	s.fetches = nil
	if s.c.nc.IsConnected() && s.prefix != "" {
		if err := s.sendAll(context.Background(), ackNak, back); err != nil {
			s.log.Debug().Err(err).Msg("nats: giving back unacked messages")

		}
	}
	if s.c.nc.IsConnected() {
		_ = s.c.nc.FlushTimeout(s.cfg.Timeout)
	}
	s.c.close()
	return nil
}
