package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/etld/etld/internal/natstest"
	"github.com/etld/etld/internal/stages"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hang bounds a wait for something that must happen; not a performance
// assertion.
const hang = 20 * time.Second

func settings(t testing.TB, id string) stages.Settings {
	return stages.Settings{Pipeline: "test", ID: id, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}
}

func payloads(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"n":%d}`, i)
	}
	return out
}

func openSource(t *testing.T, id string, cfg *SourceConfig, state []byte) *Source {
	t.Helper()
	s := newSource(settings(t, id), cfg)
	if state != nil {
		if err := s.Restore(state); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Open(context.Background()); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// readN reads until n records and rejects came, failing after hang.
func readN(t *testing.T, s *Source, n int) (recs []string, rejects []stages.Reject) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for len(recs)+len(rejects) < n {
		if time.Now().After(deadline) {
			t.Fatalf("read %d records and %d rejects, want %d in all", len(recs), len(rejects), n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		b, err := s.Read(ctx)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Read: %v", err)
		}
		if b == nil {
			continue
		}
		for _, r := range b.Records {
			recs = append(recs, string(r.Raw))
		}
		rejects = append(rejects, b.Rejects...)
	}
	return recs, rejects
}

// readNothing checks that a Read for a while yields nothing.
func readNothing(t *testing.T, s *Source, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for ctx.Err() == nil {
		b, err := s.Read(ctx)
		if err == nil && b != nil && len(b.Records)+len(b.Rejects) > 0 {
			t.Fatalf("read %d records, want none (first %q)", len(b.Records), b.Records[0].Raw)
		}
	}
}

func consumerInfo(t *testing.T, srv *natstest.Server, stream, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), hang)
	defer cancel()
	c, err := js.Consumer(ctx, stream, durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func sourceConfig(srv *natstest.Server, stream, durable string) *SourceConfig {
	c := NewSourceConfig()
	c.URL, c.Stream, c.Durable = srv.URL, stream, durable
	return c
}

// TestSourceAcksAfterCommit: nothing is acked before the checkpoint
// covering it is committed; everything it covers is acked then.
func TestSourceAcksAfterCommit(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "acks")
	srv.Publish(t, stream+".a", payloads(3000))
	s := openSource(t, "src", sourceConfig(srv, stream, "d"), nil)
	got, _ := readN(t, s, 3000)
	if got[0] != `{"n":0}` || got[2999] != `{"n":2999}` {
		t.Fatalf("records out of order: first %s, last %s", got[0], got[2999])
	}
	state, err := s.State()
	if err != nil {
		t.Fatal(err)
	}
	if info := consumerInfo(t, srv, stream, "d"); info.NumAckPending != 3000 || info.AckFloor.Stream != 0 {
		t.Fatalf("before the commit: %d pending acks, ack floor %d; want 3000 and 0", info.NumAckPending, info.AckFloor.Stream)
	}
	if err := s.Committed(context.Background(), state); err != nil {
		t.Fatal(err)
	}
	if info := consumerInfo(t, srv, stream, "d"); info.NumAckPending != 0 || info.AckFloor.Stream != 3000 {
		t.Fatalf("after the commit: %d pending acks, ack floor %d; want 0 and 3000", info.NumAckPending, info.AckFloor.Stream)
	}
	if n := testutil.ToFloat64(s.acked); n != 3000 {
		t.Errorf("etld_nats_acked_total = %v, want 3000", n)
	}
}

// TestSourceRestoreSkipsCommitted: the messages of a committed state
// that were not acked (a crash between the checkpoint and the acks) come
// back, and a source restored from that state acks and skips them; the
// rest comes through once.
func TestSourceRestoreSkipsCommitted(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "skip")
	srv.Publish(t, stream+".a", payloads(500))
	cfg := sourceConfig(srv, stream, "d")
	first := openSource(t, "src", cfg, nil)
	readN(t, first, 500)
	state, err := first.State()
	if err != nil {
		t.Fatal(err)
	}
	// The crash: no Committed; Close gives the messages back at once.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	srv.Publish(t, stream+".a", []string{`{"n":"after"}`})
	next := openSource(t, "src", cfg, state)
	got, _ := readN(t, next, 1)
	if len(got) != 1 || got[0] != `{"n":"after"}` {
		t.Fatalf("after restore got %q, want only the message published after the state", got)
	}
	readNothing(t, next, 300*time.Millisecond)
	if n := testutil.ToFloat64(next.skipped); n != 500 {
		t.Errorf("etld_nats_skipped_total = %v, want 500", n)
	}
	st, _ := next.State()
	if err := next.Committed(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	if info := consumerInfo(t, srv, stream, "d"); info.NumAckPending != 0 || info.AckFloor.Stream != 501 {
		t.Fatalf("%d pending acks, ack floor %d; want 0 and 501", info.NumAckPending, info.AckFloor.Stream)
	}
	if st, _ := next.State(); strings.Contains(string(st), "seqs") {
		t.Errorf("state after everything was acked still lists sequences: %s", st)
	}
}

// TestSourceRedeliveryCrossesAck: the server redelivers messages that
// are waiting for their checkpoint (their ack_wait ran out on a loaded
// machine, or the server restarted) and the redeliveries reach the
// source's pull request before the checkpoint's acks reach the server.
// Read gets them after Committed has acked the messages: they are
// skipped (and acked again), not emitted a second time. A negative ack
// from outside stands for the server's ack_wait: it redelivers at once.
func TestSourceRedeliveryCrossesAck(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "cross")
	const n = 100
	srv.Publish(t, stream+".a", payloads(n))
	s := openSource(t, "src", sourceConfig(srv, stream, "d"), nil)
	// One pull request for the whole test: the redeliveries go to the
	// request that brought the messages, as when it is still waiting.
	// (Ended before Close, which lets a request run to its end.)
	s.fetchWait = time.Hour
	t.Cleanup(func() {
		if s.unfetch != nil {
			s.unfetch()
		}
	})
	readN(t, s, n)
	state, err := s.State()
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	var replies []string
	for _, b := range s.held {
		for _, m := range b.msgs {
			replies = append(replies, string(s.replyOf(nil, m)))
		}
	}
	s.mu.Unlock()
	nc, _ := srv.Connect(t)
	for _, r := range replies {
		if err := nc.Publish(r, []byte(ackNak)); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Every message delivered twice: the redeliveries are on their way
	// to the source, ahead of any ack it sends from now on.
	waitFor(t, "the server has redelivered every message", func() bool {
		return consumerInfo(t, srv, stream, "d").Delivered.Consumer >= 2*n
	})
	if err := s.Committed(context.Background(), state); err != nil {
		t.Fatal(err)
	}
	var again []string
	waitFor(t, "Read has seen every redelivery", func() bool {
		recs, _ := readFor(t, s, 50*time.Millisecond)
		again = append(again, recs...)
		return testutil.ToFloat64(s.redelivered) >= n
	})
	if len(again) != 0 {
		t.Fatalf("%d records emitted again after the checkpoint holding them was acked (first %s)", len(again), again[0])
	}
	if got := testutil.ToFloat64(s.skipped); got != n {
		t.Errorf("etld_nats_skipped_total = %v, want %d", got, n)
	}
	if info := consumerInfo(t, srv, stream, "d"); info.NumAckPending != 0 || info.AckFloor.Stream != n {
		t.Errorf("%d pending acks, ack floor %d; want 0 and %d", info.NumAckPending, info.AckFloor.Stream, n)
	}
	// Once that pull request is over, nothing sent before the acks can
	// come any more: the source forgets them.
	s.fetchWait = fetchWait
	s.unfetch()
	waitFor(t, "the acked sequences are forgotten once their pull request is drained", func() bool {
		readFor(t, s, 50*time.Millisecond)
		return len(s.recentAcks) == 0
	})
}

// waitFor polls cond until it holds, failing after hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, hang)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readFor reads once for at most d and returns the records.
func readFor(t *testing.T, s *Source, d time.Duration) ([]string, []stages.Reject) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	b, err := s.Read(ctx)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read: %v", err)
	}
	if b == nil {
		return nil, nil
	}
	var recs []string
	for _, r := range b.Records {
		recs = append(recs, string(r.Raw))
	}
	return recs, b.Rejects
}

// TestSourceInProgress: messages waiting longer than ack_wait for their
// checkpoint are not redelivered: the source renews their deadline.
func TestSourceInProgress(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "wpi")
	srv.Publish(t, stream+".a", payloads(10))
	cfg := sourceConfig(srv, stream, "d")
	cfg.AckWait = time.Second
	s := openSource(t, "src", cfg, nil)
	readN(t, s, 10)
	readNothing(t, s, 3*cfg.AckWait)
	if info := consumerInfo(t, srv, stream, "d"); info.NumRedelivered != 0 || info.NumAckPending != 10 {
		t.Fatalf("%d redelivered, %d pending: want 0 and 10 (in progress keeps them)", info.NumRedelivered, info.NumAckPending)
	}
}

// TestSourceSharedDurable: two sources on one durable share the
// messages, each once.
func TestSourceSharedDurable(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "share")
	cfg := sourceConfig(srv, stream, "shared")
	cfg.PullBatch = 50
	a := openSource(t, "a", cfg, nil)
	b := openSource(t, "b", cfg, nil)
	srv.Publish(t, stream+".a", payloads(2000))
	seen := map[string]int{}
	counts := [2]int{}
	deadline := time.Now().Add(hang)
	for len(seen) < 2000 && time.Now().Before(deadline) {
		for i, s := range []*Source{a, b} {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			batch, _ := s.Read(ctx)
			cancel()
			if batch == nil {
				continue
			}
			for _, r := range batch.Records {
				seen[string(r.Raw)]++
				counts[i]++
			}
		}
	}
	if len(seen) != 2000 {
		t.Fatalf("%d distinct records, want 2000", len(seen))
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("%s read %d times", k, n)
		}
	}
	if counts[0] == 0 || counts[1] == 0 {
		t.Errorf("one instance got everything (%v): the durable is not shared", counts)
	}
}

// TestSourceBadMessages: an over-long payload and, with metadata, a
// payload that is not a JSON object are rejects (dead letter) and are
// acked with the checkpoint, so they never block the durable.
func TestSourceBadMessages(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "bad")
	nc, _ := srv.Connect(t)
	msg := nats.NewMsg(stream + ".x")
	msg.Data = []byte(`{"ok":1}`)
	msg.Header.Set("Trace", "t1")
	_, js := srv.Connect(t)
	ctx := context.Background()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	_ = nc
	srv.Publish(t, stream+".x", []string{"not json", `{"big":"` + strings.Repeat("x", 100) + `"}`, `{}`})
	cfg := sourceConfig(srv, stream, "d")
	cfg.Metadata, cfg.MaxLineBytes = true, 64
	s := openSource(t, "src", cfg, nil)
	recs, rejects := readN(t, s, 4)
	if len(recs) != 2 || len(rejects) != 2 {
		t.Fatalf("%d records and %d rejects, want 2 and 2: %q", len(recs), len(rejects), recs)
	}
	var v struct {
		OK   int `json:"ok"`
		Meta struct {
			Subject   string              `json:"subject"`
			Stream    string              `json:"stream"`
			Seq       uint64              `json:"seq"`
			Delivered uint64              `json:"delivered"`
			Timestamp time.Time           `json:"timestamp"`
			Headers   map[string][]string `json:"headers"`
		} `json:"_meta"`
	}
	if err := json.Unmarshal([]byte(recs[0]), &v); err != nil {
		t.Fatalf("%s: %v", recs[0], err)
	}
	if v.OK != 1 || v.Meta.Subject != stream+".x" || v.Meta.Stream != stream || v.Meta.Seq != 1 || v.Meta.Delivered != 1 ||
		v.Meta.Timestamp.IsZero() || v.Meta.Headers["Trace"][0] != "t1" {
		t.Errorf("record with metadata: %s", recs[0])
	}
	if recs[1] != fmt.Sprintf(`{"_meta":{"subject":"%s.x","seq":4,"delivered":1,"stream":"%s","timestamp":`, stream, stream)+recs[1][strings.Index(recs[1], `"timestamp":`)+12:] || !strings.HasSuffix(recs[1], "}}") {
		t.Errorf("an empty object gets _meta alone: %s", recs[1])
	}
	if !strings.Contains(rejects[0].Err.Error(), "JSON object") || rejects[1].Length != int64(len(`{"big":"`)+102) || len(rejects[1].Record.Raw) != 64 {
		t.Errorf("rejects: %v (length %d, %d bytes kept)", rejects[0].Err, rejects[1].Length, len(rejects[1].Record.Raw))
	}
	st, _ := s.State()
	if err := s.Committed(ctx, st); err != nil {
		t.Fatal(err)
	}
	if info := consumerInfo(t, srv, stream, "d"); info.NumAckPending != 0 {
		t.Errorf("%d messages not acked, want 0: rejects are acked too", info.NumAckPending)
	}
}

// TestSourceOpenErrors: a missing stream is an Open error naming the
// stage and the stream; a server that is away is not.
func TestSourceOpenErrors(t *testing.T) {
	srv := natstest.Start(t)
	s := newSource(settings(t, "in"), sourceConfig(srv, "nosuch", "d"))
	err := s.Open(context.Background())
	_ = s.Close()
	if err == nil || !strings.Contains(err.Error(), `nats source "in"`) || !strings.Contains(err.Error(), `stream "nosuch" not found`) {
		t.Errorf("Open with a missing stream: %v", err)
	}

	down := sourceConfig(srv, "x", "d")
	down.URL, down.Timeout = "nats://127.0.0.1:1", 200*time.Millisecond
	s = newSource(settings(t, "in"), down)
	if err := s.Open(context.Background()); err != nil {
		t.Errorf("Open with the server away: %v, want nil (retried)", err)
	}
	if err := s.Health(); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("Health with the server away: %v", err)
	}
	_ = s.Close()
}

func TestConfigErrors(t *testing.T) {
	src := NewSourceConfig()
	src.URL, src.Token, src.User, src.Password, src.StartAt, src.AckWait = "http://x", "t", "u", "p", "middle", 0
	err := src.Validate()
	for _, want := range []string{"url:", "stream: required", "durable: required", "creds: creds, user/password and token", "start_at:", "ack_wait:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("source Validate: %v, want %q", err, want)
		}
	}
	sink := NewSinkConfig()
	sink.Subject, sink.MaxPending = "a.*", 0
	err = sink.Validate()
	for _, want := range []string{"subject:", "max_pending:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("sink Validate: %v, want %q", err, want)
		}
	}
	var fe *stages.FieldError
	if !errors.As(err, &fe) {
		t.Errorf("sink Validate: %v is not a FieldError", err)
	}
}

func sinkBatch(from, n int) *stages.Batch {
	o := &stages.Origin{Source: "app", Path: "/var/log/app.log"}
	b := &stages.Batch{}
	for i := from; i < from+n; i++ {
		b.Records = append(b.Records, stages.Record{Raw: fmt.Appendf(nil, `{"n":%d}`, i), Origin: o, Offset: int64(i * 10)})
	}
	return b
}

// TestSinkDedupe: a second sink (the restart after kill -9) re-sending
// records already published leaves the stream with each once.
func TestSinkDedupe(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "dedupe")
	cfg := NewSinkConfig()
	cfg.URL, cfg.Subject = srv.URL, stream+".out"
	ctx := context.Background()
	first := newSink(settings(t, "out"), cfg)
	if err := first.Open(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Write(ctx, sinkBatch(0, 3000)); err != nil {
		t.Fatal(err)
	}
	if err := first.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(srv.Messages(t, stream)); got != 3000 {
		t.Fatalf("after Flush the stream holds %d messages, want 3000", got)
	}
	_ = first.Close(ctx)
	again := newSink(settings(t, "out"), cfg)
	if err := again.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer again.Close(ctx)
	if err := again.Write(ctx, sinkBatch(2000, 2000)); err != nil {
		t.Fatal(err)
	}
	if err := again.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := srv.Messages(t, stream)
	if len(got) != 4000 || got[3999] != `{"n":3999}` {
		t.Fatalf("the stream holds %d messages (last %q), want 4000", len(got), got[len(got)-1])
	}
	if n := testutil.ToFloat64(again.duplicates); n != 1000 {
		t.Errorf("etld_nats_duplicates_total = %v, want 1000", n)
	}
}

// TestSinkTooLarge: a record over the server's max_payload is a
// permanent error for that record only.
func TestSinkTooLarge(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "large")
	cfg := NewSinkConfig()
	cfg.URL, cfg.Subject = srv.URL, stream+".out"
	ctx := context.Background()
	s := newSink(settings(t, "out"), cfg)
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	b := sinkBatch(0, 3)
	b.Records[1].Raw = make([]byte, 2<<20)
	err := s.Write(ctx, b)
	if !stages.IsPermanent(err) || len(b.Records) != 2 || len(b.Records[0].Raw) != 2<<20 {
		t.Fatalf("Write: %v with %d records left, want a permanent error with the big record first", err, len(b.Records))
	}
	b.Records = b.Records[1:]
	if err := s.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := srv.Messages(t, stream); len(got) != 2 {
		t.Errorf("stream holds %q, want the two small records", got)
	}
}

func TestSinkOpenErrors(t *testing.T) {
	srv := natstest.Start(t)
	cfg := NewSinkConfig()
	cfg.URL, cfg.Subject = srv.URL, "nobody.listens"
	s := newSink(settings(t, "out"), cfg)
	err := s.Open(context.Background())
	_ = s.Close(context.Background())
	if err == nil || !strings.Contains(err.Error(), `nats sink "out": no stream captures subject "nobody.listens"`) {
		t.Errorf("Open: %v", err)
	}
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	for _, v := range []uint64{1, 2, 3, 7, 8, 5, 4} {
		s.add(v)
	}
	if fmt.Sprint(s) != "[[1 5] [7 8]]" {
		t.Fatalf("add: %v", s)
	}
	s.remove(3)
	s.remove(8)
	if fmt.Sprint(s) != "[[1 2] [4 5] [7 7]]" || !s.has(4) || s.has(3) || s.len() != 5 {
		t.Fatalf("remove: %v", s)
	}
	s.below(4)
	if fmt.Sprint(s) != "[[5 5] [7 7]]" {
		t.Fatalf("below: %v", s)
	}
	if _, err := decodeState([]byte(`{"gen":1,"seqs":[[5,3]]}`)); err == nil {
		t.Error("a bad range decodes")
	}
}

// TestWrongCredentials: a server that refuses the credentials is a
// configuration error at Open (exit 2 at start), not a retry.
func TestWrongCredentials(t *testing.T) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, Username: "etld", Password: "right"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(hang) {
		t.Fatal("server did not start")
	}
	cfg := NewSinkConfig()
	cfg.URL, cfg.Subject, cfg.User, cfg.Password = srv.ClientURL(), "a.b", "etld", "wrong"
	s := newSink(settings(t, "out"), cfg)
	err = s.Open(context.Background())
	_ = s.Close(context.Background())
	var mis *stages.MisconfiguredError
	if !errors.As(err, &mis) || !strings.Contains(err.Error(), `nats sink "out"`) || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("Open with a wrong password: %v, want a MisconfiguredError naming the stage", err)
	}
}
