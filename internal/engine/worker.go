package engine

import (
	"sync"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/steps"
)

// workerRunner runs a worker's steps on `concurrency` goroutines over the
// merged stream of its inputs.
type workerRunner struct {
	id          string
	steps       []stages.Step
	concurrency int
	ordered     bool
	orderBy     string        // the order_by field of the merging sink it feeds, or ""
	router      *steps.Router // the worker's routes, or nil
	in          chan msg      // merged inputs
	out         *emitter
}

// process applies the steps to the batch of m and counts what they did.
func (w *workerRunner) process(m *msg) {
	b := m.b
	b.SplitRuns() // steps look at Records
	n := len(b.Records)
	w.out.m.in.Add(float64(n))
	for k, st := range w.steps {
		if len(b.Records) == 0 {
			break
		}
		// Index the fields a step writes when a step or the merge key
		// reads them next.
		b.IndexFields = k < len(w.steps)-1 || w.orderBy != ""
		st.Process(b)
	}
	b.IndexFields = false
	if f := n - len(b.Records) - len(b.Rejects); f > 0 {
		w.out.m.filtered.Add(float64(f))
	}
	if w.router != nil && len(b.Records) > 0 {
		// After the steps, in this goroutine: one pass sets every
		// record's route bits; a failing expression rejects the record.
		m.routes = w.router.Route(b, make([]uint64, 0, len(b.Records)))
	}
	if w.orderBy != "" {
		setKeys(m, w.orderBy)
	}
	// The steps' field index has served, and so have the buffers of
	// records the steps rewrote: recycle them before the batch waits in
	// channels and in the merge.
	b.DropFields()
	b.ReleaseUnused()
}

// run returns once its inputs are closed and everything is emitted, or
// at the hard stop. It closes the worker's outgoing edges.
func (w *workerRunner) run() {
	defer w.out.close()
	if w.ordered {
		w.runOrdered()
	} else {
		w.runUnordered()
	}
}

// runUnordered: the goroutines emit batches as they finish them. A
// barrier waits until every batch received before it has been emitted.
func (w *workerRunner) runUnordered() {
	jobs := make(chan msg)
	var inflight, pool sync.WaitGroup
	for range w.concurrency {
		pool.Go(func() {
			for m := range jobs {
				w.process(&m)
				w.out.emit(m)
				inflight.Done()
			}
		})
	}
	defer pool.Wait()
	defer close(jobs)
	for {
		m, ok := recv(w.out.hard, w.in)
		if !ok {
			return
		}
		if m.b != nil {
			inflight.Add(1)
			select {
			case jobs <- m:
			case <-w.out.hard.Done():
				inflight.Done()
				return
			}
			continue
		}
		inflight.Wait()
		if !w.out.barrier(m.epoch) {
			return
		}
	}
}

// slot is one message of an ordered worker, emitted in arrival order.
type slot struct {
	m    msg
	done chan struct{}
}

// runOrdered: batches are processed concurrently but emitted in the order
// they arrived, which keeps every input's order; barriers keep their place.
func (w *workerRunner) runOrdered() {
	jobs := make(chan *slot)
	order := make(chan *slot, 2*w.concurrency)
	var pool sync.WaitGroup
	for range w.concurrency {
		pool.Go(func() {
			for s := range jobs {
				w.process(&s.m)
				close(s.done)
			}
		})
	}
	var emitter sync.WaitGroup
	emitter.Go(func() {
		for s := range order {
			select {
			case <-s.done:
			case <-w.out.hard.Done():
				return
			}
			if s.m.b != nil {
				if !w.out.emit(s.m) {
					return
				}
			} else if !w.out.barrier(s.m.epoch) {
				return
			}
		}
	})
	defer emitter.Wait()
	defer pool.Wait()
	defer close(order)
	defer close(jobs)
	for {
		m, ok := recv(w.out.hard, w.in)
		if !ok {
			return
		}
		s := &slot{m: m, done: make(chan struct{})}
		if m.b == nil {
			close(s.done)
		}
		select {
		case order <- s:
		case <-w.out.hard.Done():
			return
		}
		if m.b != nil {
			select {
			case jobs <- s:
			case <-w.out.hard.Done():
				return
			}
		}
	}
}
