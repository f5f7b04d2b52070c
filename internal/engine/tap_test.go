package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/steps"
)

// tapEmitter is an emitter with one output edge, tapped at point tp.
func tapEmitter(t testing.TB) (*emitter, *tapPoint, chan msg, chan msg) {
	t.Helper()
	out, dl := newEdge(), newEdge()
	tp := &tapPoint{}
	e := &emitter{stage: "w", outs: []chan msg{out}, dl: dl, hard: context.Background(),
		m: NewMetrics().stage("p", "w"), badLog: zerolog.Nop(), tp: tp}
	return e, tp, out, dl
}

// drainTap reads a tap until it has nothing more for a moment's wait: it
// returns the records and the total of the missed counts.
func drainTap(t testing.TB, tap *Tap) (recs []string, missed uint64) {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		r, m, ok := tap.Next(ctx)
		cancel()
		if !ok {
			return recs, missed
		}
		missed += m
		if r != nil {
			recs = append(recs, string(r))
		}
	}
}

func newTestTap(sel uint64, filter string) (*Tap, *tapSub) {
	sub := newTapSub(sel)
	t := &Tap{sub: sub, detach: func() {}, hub: &tapHub{}}
	if filter != "" {
		r, err := steps.NewRouter([]string{"filter"}, []string{filter})
		if err != nil {
			panic(err)
		}
		t.filter = r
	}
	t.hub.active.Add(1)
	return t, sub
}

// TestTapSeesOutputRouteAndDeadLetters: a stage tap gets every record the
// emitter sends, a route tap only that route's, a dead-letter tap the
// dead-letter lines; the downstream edge still gets the whole batch,
// whose bytes the tap does not share.
func TestTapSeesOutputRouteAndDeadLetters(t *testing.T) {
	e, tp, out, dl := tapEmitter(t)
	all, allSub := newTestTap(0, "")
	errs, errsSub := newTestTap(1<<1, "")
	dead, deadSub := newTestTap(0, "")
	tp.attach(&tp.out, allSub)
	tp.attach(&tp.out, errsSub)
	tp.attach(&tp.dl, deadSub)

	o := &stages.Origin{Source: "in", Path: "in.log"}
	b := &stages.Batch{
		Records: []stages.Record{rec(o, 0, `{"n":1}`), rec(o, 1, `{"n":2}`), rec(o, 2, `{"n":3}`)},
		Rejects: []stages.Reject{{Record: rec(o, 3, `{"n":`), Err: errors.New("truncated")}},
	}
	if !e.emit(msg{b: b, routes: []uint64{1, 1 << 1, steps.Unmatched}}) {
		t.Fatal("emit = false")
	}
	got := <-out
	got.b.Records[0].Raw[2] = 'X' // the downstream owns its batch
	if n := len(got.b.Records); n != 3 {
		t.Errorf("downstream got %d records, want 3", n)
	}
	if d := <-dl; len(d.b.Records) != 1 {
		t.Errorf("dead-letter edge got %d records, want 1", len(d.b.Records))
	}

	if recs, missed := drainTap(t, all); !slices.Equal(recs, []string{`{"n":1}`, `{"n":2}`, `{"n":3}`}) || missed != 0 {
		t.Errorf("stage tap: %q, missed %d", recs, missed)
	}
	if recs, _ := drainTap(t, errs); !slices.Equal(recs, []string{`{"n":2}`}) {
		t.Errorf("route tap: %q, want the record of route bit 1", recs)
	}
	recs, _ := drainTap(t, dead)
	if len(recs) != 1 || !strings.Contains(recs[0], `"error":"truncated"`) || !strings.Contains(recs[0], `"origin":"in.log:3"`) {
		t.Errorf("dead-letter tap: %q", recs)
	}

	tp.detach(&tp.out, allSub)
	tp.detach(&tp.out, errsSub)
	tp.detach(&tp.dl, deadSub)
	if tp.out.Load() != nil || tp.dl.Load() != nil {
		t.Error("after the last detach the tap point is not back to nil")
	}
}

// TestTapSlowReaderMissed: an unread tap keeps what fits and counts the
// rest, and the reader learns of each gap where it was: replaying the
// records read and the counts gives every record once, in order. The
// emitter never blocks on the tap.
func TestTapSlowReaderMissed(t *testing.T) {
	e, tp, out, _ := tapEmitter(t)
	tap, sub := newTestTap(0, "")
	tp.attach(&tp.out, sub)
	const per = 10
	seq := 0
	emit := func(batches int) {
		for range batches {
			recs := make([]stages.Record, per)
			for j := range recs {
				recs[j] = stages.Record{Raw: fmt.Appendf(nil, `{"i":%d}`, seq), Parsed: true}
				seq++
			}
			if !e.emit(msg{b: &stages.Batch{Records: recs}}) {
				t.Fatal("emit = false")
			}
			(<-out).release() // the pipeline goes on whether the tap is read or not
		}
	}
	next := 0              // the record the replay expects
	gaps := 0              // missed counts seen
	read := 0              // records read
	check := func(n int) { // reads n items (records or counts)
		t.Helper()
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			r, missed, ok := tap.Next(ctx)
			cancel()
			if !ok {
				t.Fatalf("Next: nothing after record %d", next)
			}
			if r == nil {
				next += int(missed)
				gaps++
				continue
			}
			var i int
			if _, err := fmt.Sscanf(string(r), `{"i":%d}`, &i); err != nil || i != next {
				t.Fatalf("read %s, want record %d (after %d gaps)", r, next, gaps)
			}
			next++
			read++
		}
	}
	emit(tapBatches + 5) // 5 batches do not fit
	check(3)             // the reader took the first batch: one slot is free
	emit(tapBatches)     // one fits, after the gap of 5 batches; the rest are missed
	check(per - 3)       // the rest of the first batch
	emit(3)              // missed: the buffer is full again
	for next < seq {
		check(1)
	}
	if want := (tapBatches + 1) * per; read != want {
		t.Errorf("read %d records, want the %d that fit", read, want)
	}
	if gaps != 2 {
		t.Errorf("%d gaps reported, want 2 (before the batch that fit late, and at the end)", gaps)
	}
	if sub.bytes.Load() != 0 {
		t.Errorf("buffered bytes = %d after draining, want 0", sub.bytes.Load())
	}
}

// TestTapBufferBytesBound: a batch larger than the tap's byte budget is
// counted as missed, not buffered.
func TestTapBufferBytesBound(t *testing.T) {
	tap, sub := newTestTap(0, "")
	big := stages.Record{Raw: make([]byte, TapBufferBytes/2+1)}
	sub.offer([]stages.Record{big}, nil)
	sub.offer([]stages.Record{big}, nil) // over the budget
	if got := sub.bytes.Load(); got != int64(len(big.Raw)) {
		t.Errorf("buffered %d bytes, want %d", got, len(big.Raw))
	}
	recs, missed := drainTap(t, tap)
	if len(recs) != 1 || missed != 1 {
		t.Errorf("read %d, missed %d; want 1 and 1", len(recs), missed)
	}
}

// TestTapFilter: the filter keeps the records its expression holds for,
// with the filter step's engine; a record it fails on is not kept.
func TestTapFilter(t *testing.T) {
	tap, sub := newTestTap(0, `level == "error" && amount > 10`)
	sub.offer([]stages.Record{
		{Raw: []byte(`{"level":"error","amount":11}`), Parsed: true},
		{Raw: []byte(`{"level":"error","amount":9}`), Parsed: true},
		{Raw: []byte(`{"level":"info","amount":99}`), Parsed: true},
		{Raw: []byte(`not json`)},
		{Raw: []byte(`{"level":"error","amount":12}`), Parsed: true},
	}, nil)
	recs, _ := drainTap(t, tap)
	want := []string{`{"level":"error","amount":11}`, `{"level":"error","amount":12}`}
	if !slices.Equal(recs, want) {
		t.Errorf("filtered: %q, want %q", recs, want)
	}
}

// TestRuntimeTap: Tap checks its request against the running pipeline,
// attaches to the stage's tap point, and refuses a tap beyond MaxTaps.
func TestRuntimeTap(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	pipes := loadPipeline(t, dir, "p", `version: 1
sources:
  in: { type: file, path: in.jsonl, follow: true }
workers:
  w:
    inputs: [in]
    steps: [ parse_json: {} ]
    routes:
      errors: 'level == "error"'
sinks:
  out: { type: file, inputs: [w.errors], path: out.jsonl }
  dead: { type: file, path: dead.jsonl }
dead_letter: dead
`, nil)
	rt, err := New(Options{Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Stop()
	if _, err := rt.Apply(context.Background(), pipes); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		req  TapRequest
		want string
	}{
		{TapRequest{Pipeline: "nope", Stage: "w"}, `no pipeline "nope"`},
		{TapRequest{Pipeline: "p", Stage: "nope"}, `no stage "nope"`},
		{TapRequest{Pipeline: "p", Stage: "w", Route: "nope"}, `no route "nope"`},
		{TapRequest{Pipeline: "p", Stage: "out"}, `is a sink`},
		{TapRequest{Pipeline: "p", Stage: "w", Filter: "level =="}, `filter:`},
	} {
		if _, err := rt.Tap(c.req); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Tap(%+v) = %v, want an error with %q", c.req, err, c.want)
		}
	}
	var taps []*Tap
	for i := range MaxTaps {
		req := []TapRequest{
			{Pipeline: "p", Stage: "w"}, {Pipeline: "p", Stage: "w", Route: "errors"},
			{Pipeline: "p", Stage: "w", Route: "_unmatched"}, {Pipeline: "p", DeadLetter: true},
		}[i%4]
		tap, err := rt.Tap(req)
		if err != nil {
			t.Fatalf("tap %d (%+v): %v", i, req, err)
		}
		taps = append(taps, tap)
	}
	if _, err := rt.Tap(TapRequest{Pipeline: "p", Stage: "in"}); !errors.Is(err, ErrTooManyTaps) {
		t.Fatalf("tap %d: %v, want ErrTooManyTaps", MaxTaps+1, err)
	}
	taps[0].Close()
	taps[0].Close() // twice is fine, and frees one place only
	extra, err := rt.Tap(TapRequest{Pipeline: "p", Stage: "in"})
	if err != nil {
		t.Fatalf("a tap after one closed: %v", err)
	}
	if _, err := rt.Tap(TapRequest{Pipeline: "p", Stage: "in"}); !errors.Is(err, ErrTooManyTaps) {
		t.Fatalf("Close freed more than one place: %v", err)
	}
	extra.Close()
	for _, tap := range taps[1:] {
		tap.Close()
	}
	hub := &rt.Metrics().taps
	for _, id := range []string{"in", "w", "out", "dead"} {
		tp := hub.point("p", id)
		if tp.out.Load() != nil || tp.dl.Load() != nil {
			t.Errorf("stage %s: still tapped after every tap closed", id)
		}
	}
}

// BenchmarkPipelineW2Tap is BenchmarkPipelineW2 without a tap
// (untapped) and with a tap on its worker that nobody reads (unread): its
// buffer is full after the first batches, then every batch is counted,
// not copied. Both share one Metrics, so that the tap is the only
// difference; run them alternately on a quiet machine to compare.
func BenchmarkPipelineW2Tap(b *testing.B) {
	for _, mode := range []string{"untapped", "unread"} {
		b.Run(mode, func(b *testing.B) {
			mx := NewMetrics()
			sub := newTapSub(0)
			if mode == "unread" {
				tp := mx.taps.point("bench", "w2")
				tp.attach(&tp.out, sub)
			}
			benchPipelineWith(b, mx, benchW2, func(lines, debug int) int { return lines - debug })
			if missed := sub.missed.Load(); (mode == "unread") != (missed > 0) {
				b.Fatalf("%s: the tap missed %d records", mode, missed)
			}
		})
	}
}

// BenchmarkEmitTap measures what a tap costs the emitting goroutine per
// batch of 1024 records: none attached, one nobody reads (full: every
// batch is counted), one whose reader keeps up (every batch is copied).
// Compare with what the pipeline spends per batch (BenchmarkPipelineW2:
// records/s) for the share a tap takes.
func BenchmarkEmitTap(b *testing.B) {
	src := make([]stages.Record, 1024)
	for i := range src {
		src[i] = stages.Record{Raw: fmt.Appendf(nil, `{"ts":"2026-11-26T10:00:%02dZ","level":"info","seq":%d,"msg":"request served"}`, i%60, i), Parsed: true}
	}
	for _, mode := range []string{"none", "unread", "read"} {
		b.Run(mode, func(b *testing.B) {
			e, tp, out, _ := tapEmitter(b)
			tap, sub := newTestTap(0, "")
			if mode != "none" {
				tp.attach(&tp.out, sub)
			}
			batch := &stages.Batch{}
			b.ReportAllocs()
			for b.Loop() {
				batch.Records = src
				if !e.emit(msg{b: batch}) {
					b.Fatal("emit = false")
				}
				<-out
				if mode == "read" {
					for tap.Buffered() {
						tap.Next(context.Background())
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(src)), "ns/record")
		})
	}
}

// TestTapSurvivesReload: a tap on a worker goes on seeing its records
// when a reload rebuilds the worker with other steps.
func TestTapSurvivesReload(t *testing.T) {
	dir := t.TempDir()
	src := func(v int) string {
		return fmt.Sprintf(`version: 1
sources:
  gen: { type: generate, interval: 1ms }
workers:
  w:
    inputs: [gen]
    steps: [ parse_json: {}, set: { v: %d } ]
sinks:
  out: { type: file, inputs: [w], path: out.jsonl }
`, v)
	}
	rt, err := New(Options{Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Stop()
	if _, err := rt.Apply(context.Background(), loadPipeline(t, dir, "p", src(1), nil)); err != nil {
		t.Fatal(err)
	}
	tap, err := rt.Tap(TapRequest{Pipeline: "p", Stage: "w"})
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	waitV := func(want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		for {
			r, _, ok := tap.Next(ctx)
			if !ok {
				t.Fatalf("no record with %s through the tap", want)
			}
			if strings.Contains(string(r), want) {
				return
			}
		}
	}
	waitV(`"v":1`)
	changes, err := rt.Apply(context.Background(), loadPipeline(t, dir, "p", src(2), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reload: %+v", changes)
	waitV(`"v":2`)
}
