package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/steps"
)

// routeRecords are the records of the routing tests: level and duration
// decide the routes; "oops" makes the slow route's int() fail.
var routeRecords = []string{
	`{"i":0,"level":"info","duration_ms":10}`,
	`{"i":1,"level":"error","duration_ms":10}`,
	`{"i":2,"level":"info","duration_ms":5000}`,
	`{"i":3,"level":"error","duration_ms":5000}`,
	`{"i":4,"level":"debug","duration_ms":"oops"}`,
	`{"i":5,"level":"info"}`,
	`{"i":6,"level":"error","duration_ms":1001}`,
}

// runRouted runs the routing pipeline over recs in batches of batch
// records and returns the fake sinks by id, with the metrics.
func runRouted(t *testing.T, recs []string, batch int) (map[string]*fakeSink, *Metrics) {
	t.Helper()
	name := strings.ReplaceAll(t.Name(), "/", "_")
	src := newFakeSource(len(recs) + 1)
	addFake(t, name+"-src", src)
	sinks := map[string]*fakeSink{}
	for _, id := range []string{"errors", "slow", "rest", "all", "dl"} {
		sinks[id] = newFakeSink()
		addFake(t, name+"-"+id, sinks[id])
	}
	dir := t.TempDir()
	pipes := loadPipeline(t, dir, "route", fmt.Sprintf(`version: 1
dead_letter: dl
sources:
  in: { type: fake_finite, name: %[1]s-src }
workers:
  classify:
    inputs: [in]
    concurrency: 2
    steps: [ { parse_json: {} } ]
    routes:
      errors: 'level == "error"'
      slow: 'duration_ms != nil && int(duration_ms) > 1000'
      unread: 'i == 0'
sinks:
  errors: { type: fake, inputs: [classify.errors], name: %[1]s-errors }
  slow:   { type: fake, inputs: [classify.slow], name: %[1]s-slow }
  rest:   { type: fake, inputs: [classify._unmatched], name: %[1]s-rest }
  all:    { type: fake, inputs: [classify], name: %[1]s-all }
  dl:     { type: fake, name: %[1]s-dl }
`, name), nil)
	mx := NewMetrics()
	done := runAsync(context.Background(), pipes, Options{Logger: nopLogger(), Metrics: mx})
	o := &stages.Origin{Source: "in", Path: "mem"}
	for start := 0; start < len(recs); start += batch {
		b := &stages.Batch{}
		for i := start; i < min(start+batch, len(recs)); i++ {
			b.Records = append(b.Records, rec(o, int64(i), recs[i]))
		}
		src.feed <- b
	}
	close(src.feed)
	if err := recvWithin(t, done, hangTimeout, "the pipeline to finish"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	return sinks, mx
}

// ids returns the "i" of each JSON record, sorted.
func recordIDs(t *testing.T, recs []string) []int {
	t.Helper()
	var out []int
	for _, r := range recs {
		var i int
		if _, err := fmt.Sscanf(r[strings.Index(r, `"i":`)+4:], "%d", &i); err != nil {
			t.Fatalf("record %s: %v", r, err)
		}
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

func TestRoutesSplitRecords(t *testing.T) {
	for _, batch := range []int{1, 3, len(routeRecords)} {
		t.Run(fmt.Sprintf("batch%d", batch), func(t *testing.T) {
			sinks, mx := runRouted(t, routeRecords, batch)
			want := map[string][]int{
				"errors": {1, 3, 6}, // level == "error"
				"slow":   {2, 3, 6}, // overlaps errors: written once to each
				"rest":   {5},       // 0 matches "unread", which no sink reads: not unmatched
				"all":    {0, 1, 2, 3, 5, 6},
			}
			for id, w := range want {
				if got := recordIDs(t, sinks[id].Records()); !slices.Equal(got, w) {
					t.Errorf("sink %s got records %v, want %v", id, got, w)
				}
			}
			dl := sinks["dl"].Records()
			if len(dl) != 1 || !strings.Contains(dl[0], `"stage":"classify"`) || !strings.Contains(dl[0], "route slow") || !strings.Contains(dl[0], `\"i\":4`) {
				t.Errorf("dead letters = %v, want record 4 rejected by route slow", dl)
			}
			sm := mx.stage("route", "classify")
			if got := metricValue(t, sm.out); got != 6 {
				t.Errorf("records out = %v, want 6 (record 4 is dead-lettered)", got)
			}
			if got := metricValue(t, sm.errors); got != 1 {
				t.Errorf("errors = %v, want 1", got)
			}
		})
	}
}

// TestEmitRoutedSharesTicketAndKeys checks the emitter's routed path on
// its own: each output gets its records with their merge keys, every copy
// holds a share of the ticket (the room is freed once all are consumed),
// and records no output takes are counted as dropped.
func TestEmitRoutedSharesTicketAndKeys(t *testing.T) {
	mx := NewMetrics()
	a, b, c := newEdge(), newEdge(), newEdge()
	e := &emitter{stage: "w", outs: []chan msg{a, b, c}, sels: []uint64{1, 2, 1 << 63}, hard: context.Background(), m: mx.stage("p", "w")}
	released := 0
	tk := newTicket(feedKey{}, func() { released++ })
	o := &stages.Origin{Source: "in"}
	m := msg{
		b:      &stages.Batch{Records: []stages.Record{rec(o, 0, "r0"), rec(o, 1, "r1"), rec(o, 2, "r2"), rec(o, 3, "r3")}},
		t:      tk,
		keys:   []int64{10, 11, 12, 13},
		keysOf: "ts",
		// r0: route 0; r1: routes 0 and 1; r2: route 2 (nobody reads it); r3: unmatched
		routes: []uint64{1, 3, 4, 1 << 63},
	}
	if !e.emit(m) {
		t.Fatal("emit = false")
	}
	check := func(name string, ch chan msg, recs []string, keys []int64) msg {
		t.Helper()
		got := <-ch
		var rs []string
		for _, r := range got.b.Records {
			rs = append(rs, string(r.Raw))
		}
		if !slices.Equal(rs, recs) || !slices.Equal(got.keys, keys) || got.keysOf != "ts" || got.routes != nil {
			t.Errorf("%s got %v keys %v (of %q, routes %v), want %v keys %v", name, rs, got.keys, got.keysOf, got.routes, recs, keys)
		}
		return got
	}
	ga := check("a", a, []string{"r0", "r1"}, []int64{10, 11})
	gb := check("b", b, []string{"r1"}, []int64{11})
	gc := check("c", c, []string{"r3"}, []int64{13})
	for i, g := range []msg{ga, gb, gc} {
		if released != 0 {
			t.Fatalf("ticket released after %d of 3 consumers", i)
		}
		g.release()
	}
	if released != 1 {
		t.Errorf("ticket released %d times, want once", released)
	}
	if got := metricValue(t, e.m.out); got != 3 {
		t.Errorf("records out = %v, want 3", got)
	}
	if got := metricValue(t, e.m.noOutput); got != 1 {
		t.Errorf("dropped for no output = %v, want 1 (r2)", got)
	}
}

// BenchmarkRoutedEmit measures routing one batch of 1024 parsed records
// (two routes, one a `field == literal` and one through the VM) and
// emitting it to three outputs (each route and _unmatched).
func BenchmarkRoutedEmit(b *testing.B) {
	router, err := steps.NewRouter([]string{"errors", "slow"}, []string{`level == "error"`, `duration_ms > 1000`})
	if err != nil {
		b.Fatal(err)
	}
	outs := []chan msg{newEdge(), newEdge(), newEdge()}
	e := &emitter{stage: "w", outs: outs, sels: []uint64{1, 2, steps.Unmatched}, hard: context.Background(), m: NewMetrics().stage("p", "w")}
	o := &stages.Origin{Source: "in"}
	src := make([]stages.Record, 1024)
	for i := range src {
		level := []string{"info", "error", "warn", "debug"}[i%4]
		src[i] = stages.Record{Raw: fmt.Appendf(nil, `{"ts":"2024-05-01T10:00:%02d Z","level":%q,"duration_ms":%d,"msg":"request served"}`, i%60, level, i*7%2000), Parsed: true, Origin: o, Offset: int64(i)}
	}
	b.ReportAllocs()
	for b.Loop() {
		batch := &stages.Batch{Records: slices.Clone(src)}
		m := msg{b: batch}
		m.routes = router.Route(batch, make([]uint64, 0, len(batch.Records)))
		if !e.emit(m) {
			b.Fatal("emit = false")
		}
		for _, ch := range outs {
			if len(ch) > 0 {
				(<-ch).release()
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(src)), "ns/record")
}

// TestReconfigureSinkToRoute: a sink whose input changes from w to
// w.even on reload is replaced while the worker and the other sink keep
// running; from the swap on it gets only the route's records. Across the
// swap the plain sink holds every record once, and the routed one every
// even record once and no odd record written after the reload.
func TestReconfigureSinkToRoute(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.log")
	if err := os.WriteFile(in, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rt, logs := rcRuntime(t, dir, hangTimeout)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = rt.Stop()
		}
	})
	cfgOf := func(sideInput string) string {
		return `version: 1
checkpoint_interval: 50ms
sources:
  in: { type: file, path: in.log, follow: true }
workers:
  w:
    inputs: [in]
    concurrency: 2
    steps: [ { parse_json: {} } ]
    routes:
      even: 'seq % 2 == 0'
sinks:
  out:  { type: file, inputs: [w], path: out/out.jsonl }
  side: { type: file, inputs: [` + sideInput + `], path: out/side.jsonl }
`
	}
	w := rcStartWriter(t, in)
	// The first config reads the route too (else it is unread): side
	// reads w and a third sink the route.
	first := strings.Replace(cfgOf("w"), "sinks:\n", "sinks:\n  evens: { type: file, inputs: [w.even], path: out/evens.jsonl }\n", 1)
	if _, err := rt.Apply(context.Background(), []*config.Pipeline{rcLoad(t, dir, first)}); err != nil {
		t.Fatal(err)
	}
	out := &rcTail{t: t, path: filepath.Join(dir, "out", "out.jsonl")}
	side := &rcTail{t: t, path: filepath.Join(dir, "out", "side.jsonl")}
	waitFor(t, hangTimeout, "some records in side.jsonl", func() bool { return len(side.poll()) > 500 })

	changes, err := rt.Apply(context.Background(), []*config.Pipeline{rcLoad(t, dir, cfgOf("w.even"))})
	if err != nil || len(changes) != 1 || changes[0].Action != "reconfigured" {
		t.Fatalf("Apply with side reading w.even: %+v, %v; want reconfigured in place", changes, err)
	}
	rcCheckSwap(t, "side reads a route", logs, []string{"side"}, []string{"evens"}, nil)
	after := int(w.written.Load())
	waitFor(t, hangTimeout, "records read after the reload in out.jsonl", func() bool {
		return out.has(func(r rcRec) bool { return r.Seq >= after+500 })
	})
	total := w.halt()
	waitFor(t, hangTimeout, "every record in out.jsonl", func() bool { return len(out.poll()) >= total })
	waitFor(t, hangTimeout, "every even record in side.jsonl", func() bool {
		return side.has(func(r rcRec) bool { return r.Seq == (total-1)&^1 })
	})
	stopped = true
	if err := rt.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	rcCheckRun(t, "out.jsonl", out.final(), 0, total-1)
	var evens []rcRec
	for _, r := range side.final() {
		switch {
		case r.Seq%2 == 0:
			evens = append(evens, rcRec{Seq: r.Seq / 2})
		case r.Seq >= after:
			t.Errorf("side.jsonl has odd record %d, written after the reload (at %d)", r.Seq, after)
		}
	}
	rcCheckRun(t, "side.jsonl's even records (seq/2)", evens, 0, (total-1)/2)
}
