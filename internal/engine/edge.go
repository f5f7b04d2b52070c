package engine

import (
	"context"
	"math"
	"sync"

	"github.com/etld/etld/internal/stages"
)

// msg is what travels on an edge: a batch of records, or a checkpoint
// barrier (epoch > 0) that separates the records before a checkpoint from
// those after it. Beside a batch it carries what only the runtime knows
// of it, which stages never see: its feed's flow-control ticket, and the
// ordered-merge keys computed by the worker in front of a merge.
type msg struct {
	b     *stages.Batch
	epoch uint64
	t     *ticket // flow control towards an ordered merge, or nil
	// keys, when keysOf is set, holds each record's merge key (order_by
	// field keysOf, Unix ns; noKey when unusable), so that the merge's
	// single goroutine does not parse every record.
	keys   []int64
	keysOf string
	// keysIndexed: every record's Raw was indexed by the step that wrote
	// it (stages.FieldIndex), so it is one valid JSON object, and the
	// merge's checkpoint need not validate it again.
	keysIndexed bool
	// routes, set by a worker with routes, holds each record's route
	// bits (see steps.Router); the emitter consumes it, it never
	// travels on an edge.
	routes []uint64
}

// noKey marks a record without a usable merge key in msg.keys.
const noKey = math.MinInt64

// release releases a consumed batch (see stages.Batch.Release) and hands
// its feed's room back.
func (m msg) release() {
	m.b.Release()
	m.t.drop()
}

// edgeCapacity is the number of messages an edge buffers. With batches of
// at most ~1024 records or 256 KiB, memory per edge stays around 1 MiB
// whatever the input size: a full edge blocks its sender (backpressure).
const edgeCapacity = 4

func newEdge() chan msg { return make(chan msg, edgeCapacity) }

// send delivers m on ch unless the hard stop comes first.
func send(hard context.Context, ch chan<- msg, m msg) bool {
	select {
	case ch <- m:
		return true
	case <-hard.Done():
		return false
	}
}

// recv receives the next message from ch; ok is false when ch is closed
// or the hard stop came first.
func recv(hard context.Context, ch <-chan msg) (m msg, ok bool) {
	select {
	case m, ok = <-ch:
		return m, ok
	case <-hard.Done():
		return msg{}, false
	}
}

// merge fans a stage's input edges into one channel, which it closes once
// every input is closed. Batches pass through as they come; barriers are
// aligned: an input that delivers barrier e is held until every open input
// has delivered e, then e is forwarded once. So everything before barrier e
// on any input is forwarded before it, and nothing after it.
//
// A hard stop (hard done) makes every forwarder return at once.
func merge(hard context.Context, inputs []chan msg) chan msg {
	return newAligner(hard, inputs).out
}

// newAligner is merge, keeping the aligner so inputs can be added later.
func newAligner(hard context.Context, inputs []chan msg) *aligner {
	out := make(chan msg)
	a := &aligner{out: out, hard: hard, live: len(inputs)}
	a.cond = sync.NewCond(&a.mu)
	if len(inputs) == 0 {
		close(out)
		return a
	}
	a.stopWake = context.AfterFunc(hard, func() {
		a.mu.Lock()
		a.aborted = true
		a.cond.Broadcast()
		a.mu.Unlock()
	})
	for _, in := range inputs {
		go a.forward(in)
	}
	return a
}

// add merges one more input. Only while no barrier is being aligned and
// at least one input is open (the pipeline is quiescent, see reconfigure).
func (a *aligner) add(in chan msg) {
	a.mu.Lock()
	a.live++
	a.mu.Unlock()
	go a.forward(in)
}

type aligner struct {
	out      chan msg
	hard     context.Context
	stopWake func() bool

	mu       sync.Mutex
	cond     *sync.Cond
	live     int    // inputs not closed yet
	pending  uint64 // epoch being aligned
	arrived  int    // inputs that delivered pending
	released uint64 // newest epoch forwarded
	aborted  bool
}

func (a *aligner) forward(in chan msg) {
	defer a.leave()
	for {
		m, ok := recv(a.hard, in)
		if !ok {
			return
		}
		if m.epoch == 0 {
			if !send(a.hard, a.out, m) {
				return
			}
			continue
		}
		if !a.arrive(m.epoch) {
			return
		}
	}
}

// arrive blocks until barrier e has arrived on every open input; the last
// input to arrive forwards it. It returns false when aborted.
func (a *aligner) arrive(e uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e <= a.released {
		return !a.aborted
	}
	a.pending = e
	a.arrived++
	if a.arrived >= a.live {
		return a.release()
	}
	for a.released < e && !a.aborted {
		a.cond.Wait()
	}
	return !a.aborted
}

// release forwards the pending barrier. Called with mu held.
func (a *aligner) release() bool {
	e := a.pending
	a.arrived = 0
	if !send(a.hard, a.out, msg{epoch: e}) {
		a.aborted = true
	}
	a.released = e
	a.cond.Broadcast()
	return !a.aborted
}

// leave marks an input closed: it may complete the pending alignment, and
// the last one closes out.
func (a *aligner) leave() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.live--
	if a.arrived > 0 && a.arrived >= a.live && !a.aborted {
		a.release()
	}
	if a.live == 0 {
		a.stopWake()
		close(a.out)
	}
}
