package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/stages"
)

// funcStep is a Step made of a function.
type funcStep func(b *stages.Batch)

func (f funcStep) Process(b *stages.Batch) { f(b) }

// slowStep spends a random while on every batch (yielding, not
// sleeping), so that a worker's goroutines finish out of order.
var slowStep = funcStep(func(b *stages.Batch) {
	for range rand.IntN(200) {
		runtime.Gosched()
	}
})

// classifyStep drops records "drop" (filtered) and rejects records that
// start with "bad" (bad records), like filter and parse_json do.
var classifyStep = funcStep(func(b *stages.Batch) {
	keep := b.Records[:0]
	for _, r := range b.Records {
		switch s := string(r.Raw); {
		case s == "drop":
		case strings.HasPrefix(s, "bad"):
			b.Rejects = append(b.Rejects, stages.Reject{Record: r, Err: errors.New("cannot parse " + s)})
		default:
			keep = append(keep, r)
		}
	}
	b.Records = keep
})

// workerRig runs one workerRunner fed directly with msgs (standing for
// its merged inputs) and collects its output and dead-letter edges.
type workerRig struct {
	w       *workerRunner
	in      chan msg
	hard    context.Context
	cancel  context.CancelFunc
	mx      *Metrics
	done    chan struct{}
	collect sync.WaitGroup

	mu      sync.Mutex
	out, dl []msg
}

func newWorkerRig(t *testing.T, ordered bool, conc int, steps ...stages.Step) *workerRig {
	t.Helper()
	r := &workerRig{in: make(chan msg), mx: NewMetrics(), done: make(chan struct{})}
	r.hard, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(r.cancel)
	out, dl := newEdge(), newEdge()
	w := &workerRunner{
		id: "w", steps: steps, concurrency: conc, ordered: ordered, in: r.in,
		out: &emitter{stage: "w", outs: []chan msg{out}, dl: dl, hard: r.hard, m: r.mx.stage("p", "w"), badLog: zerolog.Nop()},
	}
	r.w = w
	go func() {
		defer close(r.done)
		w.run()
	}()
	r.collect.Go(func() {
		for m := range out {
			r.mu.Lock()
			r.out = append(r.out, m)
			r.mu.Unlock()
		}
	})
	r.collect.Go(func() {
		for m := range dl {
			r.mu.Lock()
			r.dl = append(r.dl, m)
			r.mu.Unlock()
		}
	})
	return r
}

// finish closes the input and waits for the worker and the collectors.
func (r *workerRig) finish(t *testing.T) {
	t.Helper()
	close(r.in)
	recvWithin(t, r.done, hangTimeout, "the worker to return")
	r.collect.Wait()
}

// workerInput is a generated input stream: batches of labelled records
// and barriers.
type workerInput struct {
	msgs []msg
	// order is the good records in arrival order; before[e] the number of
	// them that arrived before barrier e.
	order   []string
	before  map[uint64]int
	drops   int
	rejects []string
	// rejectFrom is the expected source and origin of every reject.
	rejectFrom map[string][2]string
	total      int
}

// genWorkerInput makes n batches from two origins, with barriers at
// random places. A good record is "g:<batch>:<i>".
func genWorkerInput(r *rand.Rand, n int) *workerInput {
	wi := &workerInput{before: map[uint64]int{}, rejectFrom: map[string][2]string{}}
	origins := []*stages.Origin{{Source: "alpha", Path: "/in/alpha.log"}, {Source: "beta", Path: "/in/beta.log"}}
	var epoch uint64
	for bi := range n {
		o := origins[bi%2]
		b := &stages.Batch{}
		for i := range 1 + r.IntN(4) {
			var s string
			switch x := r.IntN(10); {
			case x == 0:
				s = "drop"
				wi.drops++
			case x == 1:
				s = fmt.Sprintf("bad:%d:%d", bi, i)
				wi.rejects = append(wi.rejects, s)
				wi.rejectFrom[s] = [2]string{o.Source, fmt.Sprintf("%s:%d", o.Path, 100*bi)}
			default:
				s = fmt.Sprintf("g:%d:%d", bi, i)
				wi.order = append(wi.order, s)
			}
			b.Records = append(b.Records, stages.Record{Raw: []byte(s), Origin: o, Offset: int64(100 * bi)})
			wi.total++
		}
		wi.msgs = append(wi.msgs, msg{b: b})
		if r.IntN(6) == 0 {
			epoch++
			wi.before[epoch] = len(wi.order)
			wi.msgs = append(wi.msgs, msg{epoch: epoch})
		}
	}
	return wi
}

// flatten lists the records and barriers of an edge's messages: a record
// as its Raw, a barrier as "#e".
func flatten(ms []msg) []string {
	var out []string
	for _, m := range ms {
		if m.b == nil {
			out = append(out, "#"+strconv.FormatUint(m.epoch, 10))
			continue
		}
		if len(m.b.Rejects) > 0 {
			out = append(out, "REJECTS-NOT-CLEARED")
		}
		for _, rc := range m.b.Records {
			out = append(out, string(rc.Raw))
		}
	}
	return out
}

func TestWorker(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		for conc := 1; conc <= 8; conc++ {
			t.Run(fmt.Sprintf("ordered=%v/concurrency=%d", ordered, conc), func(t *testing.T) {
				t.Parallel()
				rnd := rand.New(rand.NewPCG(uint64(conc), 7))
				wi := genWorkerInput(rnd, 300)
				rig := newWorkerRig(t, ordered, conc, slowStep, classifyStep, slowStep)
				for _, m := range wi.msgs {
					rig.in <- m
				}
				rig.finish(t)

				got := flatten(rig.out)
				var goods []string
				pos := map[string]int{}
				for i, s := range got {
					if strings.HasPrefix(s, "#") {
						continue
					}
					if _, dup := pos[s]; dup {
						t.Errorf("record %s emitted twice", s)
					}
					pos[s] = i
					goods = append(goods, s)
				}
				if len(goods) != len(wi.order) {
					t.Errorf("emitted %d good records, want %d", len(goods), len(wi.order))
				}
				if ordered && strings.Join(goods, " ") != strings.Join(wi.order, " ") {
					t.Errorf("ordered worker changed the arrival order:\ngot  %v\nwant %v", goods, wi.order)
				}
				// Barriers: each once, in order, after every record that
				// arrived before it and before every record after it.
				var epochs []string
				for i, s := range got {
					if !strings.HasPrefix(s, "#") {
						continue
					}
					epochs = append(epochs, s)
					e, _ := strconv.ParseUint(s[1:], 10, 64)
					for k, g := range wi.order {
						at, ok := pos[g]
						if !ok {
							continue
						}
						if k < wi.before[e] && at > i {
							t.Errorf("record %s arrived before barrier %d but was emitted after it", g, e)
						}
						if k >= wi.before[e] && at < i {
							t.Errorf("record %s arrived after barrier %d but was emitted before it", g, e)
						}
					}
				}
				if want := len(wi.before); len(epochs) != want {
					t.Errorf("worker forwarded barriers %v, want %d barriers", epochs, want)
				}
				for i, s := range epochs {
					if s != "#"+strconv.Itoa(i+1) {
						t.Errorf("barriers out of order: %v", epochs)
						break
					}
				}

				// Rejects reach the dead-letter edge, before the barrier
				// that followed them, and so do the barriers.
				dlLines := flatten(rig.dl)
				var dlEpochs, dlRecords []string
				for _, s := range dlLines {
					if strings.HasPrefix(s, "#") {
						dlEpochs = append(dlEpochs, s)
						continue
					}
					var line map[string]any
					if err := json.Unmarshal([]byte(s), &line); err != nil {
						t.Fatalf("dead-letter line %q is not JSON: %v", s, err)
					}
					rec, _ := line["record"].(string)
					dlRecords = append(dlRecords, rec)
					from := wi.rejectFrom[rec]
					if line["stage"] != "w" || line["error"] != "cannot parse "+rec ||
						line["source"] != from[0] || line["origin"] != from[1] || len(line) != 5 {
						t.Errorf("dead-letter line %s: want error, stage w, source %s, origin %s, record", s, from[0], from[1])
					}
				}
				if strings.Join(dlEpochs, " ") != strings.Join(epochs, " ") {
					t.Errorf("dead-letter edge got barriers %v, want %v", dlEpochs, epochs)
				}
				if len(dlRecords) != len(wi.rejects) {
					t.Errorf("dead-lettered %d records, want %d", len(dlRecords), len(wi.rejects))
				}
				if ordered && strings.Join(dlRecords, " ") != strings.Join(wi.rejects, " ") {
					t.Errorf("ordered worker dead-lettered out of order:\ngot  %v\nwant %v", dlRecords, wi.rejects)
				}

				m := rig.mx
				checkCounter(t, "records in", m.recordsIn.WithLabelValues("p", "w"), wi.total)
				checkCounter(t, "records out", m.recordsOut.WithLabelValues("p", "w"), len(wi.order))
				checkCounter(t, "filtered", m.dropped.WithLabelValues("p", "w", reasonFiltered), wi.drops)
				checkCounter(t, "dead-lettered", m.deadLettered.WithLabelValues("p", "w"), len(wi.rejects))
				checkCounter(t, "errors", m.errors.WithLabelValues("p", "w"), len(wi.rejects))
				checkCounter(t, "bad records dropped", m.dropped.WithLabelValues("p", "w", reasonBadRecord), 0)
			})
		}
	}
}

func checkCounter(t *testing.T, what string, c prometheus.Metric, want int) {
	t.Helper()
	if got := metricValue(t, c); got != float64(want) {
		t.Errorf("%s counter = %v, want %d", what, got, want)
	}
}

// metricValue reads a counter or gauge. (prometheus/testutil would need
// a module that go.sum does not have.)
func metricValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%v is neither a counter nor a gauge", c.Desc())
	return 0
}

// chainSteps makes batch i (its one record is "i") wait until batch i+1
// has been processed, so n batches in flight finish in reverse order.
func chainSteps(n int) (stages.Step, []chan struct{}) {
	done := make([]chan struct{}, n+1)
	for i := range done {
		done[i] = make(chan struct{})
	}
	close(done[n])
	return funcStep(func(b *stages.Batch) {
		i, _ := strconv.Atoi(string(b.Records[0].Raw))
		if i < n {
			<-done[i+1]
			close(done[i])
		}
	}), done
}

// TestWorkerOrderedReverseCompletion: with n goroutines, n batches that
// finish last-to-first are still emitted first-to-last by an ordered
// worker; either kind forwards the following barrier only after all n.
func TestWorkerOrderedReverseCompletion(t *testing.T) {
	for _, ordered := range []bool{true, false} {
		for n := 2; n <= 8; n++ {
			t.Run(fmt.Sprintf("ordered=%v/concurrency=%d", ordered, n), func(t *testing.T) {
				step, _ := chainSteps(n)
				rig := newWorkerRig(t, ordered, n, step)
				o := &stages.Origin{Source: "s"}
				for i := range n {
					rig.in <- msg{b: &stages.Batch{Records: []stages.Record{rec(o, int64(i), strconv.Itoa(i))}}}
				}
				rig.in <- msg{epoch: 1}
				rig.in <- msg{b: &stages.Batch{Records: []stages.Record{rec(o, int64(n), strconv.Itoa(n))}}}
				rig.finish(t)
				got := flatten(rig.out)
				if len(got) != n+2 {
					t.Fatalf("emitted %v, want %d records and a barrier", got, n+1)
				}
				if got[n] != "#1" || got[n+1] != strconv.Itoa(n) {
					t.Errorf("emitted %v: want the barrier after the first %d records and before %d", got, n, n)
				}
				if ordered {
					for i := range n {
						if got[i] != strconv.Itoa(i) {
							t.Errorf("ordered worker emitted %v, want 0..%d in order", got, n)
							break
						}
					}
				}
			})
		}
	}
}

// TestWorkerHardStop: the hard stop ends a worker whose goroutines are
// blocked sending downstream (nobody reads its output) or processing.
func TestWorkerHardStop(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("ordered=%v/blocked emitting", ordered), func(t *testing.T) {
			mx := NewMetrics()
			hard, cancel := context.WithCancel(context.Background())
			defer cancel()
			in, out := make(chan msg), make(chan msg) // nobody reads out
			w := &workerRunner{id: "w", concurrency: 3, ordered: ordered, in: in,
				out: &emitter{stage: "w", outs: []chan msg{out}, hard: hard, m: mx.stage("p", "w"), badLog: zerolog.Nop()}}
			done := make(chan struct{})
			go func() {
				defer close(done)
				w.run()
			}()
			o := &stages.Origin{Source: "s"}
			fed := make(chan struct{})
			go func() {
				defer close(fed)
				for i := 0; ; i++ {
					if !send(hard, in, msg{b: &stages.Batch{Records: []stages.Record{rec(o, int64(i), "x")}}}) {
						return
					}
				}
			}()
			// The feeder blocks once the worker's goroutines are all
			// stuck sending downstream.
			waitFor(t, hangTimeout, "the worker to take its fill", func() bool {
				return metricValue(t, mx.recordsIn.WithLabelValues("p", "w")) >= 3
			})
			cancel()
			<-fed
			recvWithin(t, done, hangTimeout, "the worker to return at the hard stop")
			// The worker closed its output; what got in before the stop
			// may be there, nothing else.
			for range out {
			}
		})
		t.Run(fmt.Sprintf("ordered=%v/blocked in a step", ordered), func(t *testing.T) {
			gate := newGate()
			rig := newWorkerRig(t, ordered, 2, gate)
			o := &stages.Origin{Source: "s"}
			for i := range 2 {
				rig.in <- msg{b: &stages.Batch{Records: []stages.Record{rec(o, int64(i), "x")}}}
			}
			waitFor(t, hangTimeout, "both batches in the step", func() bool { return gate.Entered() == 2 })
			rig.cancel()
			close(gate.open) // steps are synchronous: the stop waits for them
			recvWithin(t, rig.done, hangTimeout, "the worker to return at the hard stop")
			rig.collect.Wait()
		})
	}
}

// holdFirst blocks the batch of record "0" until release is closed and
// counts the batches it processed.
type holdFirst struct {
	release chan struct{}
	n       atomic.Int64
}

func (h *holdFirst) Process(b *stages.Batch) {
	h.n.Add(1)
	if string(b.Records[0].Raw) == "0" {
		<-h.release
	}
}

// TestWorkerOrderedSlowBatchBounded: a slow batch in an ordered worker
// holds back at most the reorder buffer (2 x concurrency slots): the
// worker then stops taking input (backpressure) instead of processing
// and buffering everything behind it. Once the slow batch is done, every
// batch comes out, in order.
func TestWorkerOrderedSlowBatchBounded(t *testing.T) {
	const conc, total = 3, 200
	h := &holdFirst{release: make(chan struct{})}
	rig := newWorkerRig(t, true, conc, h)
	o := &stages.Origin{Source: "s"}
	var sent atomic.Int64
	go func() {
		for i := range total {
			rig.in <- msg{b: &stages.Batch{Records: []stages.Record{rec(o, int64(i), strconv.Itoa(i))}}}
			sent.Add(1)
		}
	}()
	// The worker takes the slow batch, 2 x conc more into its reorder
	// buffer and one in hand; its free goroutines process those.
	const bound = 2*conc + 2
	waitFor(t, hangTimeout, "the reorder buffer to fill", func() bool { return h.n.Load() >= bound-1 })
	// Nothing more is taken while the slow batch holds (a quiet period:
	// this can only pass wrongly, never fail wrongly).
	quiet := time.NewTimer(200 * time.Millisecond)
	<-quiet.C
	if n, s := h.n.Load(), sent.Load(); n > bound || s > bound+1 {
		t.Fatalf("with the first batch held, the worker processed %d batches and took %d; want at most %d", n, s, bound)
	}
	rig.mu.Lock()
	emitted := len(flatten(rig.out))
	rig.mu.Unlock()
	if emitted != 0 {
		got := emitted
		t.Fatalf("%d records emitted ahead of the held first batch", got)
	}
	close(h.release)
	waitFor(t, hangTimeout, "every batch sent", func() bool { return sent.Load() == total })
	rig.finish(t)
	got := flatten(rig.out)
	if len(got) != total {
		t.Fatalf("%d records out, want %d", len(got), total)
	}
	for i, s := range got {
		if s != strconv.Itoa(i) {
			t.Fatalf("record %d is %s: out of order", i, s)
		}
	}
}
