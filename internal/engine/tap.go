package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/steps"
)

// Tap limits: a tap buffers at most tapBatches batches of at most
// TapBufferBytes bytes in all; a runtime serves at most MaxTaps taps at
// once.
const (
	MaxTaps        = 8
	TapBufferBytes = 1 << 20
	tapBatches     = 64
)

// ErrTooManyTaps is Tap's error when MaxTaps taps are attached already.
var ErrTooManyTaps = errors.New("too many taps: at most 8 at once")

// TapRequest says what to tap: the records leaving stage Stage of
// pipeline Pipeline (only those of its route Route when set), or, with
// DeadLetter, the dead-letter lines of that stage (of every stage when
// Stage is ""). Filter, when set, is an expression like a filter step's:
// the tap keeps the records for which it is true.
type TapRequest struct {
	Pipeline   string
	Stage      string
	Route      string
	DeadLetter bool
	Filter     string
}

// tapHub holds the tap points of every stage of a runtime, by pipeline
// and stage: a point outlives the stage's runners, so that a tap stays
// attached across a reload that rebuilds its stage.
type tapHub struct {
	mu     sync.Mutex
	points map[[2]string]*tapPoint
	active atomic.Int32
}

// tapPoint is where a stage's emitter offers its output to taps. With no
// tap attached, out and dl hold nil: the emitter pays one atomic load.
type tapPoint struct {
	mu  sync.Mutex                // serialises attach and detach
	out atomic.Pointer[[]*tapSub] // taps of the stage's output
	dl  atomic.Pointer[[]*tapSub] // taps of its dead letters
}

func (h *tapHub) point(pipeline, stage string) *tapPoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.points == nil {
		h.points = map[[2]string]*tapPoint{}
	}
	k := [2]string{pipeline, stage}
	tp := h.points[k]
	if tp == nil {
		tp = &tapPoint{}
		h.points[k] = tp
	}
	return tp
}

// tapped is one record copied at a tap point.
type tapped struct {
	raw    []byte
	parsed bool
}

// tapSub is one attached tap: a bounded buffer the emitting goroutines
// fill without blocking, and a count of what did not fit.
type tapSub struct {
	sel    uint64 // route bits of the records taken; 0: every record
	ch     chan []tapped
	bytes  atomic.Int64  // bytes in ch
	missed atomic.Uint64 // records that did not fit
}

// offer copies the records of b (those whose route bits meet s.sel)
// into s's buffer, as many as fit; the others are counted as missed. It
// never blocks.
func (s *tapSub) offer(recs []stages.Record, routes []uint64) {
	budget := TapBufferBytes - s.bytes.Load()
	n, size := 0, 0
	for j := range recs {
		if s.sel != 0 && (j >= len(routes) || routes[j]&s.sel == 0) {
			continue
		}
		n++
		size += len(recs[j].Raw)
	}
	if n == 0 {
		return
	}
	if int64(size) > budget || len(s.ch) == cap(s.ch) {
		s.missed.Add(uint64(n)) // a sample: later batches get in once the reader caught up
		return
	}
	buf := make([]byte, 0, size)
	out := make([]tapped, 0, n)
	for j := range recs {
		if s.sel != 0 && (j >= len(routes) || routes[j]&s.sel == 0) {
			continue
		}
		start := len(buf)
		buf = append(buf, recs[j].Raw...)
		out = append(out, tapped{raw: buf[start:len(buf):len(buf)], parsed: recs[j].Parsed})
	}
	s.bytes.Add(int64(size))
	select {
	case s.ch <- out:
	default:
		s.bytes.Add(-int64(size))
		s.missed.Add(uint64(n))
	}
}

// offerAll offers recs to every tap of list (nil: none).
func offerAll(list *[]*tapSub, recs []stages.Record, routes []uint64) {
	for _, s := range *list {
		s.offer(recs, routes)
	}
}

func (tp *tapPoint) attach(slot *atomic.Pointer[[]*tapSub], s *tapSub) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	var next []*tapSub
	if cur := slot.Load(); cur != nil {
		next = slices.Clone(*cur)
	}
	next = append(next, s)
	slot.Store(&next)
}

func (tp *tapPoint) detach(slot *atomic.Pointer[[]*tapSub], s *tapSub) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	cur := slot.Load()
	if cur == nil {
		return
	}
	next := slices.DeleteFunc(slices.Clone(*cur), func(x *tapSub) bool { return x == s })
	if len(next) == 0 {
		slot.Store(nil) // back to one atomic load that finds nothing
		return
	}
	slot.Store(&next)
}

// Tap is an attached tap. Read it with Next until it reports false, and
// Close it.
type Tap struct {
	sub    *tapSub
	detach func()
	filter *steps.Router // nil without a filter
	once   sync.Once
	hub    *tapHub

	pending []tapped
	masks   []uint64
	batch   stages.Batch
}

// Tap attaches a tap to a running pipeline's stage. The request is
// checked against the pipeline's current config: an unknown pipeline,
// stage or route, or an invalid filter, is an error naming it.
func (rt *Runtime) Tap(req TapRequest) (*Tap, error) {
	rt.mu.Lock()
	p := rt.pipes[req.Pipeline]
	rt.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("no pipeline %q", req.Pipeline)
	}
	cfg := p.config()
	var sel uint64
	var stageIDs []string
	switch {
	case req.DeadLetter && req.Stage == "":
		if cfg.DeadLetter == "" {
			return nil, fmt.Errorf("pipeline %q has no dead-letter sink", req.Pipeline)
		}
		for _, st := range cfg.Stages {
			stageIDs = append(stageIDs, st.ID)
		}
	default:
		st := cfg.Stage(req.Stage)
		if st == nil {
			return nil, fmt.Errorf("pipeline %q has no stage %q", req.Pipeline, req.Stage)
		}
		if req.DeadLetter {
			if req.Route != "" {
				return nil, errors.New("a route has no dead letters of its own: tap the stage's")
			}
			if cfg.DeadLetter == "" {
				return nil, fmt.Errorf("pipeline %q has no dead-letter sink", req.Pipeline)
			}
		} else if st.Kind == config.Sink {
			return nil, fmt.Errorf("stage %q is a sink: records do not leave it (tap its inputs, or its --dead-letter)", req.Stage)
		}
		if req.Route != "" {
			bit := -1
			if st.Worker != nil {
				bit = st.Worker.RouteIndex(req.Route)
			}
			if bit < 0 {
				return nil, fmt.Errorf("stage %q has no route %q", req.Stage, req.Route)
			}
			sel = 1 << bit
		}
		stageIDs = []string{req.Stage}
	}
	t := &Tap{hub: &rt.opts.Metrics.taps}
	if req.Filter != "" {
		r, err := steps.NewRouter([]string{"filter"}, []string{req.Filter})
		if err != nil {
			return nil, fmt.Errorf("filter: %w", err)
		}
		t.filter = r
	}
	hub := t.hub
	if hub.active.Add(1) > MaxTaps {
		hub.active.Add(-1)
		return nil, ErrTooManyTaps
	}
	t.sub = &tapSub{sel: sel, ch: make(chan []tapped, tapBatches)}
	var undo []func()
	for _, id := range stageIDs {
		tp := hub.point(req.Pipeline, id)
		slot := &tp.out
		if req.DeadLetter {
			slot = &tp.dl
		}
		tp.attach(slot, t.sub)
		undo = append(undo, func() { tp.detach(slot, t.sub) })
	}
	t.detach = func() {
		for _, f := range undo {
			f()
		}
	}
	return t, nil
}

// Next returns the next record that passes the filter, waiting for one
// until ctx is done (then ok is false). missed is the number of records
// the tap could not keep since the last call, because its reader was
// slow; the record is valid until the next call.
func (t *Tap) Next(ctx context.Context) (rec []byte, missed uint64, ok bool) {
	for {
		if n := t.sub.missed.Swap(0); n > 0 {
			return nil, n, true
		}
		for len(t.pending) > 0 {
			r := t.pending[0]
			t.pending = t.pending[1:]
			if t.keep(r) {
				return r.raw, 0, true
			}
		}
		select {
		case <-ctx.Done():
			return nil, 0, false
		case b := <-t.sub.ch:
			size := 0
			for _, r := range b {
				size += len(r.raw)
			}
			t.sub.bytes.Add(-int64(size))
			t.pending = b
		}
	}
}

// keep evaluates the filter on one record, with the filter step's engine
// (a record the expression fails on is not kept).
func (t *Tap) keep(r tapped) bool {
	if t.filter == nil {
		return true
	}
	t.batch.Records = append(t.batch.Records[:0], stages.Record{Raw: r.raw, Parsed: r.parsed, Offset: -1})
	t.batch.Rejects = t.batch.Rejects[:0]
	t.masks = t.filter.Route(&t.batch, t.masks)
	return len(t.masks) == 1 && t.masks[0]&1 != 0
}

// Close detaches the tap; it is safe to call more than once.
func (t *Tap) Close() {
	t.once.Do(func() {
		t.detach()
		t.hub.active.Add(-1)
	})
}
