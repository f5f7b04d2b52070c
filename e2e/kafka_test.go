//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/etld/etld/internal/kafkatest"
)

// The Kafka tests run etld against a kfake cluster started in this test
// process (or the brokers of ETLD_TEST_KAFKA_BROKERS, see kafkatest).
// Session timeouts are 1s on kfake, so that a killed member leaves its
// group quickly; checkpoints every 200ms.

// kafkaRecords returns records from..from+n-1 of feed as message values
// and their keys.
func kafkaRecords(feedName string, from, n int) ([]string, []string) {
	data, keys := feed(feedName, from, n)
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"), keys
}

// kafkaFeeder produces records of a feed to a topic in the background,
// a chunk at a time, so that etld is killed while records still come.
type kafkaFeeder struct {
	keys []string
	done chan error
}

func startKafkaFeeder(t *testing.T, c *kafkatest.Cluster, topic, feedName string, n, chunk int) *kafkaFeeder {
	t.Helper()
	values, keys := kafkaRecords(feedName, 0, n)
	f := &kafkaFeeder{keys: keys, done: make(chan error, 1)}
	cl := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	go func() {
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < n; i += chunk {
			recs := make([]*kgo.Record, 0, chunk)
			for _, v := range values[i:min(i+chunk, n)] {
				recs = append(recs, &kgo.Record{Value: []byte(v)})
			}
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				f.done <- err
				return
			}
			<-tick.C
		}
		f.done <- nil
	}()
	t.Cleanup(func() { <-f.done })
	return f
}

// running reports whether the feeder is still producing.
func (f *kafkaFeeder) running() bool { return len(f.done) == 0 }

// kafkaConsumed is how many messages of topic group has committed.
func kafkaConsumed(t *testing.T, c *kafkatest.Cluster, group, topic string) int64 {
	var n int64
	for _, o := range c.Committed(t, group)[topic] {
		n += max(o, 0)
	}
	return n
}

// kafkaPipeline is the start of a pipeline file with source "in" reading
// topic in group, and checkpoints every 200ms; options are more lines of
// the source ("    key: value\n").
func kafkaPipeline(c *kafkatest.Cluster, topic, group, options string) string {
	return fmt.Sprintf(`version: 1
checkpoint_interval: 200ms
sources:
  in:
    type: kafka
    brokers: [%s]
    topics: [%s]
    group: %s
    session_timeout: %v
`, strings.Join(c.Brokers, ", "), topic, group, c.SessionTimeout()) + options
}

// kafkaToFile is a pipeline from topic (group) to the file out/NAME.
func kafkaToFile(c *kafkatest.Cluster, topic, group, name string) string {
	return kafkaPipeline(c, topic, group, "") + `sinks:
  out:
    type: file
    inputs: [in]
    path: out/` + name + "\n"
}

// TestKafkaGroupToFileKill9: one instance reads a three-partition topic
// into a file and is killed with -9 twice while records keep coming: the
// file holds every record exactly once (the checkpoint holds the
// partitions' offsets, the group gets them only once it is saved).
func TestKafkaGroupToFileKill9(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "e2e-kill", 3)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "kafka.yaml", kafkaToFile(c, topic, kafkatest.Name("g"), "out.jsonl"))
	out := filepath.Join(dir, "out", "out.jsonl")
	args := runArgs(cfg, filepath.Join(dir, "state"))

	const n = 60000
	f := startKafkaFeeder(t, c, topic, "k", n, 200)
	lines := &lineCounter{path: out}
	for round := 1; round <= 3; round++ {
		p := startEtld(t, dir, nil, args...)
		if round < 3 {
			target := round * n / 4
			p.eventually(fmt.Sprintf("output reaches %d lines", target), func() bool { return lines.count() >= target })
			p.kill()
			t.Logf("killed with -9 at %d lines (records still coming: %v)", lines.count(), f.running())
			continue
		}
		p.waitForLines(out, n, f.keys)
		p.expectExit(p.stop(), 0, "graceful stop")
	}
	want := f.keys
	checkExactlyOnce(t, "kafka -> file across two kill -9", want, outputKeys(t, out))
}

// TestKafkaTransactionalKill9: kafka -> kafka with transactional: true,
// killed with -9 twice: a read_committed reader of the output topic sees
// every record exactly once.
func TestKafkaTransactionalKill9(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	in := c.CreateTopic(t, "e2e-txin", 3)
	outTopic := c.CreateTopic(t, "e2e-txout", 2)
	group := kafkatest.Name("g")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "tx.yaml", kafkaPipeline(c, in, group, "")+fmt.Sprintf(`workers:
  parse:
    inputs: [in]
    steps:
      - parse_json: {}
sinks:
  out:
    type: kafka
    inputs: [parse]
    brokers: [%s]
    topic: %s
    key: key
    transactional: true
    transactional_id: %s
`, strings.Join(c.Brokers, ", "), outTopic, kafkatest.Name("tx")))
	args := runArgs(cfg, filepath.Join(dir, "state"))

	const n = 60000
	f := startKafkaFeeder(t, c, in, "t", n, 200)
	consumed := func() int64 { return kafkaConsumed(t, c, group, in) }
	for round := 1; round <= 3; round++ {
		p := startEtld(t, dir, nil, args...)
		target := int64(n)
		if round < 3 {
			target = int64(round * n / 4)
		}
		p.eventually(fmt.Sprintf("the group's offsets cover %d records", target), func() bool { return consumed() >= target })
		if round < 3 {
			p.kill()
			t.Logf("killed with -9 at %d records consumed (records still coming: %v)", consumed(), f.running())
			continue
		}
		p.expectExit(p.stop(), 0, "graceful stop")
	}
	want := f.keys
	recs := c.ReadAll(t, outTopic)
	var got []string
	for _, r := range recs {
		k, ok := keyOf(r.Value)
		if !ok || k != string(r.Key) {
			t.Fatalf("output message %s has key %q", r.Value, r.Key)
		}
		got = append(got, k)
	}
	checkExactlyOnce(t, "kafka -> kafka transactional across two kill -9 (read_committed)", want, got)
}

// TestKafkaTwoInstancesGracefulRestart: two instances share a group,
// each writing its own file; one is stopped gracefully while records
// come and started again. Its partitions move to the other instance and
// back at exactly the offsets their checkpoints hold: lost 0, dup 0.
func TestKafkaTwoInstancesGracefulRestart(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "e2e-two", 4)
	group := kafkatest.Name("g")
	dirA, dirB := t.TempDir(), t.TempDir()
	argsA := runArgs(writeConfig(t, dirA, "a.yaml", kafkaToFile(c, topic, group, "a.jsonl")), filepath.Join(dirA, "state"))
	argsB := runArgs(writeConfig(t, dirB, "b.yaml", kafkaToFile(c, topic, group, "b.jsonl")), filepath.Join(dirB, "state"))
	outA, outB := filepath.Join(dirA, "out", "a.jsonl"), filepath.Join(dirB, "out", "b.jsonl")
	la, lb := &lineCounter{path: outA}, &lineCounter{path: outB}
	total := func() int { return la.count() + lb.count() }

	both := func() bool { return c.Members(t, group) == 2 }
	a := startEtld(t, dirA, nil, argsA...)
	b := startEtld(t, dirB, nil, argsB...)
	a.eventually("the group has both instances", both)
	const n = 60000
	f := startKafkaFeeder(t, c, topic, "two", n, 200)
	a.eventually(fmt.Sprintf("A and B wrote %d lines", n/4), func() bool { return total() >= n/4 })
	if la.count() == 0 || lb.count() == 0 {
		t.Errorf("one instance did all the work: A %d, B %d lines", la.count(), lb.count())
	}
	b.expectExit(b.stop(), 0, "graceful stop of B")
	t.Logf("B stopped at %d lines in all (records still coming: %v)", total(), f.running())
	a.eventually(fmt.Sprintf("A wrote %d lines alone", n/2), func() bool { return total() >= n/2 })
	beforeRestart := lb.count()
	b = startEtld(t, dirB, nil, argsB...)
	a.eventually("the group has both instances again", both)
	t.Logf("B back in the group at %d lines in all (records still coming: %v)", total(), f.running())
	a.eventually(fmt.Sprintf("A and B wrote %d lines", n), func() bool { return total() >= n })
	if lb.count() == beforeRestart {
		t.Errorf("B wrote nothing after its restart")
	}
	a.expectExit(a.stop(), 0, "graceful stop of A")
	b.expectExit(b.stop(), 0, "graceful stop of B")
	want := f.keys
	got := append(outputKeys(t, outA), outputKeys(t, outB)...)
	checkExactlyOnce(t, "two instances, one stopped and restarted", want, got)
}

// TestKafkaBrokerDown: the broker is down when etld starts and again
// mid-run. etld keeps running, /readyz says the source is not ready,
// and once the broker is back it goes on by itself: every record once.
func TestKafkaBrokerDown(t *testing.T) {
	t.Parallel()
	c := kafkatest.StartFake(t)
	topic := c.CreateTopic(t, "e2e-down", 2)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "down.yaml", kafkaToFile(c, topic, kafkatest.Name("g"), "out.jsonl"))
	out := filepath.Join(dir, "out", "out.jsonl")

	notReady := func(addr string) func() bool {
		return func() bool {
			code, body := crashGet(addr, "/readyz")
			return code == http.StatusServiceUnavailable && strings.Contains(body, `"in"`)
		}
	}
	ready := func(addr string) func() bool {
		return func() bool { code, _ := crashGet(addr, "/readyz"); return code == http.StatusOK }
	}

	c.Stop(t)
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"), "--admin", "127.0.0.1:0")...)
	addr := crashAdminAddr(t, p)
	p.eventually("/readyz answers 503 naming source \"in\" while the broker is down at start", notReady(addr))
	c.Restart(t)
	values, want := kafkaRecords("down", 0, 10000)
	c.Produce(t, topic, values)
	p.waitForLines(out, len(want), want)
	p.eventually("/readyz answers 200 once the broker is back", ready(addr))

	c.Stop(t)
	p.eventually("/readyz answers 503 while the broker is down mid-run", notReady(addr))
	c.Restart(t)
	values, keys := kafkaRecords("down", 10000, 10000)
	want = append(want, keys...)
	c.Produce(t, topic, values)
	p.waitForLines(out, len(want), want)
	p.eventually("/readyz answers 200 once the broker is back", ready(addr))
	p.expectExit(p.stop(), 0, "graceful stop")
	checkExactlyOnce(t, "kafka -> file with the broker down at start and mid-run", want, outputKeys(t, out))
}

// TestKafkaPoisonToDeadLetter: a message over max_line_bytes and ones that
// are not JSON go to the dead-letter sink with their partition and offset
// as origin; every good record is written once, and the group's offsets
// move past the poison (it blocks no partition).
func TestKafkaPoisonToDeadLetter(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "e2e-poison", 2)
	group := kafkatest.Name("g")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "poison.yaml", kafkaPipeline(c, topic, group, "    max_line_bytes: 1KiB\n")+`dead_letter: rejects
workers:
  parse:
    inputs: [in]
    steps:
      - parse_json: {}
sinks:
  out:
    type: file
    inputs: [parse]
    path: out/out.jsonl
  rejects:
    type: file
    path: out/rejects.jsonl
`)
	values, want := kafkaRecords("p", 0, 2000)
	var bad []string
	for i := 0; i < 10; i++ {
		b := fmt.Sprintf("not json %d", i)
		if i%2 == 1 {
			b = `{"key":"long-` + fmt.Sprint(i) + `","pad":"` + strings.Repeat("x", 2000) + `"}`
		}
		bad = append(bad, b)
		values = append(values[:i*200], append([]string{b}, values[i*200:]...)...)
	}
	c.Produce(t, topic, values)
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	out, rejects := filepath.Join(dir, "out", "out.jsonl"), filepath.Join(dir, "out", "rejects.jsonl")
	p.waitForLines(out, len(want), want)
	rl := &lineCounter{path: rejects}
	p.eventually("10 dead-letter lines", func() bool { return rl.count() >= len(bad) })
	p.eventually("the group's offsets cover every message, poison included", func() bool {
		return kafkaConsumed(t, c, group, topic) == int64(len(values))
	})
	p.expectExit(p.stop(), 0, "graceful stop")
	checkExactlyOnce(t, "good records", want, outputKeys(t, out))
	lines := splitLines(t, "rejects", readFile(t, rejects))
	if len(lines) != len(bad) {
		t.Fatalf("%d dead-letter lines, want %d", len(lines), len(bad))
	}
	for _, l := range lines {
		var dl struct {
			Error, Stage, Source, Origin, Record string
			Length                               int
		}
		if err := json.Unmarshal(l, &dl); err != nil {
			t.Fatalf("dead-letter line %s: %v", l, err)
		}
		if dl.Source != "in" || !strings.HasPrefix(dl.Origin, topic+"/") {
			t.Errorf("dead-letter line without the partition and offset as origin: %s", l)
		}
		if strings.HasPrefix(dl.Record, "not json") == (dl.Length > 0) {
			t.Errorf("dead-letter line: %s", l)
		}
	}
}

// TestKafkaReloadReplacesSource: a reload that changes the kafka source's
// options while records flow replaces it (the new instance joins the
// group before the old one leaves): every record once.
func TestKafkaReloadReplacesSource(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "e2e-reload", 3)
	group := kafkatest.Name("g")
	dir := t.TempDir()
	text := kafkaToFile(c, topic, group, "out.jsonl")
	cfg := writeConfig(t, dir, "reload.yaml", text)
	out := filepath.Join(dir, "out", "out.jsonl")
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	const n = 60000
	f := startKafkaFeeder(t, c, topic, "rl", n, 200)
	lines := &lineCounter{path: out}
	p.eventually("output reaches 10000 lines", func() bool { return lines.count() >= 10000 })
	writeConfig(t, dir, "reload.yaml", strings.Replace(text, "session_timeout: ", "session_timeout: 1", 1)) // a longer session timeout: a new source
	p.eventually("the reload", func() bool { return strings.Contains(p.stderr.String(), `"message":"config reloaded"`) })
	t.Logf("reloaded at %d lines (records still coming: %v)", lines.count(), f.running())
	p.waitForLines(out, n, f.keys)
	p.expectExit(p.stop(), 0, "graceful stop")
	checkExactlyOnce(t, "kafka -> file across a reload that replaces the source", f.keys, outputKeys(t, out))
}

// TestKafkaOrderedMergeOfPartitions: each partition is a feed of an
// ordered merge: records spread over three partitions, each in time
// order but interleaved across them, come out as one timeline.
func TestKafkaOrderedMergeOfPartitions(t *testing.T) {
	t.Parallel()
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "e2e-merge", 3)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "merge.yaml", kafkaPipeline(c, topic, kafkatest.Name("g"), "")+`workers:
  parse:
    inputs: [in]
    ordered: true
    steps:
      - parse_json: {}
sinks:
  timeline:
    type: file
    inputs: [parse]
    path: out/timeline.jsonl
    merge: {order_by: ts, max_lateness: 1s}
`)
	const n = 3000
	var recs []*kgo.Record
	var want []string
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		// Partition i%3 gets every third second: interleaved.
		k := fmt.Sprintf("m-%d", i)
		v := fmt.Sprintf(`{"key":%q,"ts":%q}`, k, base.Add(time.Duration(i)*time.Second).Format(time.RFC3339))
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 3), Value: []byte(v)})
		want = append(want, k)
	}
	cl := c.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	err := cl.ProduceSync(context.Background(), recs...).FirstErr()
	cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	out := filepath.Join(dir, "out", "timeline.jsonl")
	p.waitForLines(out, n, want)
	p.expectExit(p.stop(), 0, "graceful stop")
	got := outputKeys(t, out)
	checkExactlyOnce(t, "merged partitions", want, got)
	if !slices.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("timeline out of order at line %d: %s, want %s", i+1, got[i], want[i])
			}
		}
	}
}

// TestKafkaStartErrors: a missing topic and a wrong password stop etld at
// start as an invalid config (exit 2: the stage marks them
// stages.Misconfigured), the stage and the cause named in the log.
func TestKafkaStartErrors(t *testing.T) {
	t.Parallel()
	c := kafkatest.StartFakeSASL(t, "SCRAM-SHA-256", "etld", "s3cret")
	topic := c.CreateTopic(t, "e2e-start", 1)
	cases := map[string]struct{ topic, password, want string }{
		"missing topic":  {kafkatest.Name("missing"), "s3cret", "does not exist"},
		"wrong password": {topic, "wrong", "SASL authentication failed"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cfg := writeConfig(t, dir, "start.yaml", fmt.Sprintf(`version: 1
sources:
  orders:
    type: kafka
    brokers: [%s]
    topics: [%s]
    group: g
    sasl: {mechanism: scram-sha-256, user: etld, password: %s}
sinks:
  out: {type: file, inputs: [orders], path: out/out.jsonl}
`, strings.Join(c.Brokers, ", "), tc.topic, tc.password))
			p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
			p.expectExit(p.wait(), 2, name)
			if log := p.stderr.String(); !strings.Contains(log, `kafka source \"orders\"`) || !strings.Contains(log, tc.want) {
				t.Errorf("the log does not name the source and say %q:\n%s", tc.want, tail(log, 2048))
			}
		})
	}
}
