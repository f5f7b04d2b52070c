package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

const (
	defaultMaxLineBytes   = 1 << 20
	defaultSessionTimeout = 45 * time.Second
	// batchMaxRecords and batchMaxBytes bound one batch, like the file
	// source's.
	batchMaxRecords = 1024
	batchMaxBytes   = 256 << 10
)

// SourceConfig is the config of the `kafka` source.
type SourceConfig struct {
	ClusterConfig `yaml:",inline"`

	Topics         []string        `yaml:"topics" doc:"topics to consume (required)"`
	Group          string          `yaml:"group" doc:"consumer group (required); instances with the same group share the partitions"`
	StartAt        string          `yaml:"start_at" doc:"where a partition without a committed offset starts: beginning or end"`
	SessionTimeout time.Duration   `yaml:"session_timeout" doc:"how long a member that stopped heartbeating (killed) keeps its partitions before the group hands them over: lower fails over faster, too low evicts a live member that pauses"`
	Metadata       bool            `yaml:"metadata" doc:"add topic, partition, offset, key, headers and timestamp under _meta; the values must then be JSON objects (others are bad records)"`
	MaxLineBytes   stages.ByteSize `yaml:"max_line_bytes" doc:"largest message value; a larger one is a bad record that keeps its first max_line_bytes bytes"`
}

// NewSourceConfig returns a SourceConfig with its defaults.
func NewSourceConfig() *SourceConfig {
	return &SourceConfig{StartAt: "beginning", SessionTimeout: defaultSessionTimeout, MaxLineBytes: defaultMaxLineBytes}
}

// Validate implements stages.Validator.
func (c *SourceConfig) Validate() error {
	errs := []error{c.ClusterConfig.validate()}
	if len(c.Topics) == 0 {
		errs = append(errs, stages.FieldErr("topics", errors.New("is required")))
	}
	if c.Group == "" {
		errs = append(errs, stages.FieldErr("group", errors.New("is required")))
	}
	if c.StartAt != "beginning" && c.StartAt != "end" {
		errs = append(errs, stages.FieldErr("start_at", fmt.Errorf("must be beginning or end, got %q", c.StartAt)))
	}
	if c.SessionTimeout < 100*time.Millisecond {
		errs = append(errs, stages.FieldErr("session_timeout", fmt.Errorf("must be at least 100ms, got %v", c.SessionTimeout)))
	}
	if c.MaxLineBytes <= 0 {
		errs = append(errs, stages.FieldErr("max_line_bytes", errors.New("must be positive")))
	}
	return errors.Join(errs...)
}

// ProducesFields implements stages.FieldsProducer: with metadata, records
// are JSON objects with _meta.
func (c *SourceConfig) ProducesFields() bool { return c.Metadata }

// tp is a topic partition.
type tp struct {
	topic string
	part  int32
}

// sourceState is a source's checkpoint: the next offset of every
// partition, per topic.
type sourceState map[string]map[int32]int64

// Source is the `kafka` source. It consumes its topics in a consumer
// group with the rebalance blocked after each poll (BlockRebalanceOnPoll):
// when the group wants to rebalance, the source stops returning records
// until a checkpoint covering everything it returned has committed, then
// commits those offsets and lets the rebalance go on. So a partition
// changes hands at exactly the offset the checkpoint holds. Offsets are
// otherwise committed to the group at each checkpoint commit (Committed);
// the checkpoint itself holds every partition's next offset, which is
// where a restarted instance resumes (or the group's, when newer).
type Source struct {
	s   stages.Settings
	c   *SourceConfig
	log zerolog.Logger
	h   health

	cl   *kgo.Client
	gate stages.FeedGate

	// wake is signalled when the group wants to rebalance or a feed
	// may have room; rebalance says the former.
	wake      chan struct{}
	rebalance atomic.Bool

	mu        sync.Mutex // the fields below are also used by the group's callbacks
	pos       map[tp]int64
	committed map[tp]int64 // what the group has from this source
	owned     map[tp]bool
	origins   map[tp]*stages.Origin
	byOrigin  map[*stages.Origin]tp
	pending   []*kgo.Record // polled, not yet returned
	cancel    context.CancelFunc

	closed  bool
	lastLog string
	commits prometheus.Counter
}

var (
	_ stages.Stateful       = (*Source)(nil)
	_ stages.Committer      = (*Source)(nil)
	_ stages.HealthReporter = (*Source)(nil)
	_ stages.GatedSource    = (*Source)(nil)
)

// NewSource builds a source; Open connects.
func NewSource(s stages.Settings, c *SourceConfig) *Source {
	return &Source{
		s: s, c: c, log: s.Logger,
		wake:      make(chan struct{}, 1),
		pos:       map[tp]int64{},
		committed: map[tp]int64{},
		owned:     map[tp]bool{},
		origins:   map[tp]*stages.Origin{},
		byOrigin:  map[*stages.Origin]tp{},
		commits:   s.Counter("etld_kafka_offset_commits_total", "Offset commits of a kafka source to its consumer group."),
	}
}

// SetFeedGate implements stages.GatedSource: each partition is a feed.
func (s *Source) SetFeedGate(g stages.FeedGate) { s.gate = g }

// Health implements stages.HealthReporter.
func (s *Source) Health() error { return s.h.get() }

// Restore implements stages.Stateful.
func (s *Source) Restore(state []byte) error {
	var st sourceState
	if err := json.Unmarshal(state, &st); err != nil {
		return fmt.Errorf("kafka source %q: bad state: %w", s.s.ID, err)
	}
	for t, parts := range st {
		for p, o := range parts {
			s.pos[tp{t, p}] = o
			s.committed[tp{t, p}] = o
		}
	}
	return nil
}

// State implements stages.Stateful.
func (s *Source) State() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := sourceState{}
	for k, o := range s.pos {
		if st[k.topic] == nil {
			st[k.topic] = map[int32]int64{}
		}
		st[k.topic][k.part] = o
	}
	return json.Marshal(st)
}

// Open connects and joins the group. A cluster that cannot be reached is
// retried in the background; bad credentials and missing topics are
// errors.
func (s *Source) Open(ctx context.Context) error {
	if s.closed {
		return errors.New("kafka source: open after close")
	}
	opts, err := s.c.ClusterConfig.opts(&s.h, "etld-"+s.s.Pipeline+"-"+s.s.ID)
	if err != nil {
		return fmt.Errorf("kafka source %q: %w", s.s.ID, err)
	}
	start := kgo.NewOffset().AtStart()
	if s.c.StartAt == "end" {
		start = kgo.NewOffset().AtEnd()
	}
	opts = append(opts,
		kgo.ConsumeTopics(s.c.Topics...),
		kgo.ConsumerGroup(s.c.Group),
		kgo.ConsumeResetOffset(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(s.c.SessionTimeout),
		kgo.HeartbeatInterval(min(3*time.Second, s.c.SessionTimeout/3)),
		kgo.FetchMaxBytes(4<<20),
		kgo.FetchMaxPartitionBytes(1<<20),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) { s.wantRebalance() }),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.assigned(m) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.revoked(m) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) { s.revoked(m) }),
		kgo.AdjustFetchOffsetsFn(s.adjustOffsets),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka source %q: %w", s.s.ID, err)
	}
	if err := checkCluster(ctx, cl, &s.h, s.c.Topics, "kafka source "+strconv.Quote(s.s.ID)); err != nil {
		cl.Close()
		return err
	}
	s.cl = cl
	registerSource(s)
	return nil
}

// adjustOffsets starts a partition at the checkpoint's offset when the
// group's committed one is older (a crash after the checkpoint was saved
// and before the group commit).
func (s *Source) adjustOffsets(_ context.Context, m map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, parts := range m {
		for p, o := range parts {
			ours, ok := s.pos[tp{t, p}]
			if !ok {
				continue
			}
			if group := o.EpochOffset().Offset; group < ours {
				parts[p] = kgo.NewOffset().At(ours)
			}
		}
	}
	return m, nil
}

func (s *Source) assigned(m map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t, parts := range m {
		for _, p := range parts {
			k := tp{t, p}
			s.owned[k] = true
			if s.gate != nil {
				s.gate.Register(s.origin(k).Path)
			}
		}
	}
}

// revoked forgets partitions that left this member: their records polled
// and not returned (the next owner reads them), their position and feed.
func (s *Source) revoked(m map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gone := map[tp]bool{}
	for t, parts := range m {
		for _, p := range parts {
			k := tp{t, p}
			gone[k] = true
			delete(s.owned, k)
			delete(s.pos, k)
			delete(s.committed, k)
			if s.gate != nil {
				s.gate.End(s.origin(k).Path)
			}
		}
	}
	s.pending = slices.DeleteFunc(s.pending, func(r *kgo.Record) bool { return gone[tp{r.Topic, r.Partition}] })
}

func (s *Source) wantRebalance() {
	s.rebalance.Store(true)
	s.mu.Lock()
	if s.cancel != nil {
		s.cancel() // interrupt a poll that waits for records
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// origin returns the Origin of a partition (one per partition: a feed).
// Called with mu held.
func (s *Source) origin(k tp) *stages.Origin {
	o := s.origins[k]
	if o == nil {
		o = &stages.Origin{Source: s.s.ID, Path: k.topic + "/" + strconv.Itoa(int(k.part))}
		s.origins[k] = o
		s.byOrigin[o] = k
	}
	return o
}

// covered reports whether the group has everything returned so far.
// Called with mu held.
func (s *Source) covered() bool {
	for k, o := range s.pos {
		if c, ok := s.committed[k]; s.owned[k] && (!ok || c != o) {
			return false
		}
	}
	return true
}

// allowIfCovered lets a waiting rebalance go on once nothing returned is
// uncommitted. It reports whether reading may go on.
func (s *Source) allowIfCovered() bool {
	if !s.rebalance.Load() {
		return true
	}
	s.mu.Lock()
	ok := s.covered()
	var rewind map[string]map[int32]kgo.EpochOffset
	if ok && len(s.pending) > 0 {
		// Records polled but not returned may belong to partitions the
		// rebalance takes away, and once it has begun nothing tells
		// which in time: give them all back (the client fetches the
		// partitions it keeps again from there).
		rewind = map[string]map[int32]kgo.EpochOffset{}
		for _, r := range s.pending {
			if rewind[r.Topic] == nil {
				rewind[r.Topic] = map[int32]kgo.EpochOffset{}
			}
			if _, seen := rewind[r.Topic][r.Partition]; !seen {
				rewind[r.Topic][r.Partition] = kgo.EpochOffset{Epoch: -1, Offset: r.Offset}
			}
		}
		clear(s.pending)
		s.pending = s.pending[:0]
	}
	s.mu.Unlock()
	if !ok {
		return false
	}
	if rewind != nil {
		s.cl.SetOffsets(rewind)
	}
	s.rebalance.Store(false)
	s.cl.AllowRebalance()
	return true
}

// Read returns the records polled, at most a batch's worth; with a feed
// gate, records of one partition with room.
func (s *Source) Read(ctx context.Context) (*stages.Batch, error) {
	if s.cl == nil || s.closed {
		return nil, errors.New("kafka source: read before open or after close")
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !s.allowIfCovered() {
			// Wait for the checkpoint that covers what was returned:
			// the runtime interrupts this Read for its barrier.
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-s.wake:
				continue
			}
		}
		s.mu.Lock()
		b := s.take()
		waiting := b == nil && len(s.pending) > 0
		s.mu.Unlock()
		if b != nil {
			return b, nil
		}
		if waiting { // every partition with records lacks room
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-s.gate.Changed():
			case <-s.wake:
			}
			continue
		}
		if err := s.poll(ctx); err != nil {
			return nil, err
		}
	}
}

// poll adds the records of one poll to pending.
func (s *Source) poll(ctx context.Context) error {
	pctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()
	if s.rebalance.Load() {
		cancel() // wanted between the check in Read and here
	}
	fs := s.cl.PollRecords(pctx, batchMaxRecords)
	s.mu.Lock()
	s.cancel = nil
	s.mu.Unlock()
	cancel()
	if fs.IsClientClosed() {
		return errors.New("kafka source: client closed")
	}
	var failed error
	fs.EachError(func(t string, p int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		failed = fmt.Errorf("fetch %s/%d: %w", t, p, err)
	})
	if failed != nil {
		s.h.set(failed)
		if msg := failed.Error(); msg != s.lastLog {
			s.lastLog = msg
			s.log.Warn().Err(failed).Msg("kafka source: fetch failed; retrying")
		}
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	if fs.NumRecords() > 0 {
		s.lastLog = ""
		s.h.set(nil)
		s.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			if s.owned[tp{r.Topic, r.Partition}] || s.gate == nil {
				s.pending = append(s.pending, r)
			}
		})
		s.mu.Unlock()
	}
	return nil
}

// take moves pending records into a batch: up to the batch limits, of
// one partition with room when there is a gate. nil when none may go.
// Called with mu held.
func (s *Source) take() *stages.Batch {
	if len(s.pending) == 0 {
		return nil
	}
	var feed *tp
	if s.gate != nil {
		for _, r := range s.pending {
			k := tp{r.Topic, r.Partition}
			if s.gate.Allow(s.origin(k).Path) {
				feed = &k
				break
			}
		}
		if feed == nil {
			return nil
		}
	}
	b := &stages.Batch{Records: stages.NewRecords(min(len(s.pending), batchMaxRecords))}
	var buf []byte // metadata records
	bytes, kept := 0, s.pending[:0]
	for i, r := range s.pending {
		k := tp{r.Topic, r.Partition}
		if (feed != nil && k != *feed) || len(b.Records) >= batchMaxRecords || bytes >= batchMaxBytes {
			kept = append(kept, s.pending[i])
			continue
		}
		bytes += len(r.Value)
		s.pos[k] = r.Offset + 1
		rec := stages.Record{Raw: r.Value[:len(r.Value):len(r.Value)], Origin: s.origin(k), Offset: r.Offset}
		if max := int(s.c.MaxLineBytes); len(r.Value) > max {
			rec.Raw = slices.Clone(r.Value[:max])
			b.Rejects = append(b.Rejects, stages.Reject{Record: rec,
				Err: fmt.Errorf("message of %d bytes exceeds max_line_bytes (%d)", len(r.Value), max), Length: int64(len(r.Value))})
			continue
		}
		if s.c.Metadata {
			var err error
			if buf, err = appendWithMeta(buf, r); err != nil {
				b.Rejects = append(b.Rejects, stages.Reject{Record: rec, Err: err})
				continue
			}
		}
		b.Records = append(b.Records, rec)
	}
	clear(s.pending[len(kept):])
	s.pending = kept
	if s.c.Metadata && buf != nil {
		s.pointIntoMeta(b, buf)
	}
	if s.gate != nil {
		s.gate.Take(s.origin(*feed).Path, b)
	}
	return b
}

// pointIntoMeta makes the records of b, whose values appendWithMeta wrote
// one after the other into buf, point at their objects in buf. buf is
// handed to b.
func (s *Source) pointIntoMeta(b *stages.Batch, buf []byte) {
	b.Own(buf)
	off := 0
	for i := range b.Records {
		r := &b.Records[i]
		n := int(metaLen(buf[off:]))
		obj := buf[off+4 : off+4+n : off+4+n]
		r.SetParsed(obj) // Line keeps the value as it came
		off += 4 + n
	}
}

// appendWithMeta appends to buf the length (4 bytes) and the value of r,
// a JSON object, with _meta added.
func appendWithMeta(buf []byte, r *kgo.Record) ([]byte, error) {
	obj, err := jsonrec.ValidObject(r.Value)
	if err != nil {
		return buf, fmt.Errorf("metadata: true needs a JSON object value: %w", err)
	}
	if buf == nil {
		buf = stages.NewBuffer(64 << 10)
	}
	at := len(buf)
	buf = append(buf, 0, 0, 0, 0)
	meta := append(jsonrec.AppendKey(nil, "_meta"), `{"topic":`...)
	meta = jsonrec.AppendString(meta, r.Topic)
	meta = append(meta, `,"partition":`...)
	meta = strconv.AppendInt(meta, int64(r.Partition), 10)
	meta = append(meta, `,"offset":`...)
	meta = strconv.AppendInt(meta, r.Offset, 10)
	meta = append(meta, `,"key":`...)
	if r.Key == nil {
		meta = append(meta, "null"...)
	} else {
		meta = jsonrec.AppendString(meta, string(r.Key))
	}
	meta = append(meta, `,"headers":{`...)
	for i, h := range r.Headers {
		if i > 0 {
			meta = append(meta, ',')
		}
		meta = jsonrec.AppendKey(meta, h.Key)
		meta = jsonrec.AppendString(meta, string(h.Value))
	}
	meta = append(meta, `},"timestamp":`...)
	meta = jsonrec.AppendString(meta, r.Timestamp.UTC().Format(time.RFC3339Nano))
	meta = append(meta, '}')
	buf, ok := jsonrec.AppendMembers(buf, obj, meta)
	if !ok {
		return buf[:at], errors.New("metadata: value is not a JSON object")
	}
	n := len(buf) - at - 4
	buf[at], buf[at+1], buf[at+2], buf[at+3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	return buf, nil
}

func metaLen(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// Committed implements stages.Committer: it commits the state's offsets
// of the partitions this member still owns to the group.
func (s *Source) Committed(ctx context.Context, state []byte) error {
	var st sourceState
	if err := json.Unmarshal(state, &st); err != nil {
		return fmt.Errorf("kafka source %q: bad state: %w", s.s.ID, err)
	}
	if s.cl == nil {
		return nil
	}
	commit := map[string]map[int32]kgo.EpochOffset{}
	s.mu.Lock()
	for t, parts := range st {
		for p, o := range parts {
			k := tp{t, p}
			if !s.owned[k] {
				continue
			}
			if commit[t] == nil {
				commit[t] = map[int32]kgo.EpochOffset{}
			}
			commit[t][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
		}
	}
	s.mu.Unlock()
	if len(commit) == 0 {
		return nil
	}
	var cerr error
	s.cl.CommitOffsetsSync(ctx, commit, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if e := kerr.ErrorForCode(p.ErrorCode); e != nil && cerr == nil {
					cerr = fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, e)
				}
			}
		}
	})
	if cerr != nil {
		return fmt.Errorf("kafka source %q: commit offsets: %w", s.s.ID, cerr)
	}
	s.commits.Inc()
	s.mu.Lock()
	for t, parts := range commit {
		for p, o := range parts {
			s.committed[tp{t, p}] = o.Offset
		}
	}
	s.mu.Unlock()
	s.allowIfCovered()
	return nil
}

// Close leaves the group. Offsets were committed by Committed.
func (s *Source) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.cl != nil {
		unregisterSource(s)
		s.cl.AllowRebalance()
		s.cl.Close()
	}
	return nil
}
