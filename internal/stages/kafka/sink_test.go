package kafka

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etld/etld/internal/kafkatest"
	"github.com/etld/etld/internal/stages"
)

func sinkConfig(c *kafkatest.Cluster, topic string) *SinkConfig {
	cfg := NewSinkConfig()
	cfg.Brokers, cfg.Topic = c.Brokers, topic
	return cfg
}

func openSink(t *testing.T, cfg *SinkConfig, id string) *Sink {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	s := NewSink(settings(t, id), cfg)
	if err := s.Open(context.Background()); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func batchOf(values []string, parsed bool) *stages.Batch {
	b := &stages.Batch{}
	for _, v := range values {
		b.Records = append(b.Records, stages.Record{Raw: []byte(v), Parsed: parsed, Offset: -1})
	}
	return b
}

// TestSinkProducesAndFlushes: after Flush every record is in the topic,
// keyed by the key field; a record over max_message_bytes is a
// permanent error at that record, the ones before it taken.
func TestSinkProducesAndFlushes(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "out", 2)
	cfg := sinkConfig(c, topic)
	cfg.Key, cfg.MaxMessageBytes = "user", 100
	s := openSink(t, cfg, "out")
	want := []string{`{"user":"ann","n":1}`, `{"user":"b\"ob","n":2}`, `{"n":3}`, `{"user":7,"n":4}`}
	ctx := context.Background()
	if err := s.Write(ctx, batchOf(want, true)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	big := batchOf([]string{`{"n":5}`, strings.Repeat("x", 101), `{"n":6}`}, false)
	err := s.Write(ctx, big)
	if !stages.IsPermanent(err) || len(big.Records) != 2 || len(big.Records[0].Raw) != 101 {
		t.Fatalf("Write of an over-long record = %v with %d left, want a permanent error at it", err, len(big.Records))
	}
	if err := s.Write(ctx, &stages.Batch{Records: big.Records[1:]}); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	recs := c.Consume(t, topic, 6, testTimeout)
	got := map[string]string{}
	for _, r := range recs {
		got[string(r.Value)] = string(r.Key)
	}
	wantKeys := map[string]string{want[0]: "ann", want[1]: `b"ob`, want[2]: "", want[3]: "7", `{"n":5}`: "", `{"n":6}`: ""}
	if len(recs) != 6 || len(got) != 6 {
		t.Fatalf("topic holds %d records, want 6", len(recs))
	}
	for v, k := range wantKeys {
		if gk, ok := got[v]; !ok || gk != k {
			t.Errorf("record %s: key %q (present %v), want %q", v, gk, ok, k)
		}
	}
}

// TestSinkTransactional: records of a kafka source go out in a
// transaction with the source's offsets; until Flush a read_committed
// reader sees nothing, after it everything, and the group has the
// offsets. A transaction left open by a crashed sink is aborted when its
// successor (same transactional id) opens.
func TestSinkTransactional(t *testing.T) {
	c := kafkatest.Start(t)
	in := c.CreateTopic(t, "txin", 2)
	out := c.CreateTopic(t, "txout", 1)
	group := kafkatest.Name("g")
	want := lines("tx", 600)
	c.Produce(t, in, want)
	src := openSource(t, sourceConfig(c, in, group), nil)
	cfg := sinkConfig(c, out)
	cfg.Transactional, cfg.TransactionalID = true, kafkatest.Name("txid")
	ctx := context.Background()

	// A crashed predecessor: it wrote records in a transaction it never
	// committed.
	crashed := openSink(t, cfg, "out")
	if err := crashed.Write(ctx, batchOf([]string{"ghost"}, false)); err != nil {
		t.Fatal(err)
	}
	if err := crashed.cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	crashed.cl.Close() // no commit, no abort: like kill -9
	crashed.closed = true
	sink := openSink(t, cfg, "out") // fences the crashed one

	recs, _ := readN(t, src, 300)
	b := &stages.Batch{Records: recs}
	if err := sink.Write(ctx, b); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := sink.cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.Consume(t, out, 1, time.Second); len(got) != 0 {
		t.Fatalf("read_committed reader sees %d records before the commit", len(got))
	}
	if err := sink.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	got := kafkatest.Values(c.Consume(t, out, len(recs), testTimeout))
	if !slices.Equal(sorted(got), sorted(raws(recs))) {
		t.Fatalf("after the commit the topic holds %d records, want the %d written (no ghost)", len(got), len(recs))
	}
	next := map[int32]int64{}
	for _, r := range recs {
		k, _ := src.partitionOf(r.Origin)
		next[k.part] = max(next[k.part], r.Offset+1)
	}
	committed := c.Committed(t, group)[in]
	for p, o := range next {
		if committed[p] != o {
			t.Errorf("partition %d: group offset %d, want %d (committed in the transaction)", p, committed[p], o)
		}
	}
}

// TestSinkBrokerOutage: with the broker down, the sink reports itself
// unhealthy and Flush waits; once the broker is back every record is in
// the topic and the sink is healthy again.
func TestSinkBrokerOutage(t *testing.T) {
	c := kafkatest.StartFake(t)
	topic := c.CreateTopic(t, "outage", 1)
	s := openSink(t, sinkConfig(c, topic), "out")
	ctx := context.Background()
	first := lines("before", 100)
	if err := s.Write(ctx, batchOf(first, false)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	c.Stop(t)
	second := lines("during", 100)
	if err := s.Write(ctx, batchOf(second, false)); err != nil {
		t.Fatal(err)
	}
	flushed := make(chan error, 1)
	go func() { flushed <- s.Flush(ctx) }()
	deadline := time.Now().Add(testTimeout)
	for s.Health() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the sink stayed healthy with its broker down")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("unhealthy: %v", s.Health())
	select {
	case err := <-flushed:
		t.Fatalf("Flush returned %v with the broker down", err)
	default:
	}
	c.Restart(t)
	for err := <-flushed; err != nil; err = s.Flush(ctx) {
		t.Logf("Flush after the outage: %v (retrying, as the runtime does)", err)
	}
	if err := s.Health(); err != nil {
		t.Errorf("still unhealthy after the broker came back: %v", err)
	}
	got := kafkatest.Values(c.ReadAll(t, topic))
	want := append(first, second...)
	for _, v := range want {
		if !slices.Contains(got, v) {
			t.Fatalf("record %s lost over the outage (topic holds %d records)", v, len(got))
		}
	}
	t.Logf("%d records for %d written (at least once)", len(got), len(want))
}
