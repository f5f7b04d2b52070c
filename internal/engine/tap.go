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

// ErrNoTapTarget matches (errors.Is) Tap's error for an unknown
// pipeline, stage or route.
var ErrNoTapTarget = errors.New("no such pipeline, stage or route")

// notFound is an error naming what Tap could not find.
type notFound string

func (e notFound) Error() string        { return string(e) }
func (e notFound) Is(target error) bool { return target == ErrNoTapTarget }

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

// tapBatch is what a tap buffers per batch offered: the records copied,
// after the number of records missed just before them.
type tapBatch struct {
	missed uint64
	recs   []tapped
	size   int
}

// tapSub is one attached tap: a bounded buffer the emitting goroutines
// fill without blocking, and a count of what did not fit.
type tapSub struct {
	sel   uint64 // route bits of the records taken; 0: every record
	ch    chan tapBatch
	bytes atomic.Int64 // record bytes in ch
	// missed counts the records that did not fit since the last batch
	// put in ch: a batch takes the count along, so that the reader
	// learns of a gap where it was.
	missed atomic.Uint64
	// poke wakes a reader waiting on an empty ch when records are
	// missed (a batch too large for the whole budget).
	poke chan struct{}
}

func newTapSub(sel uint64) *tapSub {
	return &tapSub{sel: sel, ch: make(chan tapBatch, tapBatches), poke: make(chan struct{}, 1)}
}

// count is the number of records of recs the tap takes.
func (s *tapSub) count(recs []stages.Record, routes []uint64) int {
	if s.sel == 0 {
		return len(recs)
	}
	return selected(routes, s.sel, nil)
}

func (s *tapSub) takes(routes []uint64, j int) bool {
	return s.sel == 0 || (j < len(routes) && routes[j]&s.sel != 0)
}

// offer copies the records of recs whose route bits meet s.sel into s's
// buffer: as many as fit in its byte budget, when it has room for a
// batch; the others are counted as missed. It never blocks.
func (s *tapSub) offer(recs []stages.Record, routes []uint64) {
	if len(s.ch) == cap(s.ch) { // the reader is behind: count, copy nothing
		if n := s.count(recs, routes); n > 0 {
			s.miss(n)
		}
		return
	}
	n := s.count(recs, routes)
	if n == 0 {
		return
	}
	// The first records that fit in the byte budget (none when it is
	// spent: then this loop stops at once).
	budget := TapBufferBytes - int(s.bytes.Load())
	size, fit := 0, 0
	for j := range recs {
		if !s.takes(routes, j) {
			continue
		}
		l := len(recs[j].Raw)
		if size+l > budget {
			break
		}
		size += l
		fit++
	}
	if fit == 0 { // over the byte budget: the reader gets a later sample
		s.miss(n)
		return
	}
	b := tapBatch{recs: make([]tapped, 0, fit), size: size}
	buf := make([]byte, 0, size)
	for j := range recs {
		if len(b.recs) == fit {
			break
		}
		if !s.takes(routes, j) {
			continue
		}
		start := len(buf)
		buf = append(buf, recs[j].Raw...)
		b.recs = append(b.recs, tapped{raw: buf[start:len(buf):len(buf)], parsed: recs[j].Parsed})
	}
	s.bytes.Add(int64(size))
	b.missed = s.missed.Swap(0)
	select {
	case s.ch <- b:
		if fit < n {
			s.miss(n - fit) // the rest of the batch, after those kept
		}
	default: // another goroutine of the stage filled ch meanwhile
		s.bytes.Add(-int64(size))
		s.missed.Add(b.missed)
		s.miss(n)
	}
}

func (s *tapSub) miss(n int) {
	s.missed.Add(uint64(n))
	select {
	case s.poke <- struct{}{}:
	default:
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
	missed  uint64 // reported before pending
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
		return nil, notFound(fmt.Sprintf("no pipeline %q", req.Pipeline))
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
			return nil, notFound(fmt.Sprintf("pipeline %q has no stage %q", req.Pipeline, req.Stage))
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
				return nil, notFound(fmt.Sprintf("stage %q has no route %q", req.Stage, req.Route))
			}
			sel = 1 << bit
		}
		stageIDs = []string{req.Stage}
	}
	t := &Tap{hub: &rt.opts.Metrics.taps}
	if req.Filter != "" {
		c, err := steps.CompileRoute(req.Filter)
		if err != nil {
			return nil, fmt.Errorf("filter: %w", err)
		}
		r, err := steps.RouterOf([]string{"filter"}, []*steps.CompiledRoute{c})
		if err != nil {
			return nil, err
		}
		t.filter = r
	}
	hub := t.hub
	if hub.active.Add(1) > MaxTaps {
		hub.active.Add(-1)
		return nil, ErrTooManyTaps
	}
	t.sub = newTapSub(sel)
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
// until ctx is done (then ok is false), or, with rec nil, the number of
// records the tap missed (its reader was slow) at that point of the
// stream. rec is valid until the next call.
func (t *Tap) Next(ctx context.Context) (rec []byte, missed uint64, ok bool) {
	for {
		if n := t.missed; n > 0 {
			t.missed = 0
			return nil, n, true
		}
		for len(t.pending) > 0 {
			r := t.pending[0]
			t.pending = t.pending[1:]
			if t.keep(r) {
				return r.raw, 0, true
			}
		}
		if len(t.sub.ch) == 0 {
			// Misses not yet taken by a batch came after every
			// batch buffered.
			if n := t.sub.missed.Swap(0); n > 0 {
				return nil, n, true
			}
		}
		select {
		case <-ctx.Done():
			return nil, 0, false
		case <-t.sub.poke:
		case b := <-t.sub.ch:
			t.sub.bytes.Add(-int64(b.size))
			t.pending, t.missed = b.recs, b.missed
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

// Buffered reports whether Next has a record or a count ready without
// waiting.
func (t *Tap) Buffered() bool {
	return t.missed > 0 || len(t.pending) > 0 || len(t.sub.ch) > 0 || t.sub.missed.Load() > 0
}

// Close detaches the tap; it is safe to call more than once.
func (t *Tap) Close() {
	t.once.Do(func() {
		t.detach()
		t.hub.active.Add(-1)
	})
}
