// Package kafkatest gives tests a Kafka cluster: franz-go's kfake,
// started in the test process on 127.0.0.1, or the external brokers named
// by ETLD_TEST_KAFKA_BROKERS (comma-separated host:port), so that the same
// tests run against a real Kafka:
//
//	ETLD_TEST_KAFKA_BROKERS=127.0.0.1:9092 go test ./internal/stages/kafka ./e2e -run Kafka
//
// Every test gets topics and groups of its own (unique names), so tests
// do not see each other's data on a shared external cluster. Against an
// external cluster, the tests that stop and restart the broker or need
// SASL still use kfake (StartFake), and group session timeouts are 6s
// instead of 1s (see SessionTimeout).
package kafkatest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// EnvBrokers names the external brokers to test against.
const EnvBrokers = "ETLD_TEST_KAFKA_BROKERS"

// Cluster is a Kafka cluster for a test.
type Cluster struct {
	Brokers []string
	fake    *kfake.Cluster // nil: external
	opts    []kfake.Opt
	client  []kgo.Opt // of the helpers' own clients
}

var seq atomic.Int64

// Start returns a cluster for t, closed at the end of t: external when
// ETLD_TEST_KAFKA_BROKERS is set, else an in-process kfake cluster with
// one broker.
func Start(t testing.TB) *Cluster {
	t.Helper()
	if env := os.Getenv(EnvBrokers); env != "" {
		return &Cluster{Brokers: strings.Split(env, ",")}
	}
	return StartFake(t)
}

// StartFake starts an in-process kfake cluster (also with
// ETLD_TEST_KAFKA_BROKERS set), with a data directory so that Restart
// keeps the data, and session timeouts allowed down to 100ms.
func StartFake(t testing.TB) *Cluster {
	t.Helper()
	return startFake(t, nil, nil)
}

// StartFakeSASL starts an in-process cluster that requires SASL with the
// mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512), user and password.
func StartFakeSASL(t testing.TB, mechanism, user, pass string) *Cluster {
	t.Helper()
	var m sasl.Mechanism
	switch mechanism {
	case "PLAIN":
		m = plain.Auth{User: user, Pass: pass}.AsMechanism()
	case "SCRAM-SHA-256":
		m = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	default:
		m = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	}
	return startFake(t, []kfake.Opt{kfake.EnableSASL(), kfake.Superuser(mechanism, user, pass)}, []kgo.Opt{kgo.SASL(m)})
}

func startFake(t testing.TB, extra []kfake.Opt, client []kgo.Opt) *Cluster {
	t.Helper()
	c := &Cluster{opts: append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.GroupMinSessionTimeout(100 * time.Millisecond),
		kfake.DataDir(t.TempDir()),
	}, extra...), client: client}
	fake, err := kfake.NewCluster(c.opts...)
	if err != nil {
		t.Fatalf("kafkatest: start kfake: %v", err)
	}
	c.fake = fake
	c.Brokers = fake.ListenAddrs()
	t.Cleanup(func() {
		if c.fake != nil {
			c.fake.Close()
		}
	})
	return c
}

// SessionTimeout is the consumer-group session timeout tests should
// use: 1s on kfake, so that a killed member leaves its group quickly; 6s
// (Kafka's default group.min.session.timeout.ms) on external brokers.
func (c *Cluster) SessionTimeout() time.Duration {
	if c.Fake() {
		return time.Second
	}
	return 6 * time.Second
}

// Fake reports whether the cluster is in-process (Stop and Restart work).
func (c *Cluster) Fake() bool { return c.fake != nil || c.opts != nil }

// Stop stops an in-process cluster (a broker outage); Restart brings it
// back on the same port with the same data.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if c.fake == nil {
		t.Skip("kafkatest: cannot stop an external cluster")
	}
	c.fake.Close()
	c.fake = nil
}

// Restart restarts a cluster stopped by Stop.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	var port int
	if _, err := fmt.Sscanf(c.Brokers[0][strings.LastIndexByte(c.Brokers[0], ':')+1:], "%d", &port); err != nil {
		t.Fatalf("kafkatest: port of %s: %v", c.Brokers[0], err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		fake, err := kfake.NewCluster(append(c.opts, kfake.Ports(port))...)
		if err == nil {
			c.fake = fake
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("kafkatest: restart kfake on port %d: %v", port, err)
		}
		time.Sleep(50 * time.Millisecond) // the port is still being released
	}
}

// Name returns a name unique in this process for a topic or group.
func Name(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1))
}

// Client returns a client of the cluster with opts; the caller closes it.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	all := append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, c.client...)
	cl, err := kgo.NewClient(append(all, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: client: %v", err)
	}
	return cl
}

// CreateTopic creates a topic with partitions and returns its name (a
// unique name with prefix).
func (c *Cluster) CreateTopic(t testing.TB, prefix string, partitions int32) string {
	t.Helper()
	name := Name(prefix)
	cl := c.Client(t)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := NewTopic(ctx, cl, name, partitions); err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	return name
}

// NewTopic creates topic with partitions (replication factor 1).
func NewTopic(ctx context.Context, cl *kgo.Client, topic string, partitions int32) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, partitions, 1
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 10000
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for _, tr := range resp.Topics {
		if tr.ErrorCode != 0 {
			return fmt.Errorf("create topic %s: %w", topic, kerr.ErrorForCode(tr.ErrorCode))
		}
	}
	return nil
}

// EndOffsets returns the end offset of every partition of topic: the
// last stable offset (what a read_committed reader reaches) when stable,
// else the high watermark.
func EndOffsets(ctx context.Context, cl *kgo.Client, topic string, stable bool) (map[int32]int64, error) {
	meta, err := (&kmsg.MetadataRequest{Topics: []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr(topic)}}}).RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	if len(meta.Topics) != 1 || meta.Topics[0].ErrorCode != 0 {
		return nil, fmt.Errorf("metadata of %s: no such topic", topic)
	}
	lo := kmsg.NewPtrListOffsetsRequest()
	if stable {
		lo.IsolationLevel = 1
	}
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = topic
	for _, p := range meta.Topics[0].Partitions {
		lp := kmsg.NewListOffsetsRequestTopicPartition()
		lp.Partition, lp.Timestamp = p.Partition, -1
		lt.Partitions = append(lt.Partitions, lp)
	}
	lo.Topics = append(lo.Topics, lt)
	resp, err := lo.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	end := map[int32]int64{}
	for _, rt := range resp.Topics {
		for _, p := range rt.Partitions {
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return nil, fmt.Errorf("list offsets of %s/%d: %w", topic, p.Partition, err)
			}
			end[p.Partition] = p.Offset
		}
	}
	return end, nil
}

// Produce writes values to topic, round-robin over its partitions when
// they have no key, and waits for every ack.
func (c *Cluster) Produce(t testing.TB, topic string, values []string) {
	t.Helper()
	cl := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs := make([]*kgo.Record, len(values))
	for i, v := range values {
		recs[i] = &kgo.Record{Value: []byte(v)}
	}
	for i := 0; i < len(recs); i += 10000 {
		if err := cl.ProduceSync(ctx, recs[i:min(i+10000, len(recs))]...).FirstErr(); err != nil {
			t.Fatalf("kafkatest: produce to %s: %v", topic, err)
		}
	}
}

// Consume reads topic from the start as a read_committed reader until n
// records came (or the deadline), and returns them.
func (c *Cluster) Consume(t testing.TB, topic string, n int, deadline time.Duration) []*kgo.Record {
	t.Helper()
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

// Values returns the values of recs as strings.
func Values(recs []*kgo.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Value)
	}
	return out
}

// Committed returns the offsets committed by group, per topic and
// partition.
func (c *Cluster) Committed(t testing.TB, group string) map[string]map[int32]int64 {
	t.Helper()
	cl := c.Client(t)
	defer cl.Close()
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group = group
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("kafkatest: fetch offsets of %s: %v", group, err)
	}
	out := map[string]map[int32]int64{}
	for _, tp := range resp.Topics {
		for _, p := range tp.Partitions {
			if out[tp.Topic] == nil {
				out[tp.Topic] = map[int32]int64{}
			}
			out[tp.Topic][p.Partition] = p.Offset
		}
	}
	return out
}

// ReadAll returns every record of topic that a read_committed reader
// sees now: all partitions up to their last stable offset, in partition
// then offset order.
func (c *Cluster) ReadAll(t testing.TB, topic string) []*kgo.Record {
	t.Helper()
	cl := c.Client(t)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ends, err := EndOffsets(ctx, cl, topic, true)
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	end := map[int32]int64{}
	for p, o := range ends {
		if o > 0 {
			end[p] = o
		}
	}
	byPart := map[int32][]*kgo.Record{}
	if len(end) > 0 {
		rd := c.Client(t, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		defer rd.Close()
		done := func() bool {
			for p, e := range end {
				n := len(byPart[p])
				if n == 0 || byPart[p][n-1].Offset+1 < e {
					return false
				}
			}
			return true
		}
		for !done() {
			// Transaction markers take offsets too, so a partition
			// whose last offsets are markers never reaches its end in
			// records: a second without any record ends the read.
			pctx, pcancel := context.WithTimeout(ctx, time.Second)
			fs := rd.PollFetches(pctx)
			pcancel()
			if ctx.Err() != nil {
				t.Fatalf("kafkatest: reading %s to its end: %v", topic, ctx.Err())
			}
			if fs.NumRecords() == 0 && pctx.Err() != nil && len(byPart) > 0 {
				break
			}
			fs.EachRecord(func(r *kgo.Record) {
				if r.Offset < end[r.Partition] {
					byPart[r.Partition] = append(byPart[r.Partition], r)
				}
			})
		}
	}
	var out []*kgo.Record
	for p := int32(0); p < int32(len(ends)); p++ {
		out = append(out, byPart[p]...)
	}
	return out
}

// Members returns how many members group has that are assigned
// partitions (the group is stable with them).
func (c *Cluster) Members(t testing.TB, group string) int {
	t.Helper()
	cl := c.Client(t)
	defer cl.Close()
	req := kmsg.NewPtrDescribeGroupsRequest()
	req.Groups = []string{group}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || len(resp.Groups) != 1 {
		return 0
	}
	g := resp.Groups[0]
	if g.State != "Stable" {
		return 0
	}
	n := 0
	for _, m := range g.Members {
		if len(m.MemberAssignment) > 0 {
			n++
		}
	}
	return n
}
