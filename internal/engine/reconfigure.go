package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
)

// errRestart means a change cannot be applied in place: the caller stops
// the pipeline and starts the new config from its checkpoint instead.
var errRestart = errors.New("the change needs a pipeline restart")

// reconfigure changes the running pipeline into next in place (SPEC
// §3.2): stages whose fingerprint is unchanged keep running; changed
// stages are replaced, removed ones stop, added ones start. It executes
// the Plan of PlanReload step by step: plan, build, quiesce, rewire,
// open, commit.
//
// It works on a quiescent graph. Every source is asked for one more
// checkpoint barrier and parks right after injecting it; once every sink
// has flushed that barrier and the checkpoint is committed, no record is
// in flight anywhere. Then edges to and from replaced or removed stages
// are closed (their goroutines drain nothing and exit; a replaced sink
// flushes, fsyncs and closes its file), new stages are opened (a
// replaced file source resumes from the position its predecessor
// reported, a replaced file sink continues its file), new edges are
// attached to the stages that stay, and the sources resume. Unchanged
// stages keep their goroutines, channels and state; they pause only for
// the time it takes to drain and swap.
//
// New stages are built (no I/O) before anything is touched: a stage that
// cannot be built leaves the pipeline as it was. A stage that cannot open
// or a drain that does not finish within timeout stops the pipeline
// gracefully and returns errRestart wrapped, so that the caller restarts
// a whole pipeline (the previous config) from the committed checkpoint.
func (p *pipeline) reconfigure(ctx context.Context, next *config.Pipeline, timeout time.Duration) (Plan, error) {
	start := time.Now()
	if !p.wg.add() { // hold the pipeline open for the swap
		return PlanReload(p.config(), next), errRestart
	}
	defer p.wg.done()
	pl := p.planReload(next)
	if pl.Restart {
		return pl, fmt.Errorf("%w: %s", errRestart, pl.Reason)
	}
	if p.stop.Err() != nil {
		return pl, errRestart
	}
	if pl.empty() {
		p.setConfig(next) // only formatting or comments changed
		return pl, nil
	}

	r := &reload{p: p, plan: pl, next: next}
	if err := r.build(); err != nil {
		return pl, err
	}
	r.deadline = time.NewTimer(timeout)
	defer r.release()
	if err := r.quiesce(timeout); err != nil {
		return pl, err
	}
	drained := time.Since(start)
	if p.onQuiesced != nil {
		p.onQuiesced()
	}
	if err := r.rewire(timeout); err != nil {
		return pl, err
	}
	if err := r.open(ctx); err != nil {
		return pl, err
	}
	if err := r.commit(); err != nil {
		return pl, err
	}
	p.log.Info().Strs("kept", ids(pl.Keep)).Strs("replaced", ids(pl.Replace)).Strs("removed", ids(pl.Remove)).
		Strs("added", ids(pl.Add)).Dur("drain", drained).Dur("took", time.Since(start)).Msg("pipeline reconfigured in place")
	return pl, nil
}

// planReload is the plan of reconfiguring p into next now: PlanReload,
// plus the stages whose goroutines already returned (a finished finite
// source, a sink whose inputs all ended), which cannot take new edges
// and are rebuilt like changed ones. `etld plan` shows this same plan.
func (p *pipeline) planReload(next *config.Pipeline) Plan {
	old := p.config()
	pl := PlanReload(old, next)
	if !pl.Restart {
		pl.rebuildEnded(old, next, p.hasExited)
	}
	return pl
}

// reload is one execution of a Plan by reconfigure: what each step
// leaves for the next ones and for giving up.
type reload struct {
	p    *pipeline
	plan Plan
	next *config.Pipeline

	// build: the edges of next (kept ones are the running channels),
	// those that are new, the running ones that go away, and the new
	// stages.
	oldEdges, edges map[edgeKey]chan msg
	fresh, dropped  []edgeKey
	builds          []*built

	// quiesce: the pause, and the parked sources by id until they wake.
	deadline  *time.Timer // one timeout for the drain and the stop of replaced stages
	paused    bool
	mergeWake chan struct{}
	wake      map[string]chan struct{}

	// rewire: whether kept emitters own the fresh edges now, the merging
	// sinks handing their buffer to their successor, and the gates of
	// the sources that went away.
	rewired   bool
	handoffs  map[*sinkRunner]*sinkRunner
	goneGates []*sourceGate

	// open: how to close what was opened, newest last.
	opened []func()
}

func (r *reload) kept(id string) bool { return r.plan.kept(id) }

// gone lists the ids of the replaced and removed stages.
func (r *reload) gone() []string { return slices.Concat(ids(r.plan.Replace), ids(r.plan.Remove)) }

// build makes the edges of next and the new stages (no I/O). An edge
// between two kept stages stays; every other edge of next is new.
func (r *reload) build() error {
	p := r.p
	p.mu.Lock()
	r.oldEdges = p.edges
	p.mu.Unlock()
	r.edges = map[edgeKey]chan msg{}
	for _, k := range edgeKeys(r.next) {
		if ch, ok := r.oldEdges[k]; ok && r.kept(k.from) && r.kept(k.to) {
			r.edges[k] = ch
			continue
		}
		r.edges[k] = newEdge()
		r.fresh = append(r.fresh, k)
	}
	for k, ch := range r.oldEdges {
		if r.edges[k] != ch {
			r.dropped = append(r.dropped, k)
		}
	}
	for _, st := range r.next.Stages {
		if r.kept(st.ID) {
			continue
		}
		b, err := p.build(r.next, st, r.edges)
		if err != nil {
			r.abandon()
			return fmt.Errorf("pipeline %q: not reloaded, the running one is kept: %w", r.next.Name, err)
		}
		r.builds = append(r.builds, b)
	}
	return nil
}

// abandon closes the new edges when the swap gives up: each exactly
// once, through the kept emitter that owns it once rewired.
func (r *reload) abandon() {
	for _, k := range r.fresh {
		if r.rewired && r.kept(k.from) {
			r.p.emitters[k.from].removeOut(r.edges[k])
		} else {
			close(r.edges[k])
		}
	}
}

// wakeAll lets every source still parked go on, after marking those
// quit says to end.
func (r *reload) wakeAll(quit bool) {
	for _, s := range r.p.sourceList() {
		if w, ok := r.wake[s.id]; ok {
			if quit {
				s.quit.Store(true)
			}
			close(w)
			delete(r.wake, s.id)
		}
	}
}

// giveUp undoes a swap that cannot go on: the new edges close, and with
// stop the pipeline stops (what is left drains; the caller restarts).
func (r *reload) giveUp(stop bool) {
	r.abandon()
	if stop {
		r.p.cancelStop()
	}
	r.wakeAll(stop)
}

// release ends the pause (deferred by reconfigure).
func (r *reload) release() {
	r.deadline.Stop()
	if r.mergeWake != nil {
		close(r.mergeWake)
	}
	if r.paused {
		r.p.ckpt.unpause()
	}
}

// quiesce parks every running source after one more barrier and waits
// for the checkpoint of that barrier.
func (r *reload) quiesce(timeout time.Duration) error {
	p := r.p
	epoch, reached := p.ckpt.pause()
	r.paused = true
	r.mergeWake = make(chan struct{})
	for _, s := range p.sinkList() {
		if s.merge != nil {
			s.hold.Store(&parkRequest{epoch: epoch, wake: r.mergeWake})
		}
	}
	r.wake = map[string]chan struct{}{}
	for _, s := range p.sourceList() {
		if p.hasExited(s.id) {
			continue
		}
		w := make(chan struct{})
		r.wake[s.id] = w
		if !r.kept(s.id) {
			s.drainFirst.Store(true) // a Drainer going away empties itself before the barrier
		}
		s.hold(epoch, w)
	}
	select {
	case <-reached:
		return nil
	case <-r.deadline.C:
		r.giveUp(false)
		return fmt.Errorf("pipeline %q: not reloaded: the pipeline did not drain within %v (a sink failing?); the running one is kept", r.next.Name, timeout)
	case <-p.stop.Done():
		r.giveUp(false)
		return errRestart
	}
}

// rewire moves the quiescent graph to the edges of next: kept stages gain
// their new edges first, so that no merge sees all its inputs close; then
// edges to or from stages that go away are closed, and those stages'
// goroutines drain nothing and end.
func (r *reload) rewire(timeout time.Duration) error {
	p := r.p
	// A replaced sink whose successor merges by the same key hands its
	// merge buffer over instead of writing it out, so that changing, say,
	// max_lateness neither reorders nor loses anything.
	r.handoffs = map[*sinkRunner]*sinkRunner{}
	for _, b := range r.builds {
		if b.sink == nil || b.sink.merge == nil || !slices.Contains(r.plan.Handoff, b.id) {
			continue
		}
		for _, o := range p.sinkList() {
			if o.id == b.id && o.merge != nil && o.merge.spec.OrderBy == b.sink.merge.spec.OrderBy {
				o.handoff.Store(true)
				r.handoffs[b.sink] = o
			}
		}
	}

	p.mu.Lock()
	for _, k := range r.fresh {
		ch := r.edges[k]
		if r.kept(k.to) {
			p.aligners[k.to].add(ch)
		}
		if r.kept(k.from) {
			if k.dl {
				p.emitters[k.from].setDL(ch)
			} else {
				p.emitters[k.from].addOut(ch, edgeSel(r.next, k))
			}
		}
	}
	for _, k := range r.dropped {
		if r.kept(k.from) {
			p.emitters[k.from].removeOut(r.oldEdges[k])
		}
	}
	r.rewired = true
	for _, s := range p.sources {
		if s.gate != nil && !r.kept(s.id) {
			r.goneGates = append(r.goneGates, s.gate)
		}
	}
	var gone []chan struct{}
	for _, id := range r.gone() {
		gone = append(gone, p.exited[id])
	}
	// A Committer stage that ended earlier and still waits to learn its
	// final state is committed closes now: it is told what the quiescent
	// checkpoint holds for it. Those stopping now are told the same.
	for _, s := range p.sources {
		if !r.kept(s.id) {
			s.retired.retire()
		}
	}
	for _, s := range p.sinks {
		if !r.kept(s.id) {
			s.retired.retire()
		}
	}
	p.mu.Unlock()
	// Only the sources that go away wake now (to quit); kept ones stay
	// parked until the new stages run, or what they read would go into
	// edges towards stages that may still fail to open.
	for _, s := range p.sourceList() {
		if w, ok := r.wake[s.id]; ok && !r.kept(s.id) {
			s.quit.Store(true)
			close(w)
			delete(r.wake, s.id)
		}
	}
	for _, g := range gone {
		select {
		case <-g:
		case <-r.deadline.C:
			r.giveUp(true)
			return fmt.Errorf("pipeline %q: replaced stages did not stop within %v: %w", r.next.Name, timeout, errRestart)
		}
	}
	return nil
}

// open sets up the new merges and opens the new stages: sinks first,
// then sources (reverse topological order), each file source resuming
// where its predecessor stopped.
func (r *reload) open(ctx context.Context) error {
	p := r.p
	// Successors take over their predecessor's buffer, new merges start
	// from the last committed state (the newest key written), kept ones
	// learn their new upstream sources.
	for _, b := range r.builds {
		if b.sink == nil || b.sink.merge == nil {
			continue
		}
		spec := b.sink.merge.spec
		if o := r.handoffs[b.sink]; o != nil {
			b.sink.merge = o.merge
			b.sink.merge.retune(spec)
		} else if err := b.sink.restoreMerge(p.ckpt.latestMergeState(b.id)); err != nil {
			b.sink.log.Error().Err(err).Msg("merge state not restored; starting the merge empty")
		}
		b.sink.merge.setUpstream(r.next.UpstreamSources(b.id))
	}
	for _, s := range p.sinkList() {
		if r.kept(s.id) && s.merge != nil {
			s.merge.setUpstream(r.next.UpstreamSources(s.id))
		}
	}

	for i := len(r.builds) - 1; i >= 0; i-- {
		if b := r.builds[i]; b.sink != nil {
			if err := b.sink.sink.Open(ctx); err != nil {
				return r.fail(b.id, err)
			}
			r.opened = append(r.opened, func() { _ = b.sink.sink.Close(context.Background()) })
		}
	}
	for i := len(r.builds) - 1; i >= 0; i-- {
		if b := r.builds[i]; b.source != nil {
			if st := p.ckpt.latestSourceState(b.id); st != nil {
				if rs, ok := b.source.src.(stages.Stateful); ok {
					if err := rs.Restore(st); err != nil {
						return r.fail(b.id, err)
					}
				}
			}
			if err := b.source.src.Open(ctx); err != nil {
				return r.fail(b.id, err)
			}
			r.opened = append(r.opened, func() { _ = b.source.src.Close() })
			b.source.registerFeed()
		}
	}
	return nil
}

// fail closes what open opened and stops the pipeline: the caller
// restarts it.
func (r *reload) fail(id string, err error) error {
	for i := len(r.opened) - 1; i >= 0; i-- {
		r.opened[i]()
	}
	r.giveUp(true)
	return fmt.Errorf("pipeline %q: stage %q: open: %v: %w", r.next.Name, id, err, errRestart)
}

// commit saves the new stages' starting positions with the quiescent
// state, so a crash before the next barrier rolls them back too; then
// the pipeline adopts and starts the new stages, and the sources read
// again.
func (r *reload) commit() error {
	p := r.p
	var newSrcs []*sourceRunner
	var newSinks []*sinkRunner
	for _, b := range r.builds {
		if b.source != nil {
			newSrcs = append(newSrcs, b.source)
		}
		if b.sink != nil {
			newSinks = append(newSinks, b.sink)
		}
	}
	merging := map[string]bool{}
	for _, st := range r.next.Sinks() {
		if st.Merge != nil {
			merging[st.ID] = true
		}
	}
	p.ckpt.keepMerges(merging) // a sink that stopped merging wrote its buffer out
	srcStates, sinkStates, err := p.states(newSrcs, newSinks)
	if err != nil {
		return r.fail("", err)
	}
	if err := p.ckpt.commitNow(srcStates, sinkStates); err != nil {
		return r.fail("", fmt.Errorf("cannot save the checkpoint of the new stages: %w", err))
	}

	p.mu.Lock()
	goneIDs := r.gone()
	p.sources = slices.DeleteFunc(p.sources, func(s *sourceRunner) bool { return slices.Contains(goneIDs, s.id) })
	p.workers = slices.DeleteFunc(p.workers, func(w *workerRunner) bool { return slices.Contains(goneIDs, w.id) })
	p.sinks = slices.DeleteFunc(p.sinks, func(s *sinkRunner) bool { return slices.Contains(goneIDs, s.id) })
	for _, id := range goneIDs {
		delete(p.emitters, id)
		delete(p.aligners, id)
		delete(p.metrics, id)
		delete(p.exited, id)
		delete(p.ended, id)
	}
	for _, b := range r.builds {
		p.adoptLocked(b)
	}
	p.edges = r.edges
	p.cfg = r.next
	p.mu.Unlock()
	for _, b := range r.builds {
		if b.sink != nil {
			p.ckpt.addSink(b.id)
			p.launchSink(b.sink)
		}
	}
	for _, b := range r.builds {
		if b.worker != nil {
			p.launchWorker(b.worker)
		}
	}
	for _, b := range r.builds {
		if b.source != nil {
			p.launchSource(b.source)
		}
	}
	r.wakeAll(false)
	// The feeds of sources that went away end now, except those their
	// successors registered (so a merge never sees a replaced source's
	// feed end and start again, which could reorder it).
	for _, g := range r.goneGates {
		g.endAll()
	}
	return nil
}

// hasExited reports whether a stage stopped working: its goroutines
// returned, or it lingers only to learn its final state is committed.
func (p *pipeline) hasExited(id string) bool {
	p.mu.Lock()
	ch := p.ended[id]
	p.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// config returns the pipeline's current config.
func (p *pipeline) config() *config.Pipeline {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg
}

func (p *pipeline) setConfig(c *config.Pipeline) {
	p.mu.Lock()
	p.cfg = c
	p.mu.Unlock()
}

// name is the pipeline's name, which never changes.
func (p *pipeline) name() string { return p.config().Name }

// sinkList returns the running sinks.
func (p *pipeline) sinkList() []*sinkRunner {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sinks)
}
