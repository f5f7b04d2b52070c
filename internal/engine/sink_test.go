package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
	"github.com/rs/zerolog"
)

// newTestCheckpointer returns a checkpointer with no store for a pipeline
// "p" with the given number of sinks.
func newTestCheckpointer(mx *Metrics, sinks int) *checkpointer {
	c := &checkpointer{}
	c.init(&pipeline{cfg: &config.Pipeline{Name: "p"}, log: nopLogger()}, mx, nil)
	if sinks == 1 {
		c.addSink("out")
		return c
	}
	for i := range sinks {
		c.addSink(string(rune('a' + i)))
	}
	return c
}

// sinkRig runs a sinkRunner over a fake sink, fed directly with msgs.
type sinkRig struct {
	sink    *fakeSink
	runner  *sinkRunner
	in      chan msg
	hard    context.Context
	cancel  context.CancelFunc
	mx      *Metrics
	result  chan error
	healthy []bool
	mu      sync.Mutex
}

func newSinkRig(t *testing.T, sink *fakeSink) *sinkRig {
	r := &sinkRig{sink: sink, in: make(chan msg, 16), mx: NewMetrics(), result: make(chan error, 1)}
	r.hard, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(r.cancel)
	r.runner = &sinkRunner{
		id: "out", sink: sink, in: r.in, m: r.mx.stage("p", "out"), log: nopLogger(), hard: r.hard,
		ckpt: newTestCheckpointer(r.mx, 1),
		em:   &emitter{stage: "out", hard: r.hard, m: r.mx.stage("p", "out"), badLog: zerolog.Nop()},
		setHealthy: func(ok bool) {
			r.mu.Lock()
			r.healthy = append(r.healthy, ok)
			r.mu.Unlock()
		},
	}
	go func() { r.result <- r.runner.run() }()
	return r
}

func batchOf(o *stages.Origin, names ...string) msg {
	b := &stages.Batch{}
	for i, n := range names {
		b.Records = append(b.Records, rec(o, int64(i), n))
	}
	return msg{b: b}
}

// TestSinkFlushesAtEveryBarrier: a barrier makes the sink flush and ack
// the epoch; the end of input flushes and closes.
func TestSinkFlushesAtEveryBarrier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newSinkRig(t, newFakeSink())
		o := &stages.Origin{Source: "s"}
		r.in <- batchOf(o, "a", "b")
		r.in <- msg{epoch: 1}
		r.in <- batchOf(o, "c")
		r.in <- msg{epoch: 2}
		r.in <- msg{epoch: 3}
		r.in <- batchOf(o, "d")
		synctest.Wait()
		if got, want := r.sink.Ops(), "WWFWFF"; !strings.HasPrefix(got, want) {
			t.Errorf("sink calls before the end = %q, want %q", got, want)
		}
		r.runner.ckpt.mu.Lock()
		epoch := r.runner.ckpt.committed.Epoch
		r.runner.ckpt.mu.Unlock()
		if epoch != 3 {
			t.Errorf("committed epoch %d after the sink acked barrier 3, want 3", epoch)
		}
		close(r.in)
		if err := <-r.result; err != nil {
			t.Fatal(err)
		}
		if got, want := r.sink.Ops(), "WWFWFFWFC"; got != want {
			t.Errorf("sink calls = %q, want %q", got, want)
		}
		checkCounter(t, "records in", r.mx.recordsIn.WithLabelValues("p", "out"), 4)
		checkCounter(t, "records out", r.mx.recordsOut.WithLabelValues("p", "out"), 4)
		checkCounter(t, "bytes", r.mx.bytesWritten.WithLabelValues("p", "out"), 8)
	})
}

// TestSinkRetriesWrites: failed Writes are retried with backoff until
// they succeed, each record is written once (also when a failing Write
// took some records first), and retries are counted.
func TestSinkRetriesWrites(t *testing.T) {
	for _, accept := range []int{0, 1, 2} {
		t.Run(fmt.Sprintf("accepted before failing=%d", accept), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sink := newFakeSink()
				sink.failWrites, sink.acceptBeforeFail = 3, accept
				r := newSinkRig(t, sink)
				o := &stages.Origin{Source: "s"}
				start := time.Now()
				r.in <- batchOf(o, "a", "b", "c", "d", "e", "f", "g")
				r.in <- batchOf(o, "h")
				close(r.in)
				if err := <-r.result; err != nil {
					t.Fatal(err)
				}
				if got := strings.Join(sink.Records(), ""); got != "abcdefgh" {
					t.Errorf("sink got %q, want every record once, in order", got)
				}
				// Backoff doubles from retryMin (in the bubble's clock).
				if waited, want := time.Since(start), retryMin+2*retryMin+4*retryMin; waited != want {
					t.Errorf("backed off %v in all, want %v", waited, want)
				}
				checkCounter(t, "retries", r.mx.retries.WithLabelValues("p", "out"), 3)
				checkCounter(t, "errors", r.mx.errors.WithLabelValues("p", "out"), 3)
				checkCounter(t, "records out", r.mx.recordsOut.WithLabelValues("p", "out"), 8)
				r.mu.Lock()
				defer r.mu.Unlock()
				if h := r.healthy; len(h) < 2 || h[0] || !h[len(h)-1] {
					t.Errorf("health reports %v, want unhealthy at the failure, healthy in the end", h)
				}
			})
		})
	}
}

func TestSinkRetriesFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newFakeSink()
		sink.failFlushes = 2
		r := newSinkRig(t, sink)
		r.in <- batchOf(&stages.Origin{}, "a")
		r.in <- msg{epoch: 1}
		close(r.in)
		if err := <-r.result; err != nil {
			t.Fatal(err)
		}
		if got, want := sink.Ops(), "WEEFFC"; got != want {
			t.Errorf("sink calls = %q, want %q", got, want)
		}
		checkCounter(t, "retries", r.mx.retries.WithLabelValues("p", "out"), 2)
	})
}

// TestSinkHardStopDuringRetry: the hard stop ends a backoff at once, and
// the runner reports the failure it gave up on.
func TestSinkHardStopDuringRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newFakeSink()
		sink.failWrites = 1 << 30
		r := newSinkRig(t, sink)
		r.in <- batchOf(&stages.Origin{}, "a")
		time.Sleep(10 * retryMax) // bubble time: many attempts, then waiting in a backoff
		synctest.Wait()
		stopped := time.Now()
		r.cancel()
		err := <-r.result
		if !errors.Is(err, errFakeWrite) || !strings.Contains(err.Error(), "gave up at shutdown") {
			t.Errorf("run = %v, want the write error, given up at shutdown", err)
		}
		if d := time.Since(stopped); d != 0 {
			t.Errorf("run returned %v after the hard stop, want at once", d)
		}
		if len(sink.Records()) != 0 {
			t.Errorf("sink wrote %v", sink.Records())
		}
	})
}

// TestSinkHardStopWhileIdle: a sink waiting for input returns at the hard
// stop without closing its sink (the pipeline does that).
func TestSinkHardStopWhileIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := newFakeSink()
		r := newSinkRig(t, sink)
		r.in <- batchOf(&stages.Origin{}, "a")
		synctest.Wait()
		r.cancel()
		if err := <-r.result; !errors.Is(err, context.Canceled) {
			t.Errorf("run = %v, want context.Canceled", err)
		}
		if got := sink.Ops(); got != "W" {
			t.Errorf("sink calls = %q, want just the write", got)
		}
	})
}

// TestSinkPermanentError: a record the sink can never write goes to the
// dead-letter sink (or is counted as dropped without one, and when the
// dead-letter sink itself refuses it), once, without backoff; every other
// record of its batch is written once.
func TestSinkPermanentError(t *testing.T) {
	for _, tc := range []struct {
		name       string
		deadLetter string // the dead-letter sink's config, or ""
		refuseDL   bool   // the dead-letter sink refuses every line
	}{
		{name: "dead_letter", deadLetter: "{ type: file, path: rejects.jsonl }"},
		{name: "none"},
		{name: "dead_letter_refuses", deadLetter: "{ type: fake, name: %[1]s-dl }", refuseDL: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(t.Name(), "/", "_")
			src, out, dl := newFakeSource(1), newFakeSink(), newFakeSink()
			out.refuse = map[string]bool{"r4": true}
			addFake(t, name+"-src", src)
			addFake(t, name+"-out", out)
			addFake(t, name+"-dl", dl)
			cfg := `version: 1
sources:
  in: { type: fake_finite, name: %[1]s-src }
sinks:
  out: { type: fake, inputs: [in], name: %[1]s-out }
`
			if tc.deadLetter != "" {
				cfg += "  rejects: " + tc.deadLetter + "\ndead_letter: rejects\n"
			}
			dir := t.TempDir()
			pipes := loadPipeline(t, dir, "p", fmt.Sprintf(cfg, name), nil)
			o := &stages.Origin{Source: "in", Path: "/in"}
			b := &stages.Batch{}
			var want []string
			for i := range 10 {
				r := fmt.Sprintf("r%d", i)
				b.Records = append(b.Records, rec(o, int64(3*i), r))
				if i != 4 {
					want = append(want, r)
				}
			}
			if tc.refuseDL {
				dl.mu.Lock()
				dl.refuse = map[string]bool{"*": true}
				dl.mu.Unlock()
			}
			src.feed <- b
			close(src.feed)
			mx := NewMetrics()
			done := runAsync(context.Background(), pipes, Options{Logger: nopLogger(), Metrics: mx})
			if err := recvWithin(t, done, hangTimeout, "Run to return"); err != nil {
				t.Fatalf("Run = %v", err)
			}
			if got := out.Records(); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("sink wrote %v, want %v: every other record once, in order", got, want)
			}
			if got := out.Blamed(); len(got) != 1 || got["r4"] != 1 {
				t.Errorf("Write refused %v, want r4 once: a permanent error is not retried", got)
			}
			checkCounter(t, "retries", mx.retries.WithLabelValues("p", "out"), 0)
			checkCounter(t, "records out", mx.recordsOut.WithLabelValues("p", "out"), 9)
			checkCounter(t, "errors", mx.errors.WithLabelValues("p", "out"), 1)
			lettered, dropped := 0, 1
			if tc.deadLetter != "" {
				lettered, dropped = 1, 0
			}
			if tc.deadLetter != "" && !tc.refuseDL {
				lines := readLines(t, filepath.Join(dir, "rejects.jsonl"))
				want := `{"error":"sink write: fake sink refuses this record","stage":"out","source":"in","origin":"/in:12","record":"r4"}`
				if len(lines) != 1 || lines[0] != want {
					t.Errorf("dead letter %q, want [%s]", lines, want)
				}
			}
			checkCounter(t, "dead-lettered", mx.deadLettered.WithLabelValues("p", "out"), lettered)
			checkCounter(t, "dropped", mx.dropped.WithLabelValues("p", "out", reasonBadRecord), dropped)
			if tc.refuseDL {
				// The dead-letter sink cannot send its refused line to
				// itself: it drops it.
				if got := dl.Blamed(); len(got) != 1 {
					t.Errorf("dead-letter sink refused %v, want the one dead-letter line", got)
				}
				checkCounter(t, "dead-letter sink drops", mx.dropped.WithLabelValues("p", "rejects", reasonBadRecord), 1)
			}
		})
	}
}

// TestMergeSinkPermanentError: a merging sink rejects a record it can
// never write the same way: to the dead letter, once, the rest written in
// merge order.
func TestMergeSinkPermanentError(t *testing.T) {
	name := strings.ReplaceAll(t.Name(), "/", "_")
	src, out := newFakeSource(1), newFakeSink()
	out.refuse = map[string]bool{`{"ts":3}`: true}
	addFake(t, name+"-src", src)
	addFake(t, name+"-out", out)
	dir := t.TempDir()
	pipes := loadPipeline(t, dir, "p", fmt.Sprintf(`version: 1
sources:
  in: { type: fake_finite, name: %[1]s-src }
workers:
  parse: { inputs: [in], ordered: true, steps: [ { parse_json: {} } ] }
sinks:
  out: { type: fake, inputs: [parse], name: %[1]s-out, merge: { order_by: ts } }
  rejects: { type: file, path: rejects.jsonl }
dead_letter: rejects
`, name), nil)
	o := &stages.Origin{Source: "in", Path: "/in"}
	b := &stages.Batch{}
	for i := range 6 {
		b.Records = append(b.Records, rec(o, int64(i), fmt.Sprintf(`{"ts":%d}`, i)))
	}
	src.feed <- b
	close(src.feed)
	mx := NewMetrics()
	if err := recvWithin(t, runAsync(context.Background(), pipes, Options{Logger: nopLogger(), Metrics: mx}), hangTimeout, "Run to return"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got, want := strings.Join(out.Records(), ","), `{"ts":0},{"ts":1},{"ts":2},{"ts":4},{"ts":5}`; got != want {
		t.Errorf("sink wrote %s, want %s", got, want)
	}
	if got := out.Blamed(); len(got) != 1 || got[`{"ts":3}`] != 1 {
		t.Errorf("Write refused %v, want ts 3 once", got)
	}
	if lines := readLines(t, filepath.Join(dir, "rejects.jsonl")); len(lines) != 1 || !strings.Contains(lines[0], `"origin":"/in:3"`) {
		t.Errorf("dead letter %q, want the record of ts 3", lines)
	}
	checkCounter(t, "retries", mx.retries.WithLabelValues("p", "out"), 0)
	checkCounter(t, "dead-lettered", mx.deadLettered.WithLabelValues("p", "out"), 1)
}
