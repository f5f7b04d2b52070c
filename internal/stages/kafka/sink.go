package kafka

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// SinkConfig is the config of the `kafka` sink.
type SinkConfig struct {
	ClusterConfig `yaml:",inline"`

	Topic           string          `yaml:"topic" doc:"topic to produce to (required)"`
	Key             string          `yaml:"key" doc:"field whose value is the message key (records in one partition keep their order); empty or missing: no key"`
	Transactional   bool            `yaml:"transactional" doc:"behind a kafka source: commit the messages and the source's consumed offsets in one Kafka transaction per checkpoint, exactly once for read_committed readers"`
	TransactionalID string          `yaml:"transactional_id" doc:"transactional: the producer's transactional id, unique per instance and stable across its restarts (default etld-HOST-PIPELINE-SINK)"`
	MaxMessageBytes stages.ByteSize `yaml:"max_message_bytes" doc:"largest message the topic accepts; a larger record is a bad record (dead letter)"`
}

// NewSinkConfig returns a SinkConfig with its defaults.
func NewSinkConfig() *SinkConfig { return &SinkConfig{MaxMessageBytes: 1000000} }

// Validate implements stages.Validator.
func (c *SinkConfig) Validate() error {
	errs := []error{c.ClusterConfig.validate()}
	if c.Topic == "" {
		errs = append(errs, stages.FieldErr("topic", errors.New("is required")))
	}
	if c.TransactionalID != "" && !c.Transactional {
		errs = append(errs, stages.FieldErr("transactional_id", errors.New("needs transactional: true")))
	}
	if c.MaxMessageBytes <= 0 {
		errs = append(errs, stages.FieldErr("max_message_bytes", errors.New("must be positive")))
	}
	return errors.Join(errs...)
}

// Sink is the `kafka` sink: an idempotent producer with acks from every
// in-sync replica. Write hands records to the client, which batches them;
// Flush waits until every one is acknowledged, so a checkpoint commits
// only what the brokers hold (at least once: after a crash, what came
// after the last checkpoint is produced again).
//
// Transactional, the records between two checkpoints form one Kafka
// transaction, which Flush commits together with the consumed offsets
// of the kafka source the records came from (found by pipeline and
// source id, see register). A crash before the commit leaves the
// transaction to be aborted when the restarted instance fences it (at
// Open, before its source polls), and the source resumes from the
// group's offsets: read_committed readers see each record once.
type Sink struct {
	s   stages.Settings
	c   *SinkConfig
	log zerolog.Logger
	h   health
	cl  *kgo.Client

	mu     sync.Mutex
	failed []*kgo.Record // produces that failed, to produce again
	errs   int

	// Transactional: the open transaction's records (produced again
	// after an abort) and the next offset of each consumed partition,
	// per source id.
	inTxn      bool
	txn        []*kgo.Record
	offsets    map[string]map[tp]int64
	partitions map[*stages.Origin]partitionOf
	topicIDs   map[string][16]byte

	closed   bool
	failures prometheus.Counter
}

var _ stages.HealthReporter = (*Sink)(nil)

// NewSink builds a sink; Open connects.
func NewSink(s stages.Settings, c *SinkConfig) *Sink {
	return &Sink{s: s, c: c, log: s.Logger, offsets: map[string]map[tp]int64{},
		failures: s.Counter("etld_kafka_produce_failures_total", "Records a kafka sink failed to produce and produced again.")}
}

// Health implements stages.HealthReporter.
func (s *Sink) Health() error { return s.h.get() }

func (s *Sink) transactionalID() string {
	if s.c.TransactionalID != "" {
		return s.c.TransactionalID
	}
	host, _ := os.Hostname()
	return "etld-" + host + "-" + s.s.Pipeline + "-" + s.s.ID
}

// Open connects. Transactional, it initialises the producer id first,
// which fences (aborts) a transaction a crashed predecessor left open.
func (s *Sink) Open(ctx context.Context) error {
	if s.closed {
		return errors.New("kafka sink: open after close")
	}
	opts, err := s.c.ClusterConfig.opts(&s.h, "etld-"+s.s.Pipeline+"-"+s.s.ID)
	if err != nil {
		return fmt.Errorf("kafka sink %q: %w", s.s.ID, err)
	}
	opts = append(opts,
		kgo.DefaultProduceTopic(s.c.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchMaxBytes(int32(min(int64(s.c.MaxMessageBytes)+512, 1<<30))),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(8192),
		kgo.MaxBufferedBytes(8<<20),
	)
	if s.c.Transactional {
		opts = append(opts, kgo.TransactionalID(s.transactionalID()), kgo.TransactionTimeout(time.Minute))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka sink %q: %w", s.s.ID, err)
	}
	what := "kafka sink " + fmt.Sprintf("%q", s.s.ID)
	if err := checkCluster(ctx, cl, &s.h, []string{s.c.Topic}, what); err != nil {
		cl.Close()
		return err
	}
	if s.c.Transactional && s.h.get() == nil {
		ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, _, err := cl.ProducerID(ictx)
		cancel()
		if err != nil {
			cl.Close()
			return fmt.Errorf("%s: initialise the transactional producer: %w", what, err)
		}
	}
	s.cl = cl
	return nil
}

// Write hands every record to the producer (which blocks when its buffer
// is full: backpressure). The values are copied into one buffer per batch.
func (s *Sink) Write(ctx context.Context, b *stages.Batch) error {
	if s.cl == nil || s.closed {
		return errors.New("kafka sink: write before open or after close")
	}
	take := len(b.Records) // records before the first over-long one
	for i := range b.Records {
		if len(b.Records[i].Raw) > int(s.c.MaxMessageBytes) {
			take = i
			break
		}
	}
	if err := s.produce(ctx, b.Records[:take]); err != nil {
		return err
	}
	b.Records = b.Records[take:]
	if len(b.Records) > 0 {
		return stages.Permanent(fmt.Errorf("record of %d bytes exceeds max_message_bytes (%d)", len(b.Records[0].Raw), int64(s.c.MaxMessageBytes)))
	}
	return nil
}

// produce hands records to the client.
func (s *Sink) produce(ctx context.Context, records []stages.Record) error {
	if len(records) == 0 {
		return nil
	}
	if s.c.Transactional && !s.inTxn {
		if err := s.cl.BeginTransaction(); err != nil {
			return fmt.Errorf("kafka sink %q: begin transaction: %w", s.s.ID, err)
		}
		s.inTxn = true
	}
	size := 0
	for i := range records {
		size += len(records[i].Raw)
	}
	arena := make([]byte, 0, size)
	recs := make([]kgo.Record, len(records))
	for i := range records {
		r := &records[i]
		at := len(arena)
		arena = append(arena, r.Raw...)
		kr := &recs[i]
		kr.Value = arena[at:len(arena):len(arena)]
		if s.c.Key != "" && r.Parsed {
			kr.Key = keyOf(r.Raw, s.c.Key)
		}
		if s.c.Transactional {
			s.txn = append(s.txn, kr)
			s.note(r)
		}
	}
	for i := range recs {
		// A produce that fails (ctx done at a hard stop) is kept by done
		// and produced again at the next Flush.
		s.cl.Produce(ctx, &recs[i], s.done)
	}
	return nil
}

// note remembers the consumed offset of a record from a kafka source.
func (s *Sink) note(r *stages.Record) {
	if r.Origin == nil || r.Offset < 0 {
		return
	}
	p, seen := s.partitions[r.Origin]
	if !seen {
		if src := lookupSource(s.s.Pipeline, r.Origin.Source); src != nil {
			p.k, p.ok = src.partitionOf(r.Origin)
		}
		if s.partitions == nil {
			s.partitions = map[*stages.Origin]partitionOf{}
		}
		s.partitions[r.Origin] = p
	}
	if !p.ok {
		return
	}
	m := s.offsets[r.Origin.Source]
	if m == nil {
		m = map[tp]int64{}
		s.offsets[r.Origin.Source] = m
	}
	if r.Offset+1 > m[p.k] {
		m[p.k] = r.Offset + 1
	}
}

// partitionOf is the partition of an origin, when it is one of a kafka
// source's.
type partitionOf struct {
	k  tp
	ok bool
}

// done is the produce promise: a failed record is kept to be produced
// again by Flush.
func (s *Sink) done(r *kgo.Record, err error) {
	if err == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs++
	s.failures.Inc()
	if s.errs == 1 || s.errs%1000 == 0 {
		s.log.Warn().Err(err).Int("failed", s.errs).Msg("kafka sink: produce failed; producing again at the next flush")
	}
	s.h.set(fmt.Errorf("produce failed: %w", err))
	if !s.c.Transactional {
		s.failed = append(s.failed, r)
	}
}

// keyOf returns the value of the field name of obj, a JSON object, as a
// key: a string's text, another value's JSON; nil when missing.
func keyOf(obj []byte, name string) []byte {
	m, found, err := jsonrec.Find(obj, name)
	if err != nil || !found {
		return nil
	}
	v := obj[m.Val:m.End]
	if len(v) > 0 && v[0] == '"' {
		if !m.ValEscaped {
			return append([]byte(nil), v[1:len(v)-1]...)
		}
		return jsonrec.AppendUnescaped(nil, v[1:len(v)-1])
	}
	return append([]byte(nil), v...)
}

// Flush waits until the brokers acknowledged every record. Records that
// failed are produced again and Flush fails (the runtime retries it).
// Transactional, it then commits the transaction with the offsets.
func (s *Sink) Flush(ctx context.Context) error {
	if s.cl == nil {
		return nil
	}
	if err := s.cl.Flush(ctx); err != nil {
		return err
	}
	if s.c.Transactional {
		return s.commitTxn(ctx)
	}
	s.mu.Lock()
	again := s.failed
	s.failed = nil
	s.mu.Unlock()
	if len(again) > 0 {
		for _, r := range again {
			s.cl.Produce(ctx, r, s.done)
		}
		return fmt.Errorf("kafka sink %q: %d records failed and are produced again", s.s.ID, len(again))
	}
	s.h.set(nil)
	return nil
}

// commitTxn ends the open transaction: the consumed offsets join it and
// it commits. When it cannot, it aborts and produces the records again
// in a new transaction, and Flush fails (retried).
func (s *Sink) commitTxn(ctx context.Context) error {
	if !s.inTxn {
		return nil
	}
	s.mu.Lock()
	failed := s.errs
	s.errs = 0
	s.mu.Unlock()
	var err error
	if failed > 0 {
		err = fmt.Errorf("%d records failed", failed)
	} else {
		err = s.addOffsets(ctx)
	}
	if err == nil {
		err = s.cl.EndTransaction(ctx, kgo.TryCommit)
		if err == nil {
			clear(s.txn)
			s.inTxn, s.txn = false, s.txn[:0]
			clear(s.offsets)
			s.h.set(nil)
			return nil
		}
	}
	// Abort and produce the transaction's records again.
	if aerr := s.cl.AbortBufferedRecords(ctx); aerr != nil {
		return aerr
	}
	if aerr := s.cl.EndTransaction(ctx, kgo.TryAbort); aerr != nil {
		return fmt.Errorf("kafka sink %q: abort transaction: %w (after %v)", s.s.ID, aerr, err)
	}
	s.inTxn = false
	if berr := s.cl.BeginTransaction(); berr != nil {
		return fmt.Errorf("kafka sink %q: begin transaction: %w", s.s.ID, berr)
	}
	s.inTxn = true
	for _, r := range s.txn {
		r.Partition, r.Offset = 0, 0
		s.cl.Produce(ctx, r, s.done)
	}
	return fmt.Errorf("kafka sink %q: transaction aborted, producing its records again: %w", s.s.ID, err)
}

// addOffsets adds the consumed offsets to the transaction, per source
// (its consumer group, fenced by its generation).
func (s *Sink) addOffsets(ctx context.Context) error {
	if len(s.offsets) == 0 {
		return nil
	}
	id, epoch, err := s.cl.ProducerID(ctx)
	if err != nil {
		return err
	}
	txnID := s.transactionalID()
	for srcID, parts := range s.offsets {
		src := lookupSource(s.s.Pipeline, srcID)
		if src == nil || src.cl == nil {
			return fmt.Errorf("kafka source %q is gone", srcID)
		}
		group := src.c.Group
		add := kmsg.NewPtrAddOffsetsToTxnRequest()
		add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = txnID, id, epoch, group
		aresp, err := add.RequestWith(ctx, s.cl)
		if err != nil {
			return err
		}
		if err := kerr.ErrorForCode(aresp.ErrorCode); err != nil {
			return fmt.Errorf("add offsets to transaction: %w", err)
		}
		member, gen := src.cl.GroupMetadata()
		commit := kmsg.NewPtrTxnOffsetCommitRequest()
		commit.TransactionalID, commit.Group, commit.ProducerID, commit.ProducerEpoch = txnID, group, id, epoch
		commit.Generation, commit.MemberID = gen, member
		byTopic := map[string]int{}
		for k, o := range parts {
			i, ok := byTopic[k.topic]
			if !ok {
				t := kmsg.NewTxnOffsetCommitRequestTopic()
				t.Topic = k.topic
				if t.TopicID, err = s.topicID(ctx, k.topic); err != nil {
					return err
				}
				commit.Topics = append(commit.Topics, t)
				i = len(commit.Topics) - 1
				byTopic[k.topic] = i
			}
			p := kmsg.NewTxnOffsetCommitRequestTopicPartition()
			p.Partition, p.Offset, p.LeaderEpoch = k.part, o, -1
			commit.Topics[i].Partitions = append(commit.Topics[i].Partitions, p)
		}
		cresp, err := commit.RequestWith(ctx, s.cl)
		if err != nil {
			return err
		}
		for _, t := range cresp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					return fmt.Errorf("commit offsets in transaction, %s/%d: %w", t.Topic, p.Partition, err)
				}
			}
		}
	}
	return nil
}

// topicID returns the id of a topic (newer requests name topics by id).
func (s *Sink) topicID(ctx context.Context, topic string) ([16]byte, error) {
	if id, ok := s.topicIDs[topic]; ok {
		return id, nil
	}
	resp, err := newMetadataRequest([]string{topic}).RequestWith(ctx, s.cl)
	if err != nil {
		return [16]byte{}, err
	}
	for _, t := range resp.Topics {
		if t.Topic != nil && *t.Topic == topic && t.ErrorCode == 0 {
			if s.topicIDs == nil {
				s.topicIDs = map[string][16]byte{}
			}
			s.topicIDs[topic] = t.TopicID
			return t.TopicID, nil
		}
	}
	return [16]byte{}, fmt.Errorf("topic %s: no metadata", topic)
}

// Close flushes (transactional: commits) and disconnects.
func (s *Sink) Close(ctx context.Context) error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.cl == nil {
		return nil
	}
	err := s.Flush(ctx)
	if s.inTxn {
		_ = s.cl.EndTransaction(ctx, kgo.TryAbort)
	}
	s.cl.Close()
	if err != nil {
		return fmt.Errorf("kafka sink %q: close: %w", s.s.ID, err)
	}
	return nil
}

// CheckUpstream implements stages.UpstreamChecker: a transaction commits
// the consumed offsets of a kafka source only, so records from any other
// source are produced at least once across a crash, as without
// transactional.
func (c *SinkConfig) CheckUpstream(sourceTypes []string) error {
	if !c.Transactional {
		return nil
	}
	others := slices.DeleteFunc(slices.Clone(sourceTypes), func(t string) bool { return t == "kafka" })
	switch {
	case len(others) == 0:
		return nil
	case len(others) == len(sourceTypes):
		return stages.FieldErr("transactional", fmt.Errorf("no kafka source feeds this sink (only %s): the transactions commit no consumed offsets, so a crash can produce records again, as without transactional (exactly once needs a kafka source upstream)", strings.Join(others, ", ")))
	default:
		return stages.FieldErr("transactional", fmt.Errorf("records from the %s sources upstream of this sink are produced at least once across a crash: only a kafka source's consumed offsets commit with the transaction", strings.Join(others, ", ")))
	}
}
