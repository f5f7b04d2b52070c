package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/etld/etld/internal/kafkatest"
	"github.com/etld/etld/internal/stages"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds a wait for data: a hang guard, not a speed check.
const testTimeout = 30 * time.Second

func settings(t testing.TB, id string) stages.Settings {
	return stages.Settings{Pipeline: "p-" + t.Name(), ID: id, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
}

func sourceConfig(c *kafkatest.Cluster, topic, group string) *SourceConfig {
	cfg := NewSourceConfig()
	cfg.Brokers, cfg.Topics, cfg.Group = c.Brokers, []string{topic}, group
	cfg.SessionTimeout = c.SessionTimeout()
	return cfg
}

func openSource(t *testing.T, cfg *SourceConfig, state []byte) *Source {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	src := NewSource(settings(t, "src"), cfg)
	if state != nil {
		if err := src.Restore(state); err != nil {
			t.Fatalf("Restore: %v", err)
		}
	}
	if err := src.Open(context.Background()); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src
}

func lines(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"seq":%d,"msg":"%s %d"}`, i, prefix, i)
	}
	return out
}

// readN reads until n records (and rejects) came.
func readN(t *testing.T, src *Source, n int) (recs []stages.Record, rejects []stages.Reject) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for len(recs)+len(rejects) < n {
		b, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("Read: %v after %d records", err, len(recs))
		}
		for _, r := range b.Records {
			r.Raw = slices.Clone(r.Raw)
			recs = append(recs, r)
		}
		rejects = append(rejects, b.Rejects...)
	}
	return recs, rejects
}

func raws(recs []stages.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r.Raw)
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

// TestSourceReadsAllPartitions: every record of a three-partition topic
// comes once, each partition in offset order with its own Origin.
func TestSourceReadsAllPartitions(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "all", 3)
	want := lines("all", 3000)
	c.Produce(t, topic, want)
	src := openSource(t, sourceConfig(c, topic, kafkatest.Name("g")), nil)
	recs, _ := readN(t, src, len(want))
	if got := sorted(raws(recs)); !slices.Equal(got, sorted(want)) {
		t.Fatalf("read %d records, want the %d produced", len(got), len(want))
	}
	last := map[*stages.Origin]int64{}
	for _, r := range recs {
		if prev, ok := last[r.Origin]; ok && r.Offset <= prev {
			t.Fatalf("%s: offset %d after %d", r.Origin.Path, r.Offset, prev)
		}
		last[r.Origin] = r.Offset
	}
	if len(last) != 3 {
		t.Errorf("%d origins, want one per partition (3)", len(last))
	}
}

// TestSourceCommitsOnlyAtCommitted: the group's offsets move when a
// checkpoint commits (Committed), not when records are read; a new
// instance of the group then starts after them.
func TestSourceCommitsOnlyAtCommitted(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "commit", 1)
	group := kafkatest.Name("g")
	want := lines("c", 500)
	c.Produce(t, topic, want)
	cfg := sourceConfig(c, topic, group)
	src := openSource(t, cfg, nil)
	recs, _ := readN(t, src, 200)
	if got := c.Committed(t, group)[topic][0]; got > 0 {
		t.Fatalf("group offset %d before any checkpoint commit, want none", got)
	}
	state, err := src.State()
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Committed(context.Background(), state); err != nil {
		t.Fatalf("Committed: %v", err)
	}
	if got := c.Committed(t, group)[topic][0]; got != int64(len(recs)) {
		t.Fatalf("group offset %d after Committed, want %d", got, len(recs))
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	next := openSource(t, sourceConfig(c, topic, group), nil)
	rest, _ := readN(t, next, len(want)-len(recs))
	if got := append(raws(recs), raws(rest)...); !slices.Equal(got, want) {
		t.Fatalf("second instance did not resume right after the commit: %d + %d records", len(recs), len(rest))
	}
}

// TestSourceRestoreWinsOverOlderGroupOffset: a checkpoint saved but whose
// group commit never happened (kill -9 in between) is where the restored
// source resumes; records before it are not read again.
func TestSourceRestoreWinsOverOlderGroupOffset(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "restore", 2)
	group := kafkatest.Name("g")
	want := lines("r", 1000)
	c.Produce(t, topic, want)
	first := openSource(t, sourceConfig(c, topic, group), nil)
	recs, _ := readN(t, first, 400)
	state, err := first.State()
	if err != nil {
		t.Fatal(err)
	}
	_ = first.Close() // no Committed: the group has nothing
	next := openSource(t, sourceConfig(c, topic, group), state)
	rest, _ := readN(t, next, len(want)-len(recs))
	got := append(raws(recs), raws(rest)...)
	if !slices.Equal(sorted(got), sorted(want)) {
		t.Fatalf("restored source: %d + %d records, not each of the %d once", len(recs), len(rest), len(want))
	}
}

// TestSourceRejectsPoison: an over-long message and, with metadata, a
// value that is not a JSON object are bad records; the records after
// them come, and the poison's offset is in the state (it is committed).
func TestSourceRejectsPoison(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "poison", 1)
	c.Produce(t, topic, []string{`{"a":1}`, strings.Repeat("x", 100), `not json`, `{"a":2}`})
	cfg := sourceConfig(c, topic, kafkatest.Name("g"))
	cfg.MaxLineBytes, cfg.Metadata = 50, true
	src := openSource(t, cfg, nil)
	recs, rejects := readN(t, src, 4)
	if len(recs) != 2 || len(rejects) != 2 {
		t.Fatalf("%d records and %d rejects, want 2 and 2", len(recs), len(rejects))
	}
	if rejects[0].Length != 100 || len(rejects[0].Record.Raw) != 50 {
		t.Errorf("over-long reject: length %d, raw %d bytes", rejects[0].Length, len(rejects[0].Record.Raw))
	}
	if !strings.Contains(rejects[1].Err.Error(), "JSON object") {
		t.Errorf("non-object reject: %v", rejects[1].Err)
	}
	var fields struct {
		A    int `json:"a"`
		Meta struct {
			Topic     string `json:"topic"`
			Partition int32  `json:"partition"`
			Offset    int64  `json:"offset"`
			Timestamp string `json:"timestamp"`
		} `json:"_meta"`
	}
	if err := json.Unmarshal(recs[1].Raw, &fields); err != nil || !recs[1].Parsed {
		t.Fatalf("metadata record %s: %v (parsed %v)", recs[1].Raw, err, recs[1].Parsed)
	}
	if fields.A != 2 || fields.Meta.Topic != topic || fields.Meta.Offset != 3 || fields.Meta.Timestamp == "" {
		t.Errorf("metadata record: %s", recs[1].Raw)
	}
	if string(recs[1].Line) != `{"a":2}` {
		t.Errorf("Line = %s, want the original value", recs[1].Line)
	}
	state, _ := src.State()
	if !strings.Contains(string(state), `"0":4`) {
		t.Errorf("state %s does not cover the poison messages", state)
	}
}

// TestSourceStartErrors: a missing topic is an Open error naming the
// stage; so is a wrong password.
func TestSourceStartErrors(t *testing.T) {
	c := kafkatest.StartFake(t)
	src := NewSource(settings(t, "orders"), sourceConfig(c, kafkatest.Name("missing"), "g"))
	err := src.Open(context.Background())
	_ = src.Close()
	if err == nil || !strings.Contains(err.Error(), `kafka source "orders"`) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing topic: Open = %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	c := NewSourceConfig()
	c.Brokers = []string{"nohostport"}
	c.StartAt = "middle"
	c.SASL.Mechanism = "md5"
	hasField := func(err error, field string) bool {
		return err != nil && strings.Contains("\n"+err.Error(), "\n"+field+": ")
	}
	err := c.Validate()
	for _, f := range []string{"brokers", "topics", "group", "start_at", "sasl.mechanism"} {
		if !hasField(err, f) {
			t.Errorf("source: no error at %s (got %v)", f, err)
		}
	}
	c = sourceConfig(&kafkatest.Cluster{Brokers: []string{"127.0.0.1:9092"}}, "t", "g")
	c.TLS.CA = "missing-ca.pem"
	c.ResolvePaths(t.TempDir())
	if err := c.CheckFiles(); !hasField(err, "tls.ca") {
		t.Errorf("source with a missing CA file: %v, want an error at tls.ca", err)
	}
	s := NewSinkConfig()
	s.TransactionalID = "x"
	err = s.Validate()
	for _, f := range []string{"brokers", "topic", "transactional_id"} {
		if !hasField(err, f) {
			t.Errorf("sink: no error at %s (got %v)", f, err)
		}
	}
}

// TestSourceSASL: with the right credentials the source reads (PLAIN and
// SCRAM); a wrong password is an Open error naming the stage.
func TestSourceSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			c := kafkatest.StartFakeSASL(t, mech, "etld", "s3cret")
			topic := c.CreateTopic(t, "sasl", 1)
			c.Produce(t, topic, []string{"one", "two"})
			cfg := sourceConfig(c, topic, kafkatest.Name("g"))
			cfg.SASL = SASLConfig{Mechanism: strings.ToLower(mech), User: "etld", Password: "s3cret"}
			src := openSource(t, cfg, nil)
			if recs, _ := readN(t, src, 2); !slices.Equal(raws(recs), []string{"one", "two"}) {
				t.Errorf("read %q", raws(recs))
			}

			bad := sourceConfig(c, topic, kafkatest.Name("g"))
			bad.SASL = SASLConfig{Mechanism: strings.ToLower(mech), User: "etld", Password: "wrong"}
			s := NewSource(settings(t, "orders"), bad)
			err := s.Open(context.Background())
			_ = s.Close()
			if err == nil || !strings.Contains(err.Error(), `kafka source "orders"`) {
				t.Errorf("wrong password: Open = %v, want an error naming the source", err)
			}
		})
	}
}

// fakeGate is a FeedGate whose feeds have room when allowed.
type fakeGate struct {
	allowed    map[string]bool
	registered map[string]bool
	taken      []string
	changed    chan struct{}
}

func (g *fakeGate) Register(path string)              { g.registered[path] = true }
func (g *fakeGate) Allow(path string) bool            { return g.allowed[path] }
func (g *fakeGate) Take(path string, _ *stages.Batch) { g.taken = append(g.taken, path) }
func (g *fakeGate) End(string)                        {}
func (g *fakeGate) Changed() <-chan struct{}          { return g.changed }

// TestSourceFeedGate: with a feed gate, each partition is a feed: every
// batch holds records of one partition, taken for that feed, and a
// partition without room is held back while the others are read.
func TestSourceFeedGate(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "gate", 2)
	want := lines("gate", 2000)
	c.Produce(t, topic, want)
	g := &fakeGate{allowed: map[string]bool{topic + "/0": true}, registered: map[string]bool{}, changed: make(chan struct{})}
	cfg := sourceConfig(c, topic, kafkatest.Name("g"))
	src := NewSource(settings(t, "src"), cfg)
	src.SetFeedGate(g)
	if err := src.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var got []stages.Record
	check := func(b *stages.Batch) {
		t.Helper()
		for _, r := range b.Records {
			if r.Origin != b.Records[0].Origin {
				t.Fatalf("a batch mixes %s and %s", b.Records[0].Origin.Path, r.Origin.Path)
			}
		}
		if last := g.taken[len(g.taken)-1]; last != b.Records[0].Origin.Path {
			t.Fatalf("batch of %s taken for feed %s", b.Records[0].Origin.Path, last)
		}
		got = append(got, b.Records...)
	}
	for len(got) < len(want)/2 {
		b, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		check(b)
		if b.Records[0].Origin.Path != topic+"/0" {
			t.Fatalf("read %s, which has no room", b.Records[0].Origin.Path)
		}
	}
	if !g.registered[topic+"/0"] || !g.registered[topic+"/1"] {
		t.Errorf("feeds registered: %v, want both partitions", g.registered)
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	if b, err := src.Read(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read with no feed room = %v, %v; want to wait", b, err)
	}
	cancelShort()
	g.allowed[topic+"/1"] = true
	close(g.changed)
	for len(got) < len(want) {
		b, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		check(b)
	}
	if !slices.Equal(sorted(raws(got)), sorted(want)) {
		t.Errorf("read %d records, want each of %d once", len(got), len(want))
	}
}

// TestSourceUnknownBrokerHost: a broker name that does not resolve is a
// start error (a broker that is down is not: it is retried).
func TestSourceUnknownBrokerHost(t *testing.T) {
	cfg := NewSourceConfig()
	cfg.Brokers, cfg.Topics, cfg.Group = []string{"no-such-broker.invalid:9092"}, []string{"t"}, "g"
	src := NewSource(settings(t, "orders"), cfg)
	err := src.Open(context.Background())
	_ = src.Close()
	if err == nil || !strings.Contains(err.Error(), "does not resolve") || !strings.Contains(err.Error(), `kafka source "orders"`) {
		t.Errorf("Open = %v, want a start error naming the source and the host", err)
	}
}
