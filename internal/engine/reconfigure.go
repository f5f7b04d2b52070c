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

// testHookQuiesced, when set by a test, runs once the graph is quiescent
// (to widen the window in which nothing may move).
var testHookQuiesced func()

// errRestart means a change cannot be applied in place: the caller stops
// the pipeline and starts the new config from its checkpoint instead.
var errRestart = errors.New("the change needs a pipeline restart")

// swap describes a reconfiguration: stage ids by what happens to them.
type swap struct {
	kept, replaced, removed, added []string
	took                           time.Duration
}

func (s swap) empty() bool {
	return len(s.replaced) == 0 && len(s.removed) == 0 && len(s.added) == 0
}

// reconfigure changes the running pipeline into next in place (SPEC
// §3.2): stages whose fingerprint is unchanged keep running; changed
// stages are replaced, removed ones stop, added ones start.
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
func (p *pipeline) reconfigure(ctx context.Context, next *config.Pipeline, timeout time.Duration) (swap, error) {
	start := time.Now()
	old := p.config()
	if next.DeadLetter != old.DeadLetter || next.CheckpointInterval != old.CheckpointInterval {
		return swap{}, errRestart
	}
	if !p.wg.add() { // hold the pipeline open for the swap
		return swap{}, errRestart
	}
	defer p.wg.done()
	if p.stop.Err() != nil {
		return swap{}, errRestart
	}

	// Diff by fingerprint. A stage whose goroutines already returned (a
	// finished finite source, a sink whose inputs all ended) cannot take
	// new edges: it is rebuilt like a changed one.
	var sw swap
	fate := map[string]string{}
	for _, st := range old.Stages {
		ns := next.Stage(st.ID)
		switch {
		case ns == nil:
			sw.removed = append(sw.removed, st.ID)
			fate[st.ID] = "removed"
		case ns.Kind == st.Kind && ns.Fingerprint == st.Fingerprint && !p.hasExited(st.ID) &&
			(st.Kind != config.Source || (old.MergingSinkOf(st.ID) == "") == (next.MergingSinkOf(st.ID) == "")):
			// (A source that starts or stops feeding an ordered merge is
			// rebuilt: its flow control is set when it is built.)
			sw.kept = append(sw.kept, st.ID)
			fate[st.ID] = "kept"
		default:
			sw.replaced = append(sw.replaced, st.ID)
			fate[st.ID] = "replaced"
		}
	}
	for _, st := range next.Stages {
		if old.Stage(st.ID) == nil {
			sw.added = append(sw.added, st.ID)
			fate[st.ID] = "added"
		}
	}
	kept := func(id string) bool { return fate[id] == "kept" }
	if sw.empty() {
		p.setConfig(next) // only formatting or comments changed
		return sw, nil
	}

	// Edges: an edge between two kept stages stays; every other edge of
	// next is new.
	p.mu.Lock()
	oldEdges := p.edges
	p.mu.Unlock()
	edges := map[edgeKey]chan msg{}
	var fresh []edgeKey
	for _, k := range edgeKeys(next) {
		if ch, ok := oldEdges[k]; ok && kept(k.from) && kept(k.to) {
			edges[k] = ch
			continue
		}
		edges[k] = newEdge()
		fresh = append(fresh, k)
	}
	var dropped []edgeKey
	for k, ch := range oldEdges {
		if edges[k] != ch {
			dropped = append(dropped, k)
		}
	}

	// Build the new stages (no I/O).
	// abandon closes the new edges when the swap gives up: each exactly
	// once, through the kept emitter that owns it once rewired.
	var builds []*built
	rewired := false
	abandon := func() {
		for _, k := range fresh {
			if rewired && kept(k.from) {
				p.emitters[k.from].removeOut(edges[k])
			} else {
				close(edges[k])
			}
		}
	}
	for _, st := range next.Stages {
		if kept(st.ID) {
			continue
		}
		b, err := p.build(next, st, edges)
		if err != nil {
			abandon()
			return sw, fmt.Errorf("pipeline %q: not reloaded, the running one is kept: %w", next.Name, err)
		}
		builds = append(builds, b)
	}

	// Quiesce: park every running source after one more barrier and wait
	// for the checkpoint of that barrier.
	epoch, reached := p.ckpt.pause()
	defer p.ckpt.unpause()
	mergeWake := make(chan struct{})
	defer close(mergeWake)
	for _, s := range p.sinkList() {
		if s.merge != nil {
			s.hold.Store(&parkRequest{epoch: epoch, wake: mergeWake})
		}
	}
	wake := map[string]chan struct{}{}
	for _, s := range p.sourceList() {
		if p.hasExited(s.id) {
			continue
		}
		w := make(chan struct{})
		wake[s.id] = w
		s.hold(epoch, w)
	}
	wakeAll := func(quit func(string) bool) {
		for _, s := range p.sourceList() {
			if w, ok := wake[s.id]; ok {
				if quit(s.id) {
					s.quit.Store(true)
				}
				close(w)
				delete(wake, s.id)
			}
		}
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-reached:
	case <-t.C:
		abandon()
		wakeAll(func(string) bool { return false })
		return sw, fmt.Errorf("pipeline %q: not reloaded: the pipeline did not drain within %v (a sink failing?); the running one is kept", next.Name, timeout)
	case <-p.stop.Done():
		abandon()
		wakeAll(func(string) bool { return false })
		return sw, errRestart
	}
	drained := time.Since(start)
	if testHookQuiesced != nil {
		testHookQuiesced()
	}

	// A replaced sink whose successor merges by the same key hands its
	// merge buffer over instead of writing it out, so that changing, say,
	// max_lateness neither reorders nor loses anything.
	handoffs := map[*sinkRunner]*sinkRunner{}
	for _, b := range builds {
		if b.sink == nil || b.sink.merge == nil || fate[b.id] != "replaced" {
			continue
		}
		for _, o := range p.sinkList() {
			if o.id == b.id && o.merge != nil && o.merge.spec.OrderBy == b.sink.merge.spec.OrderBy {
				o.handoff.Store(true)
				handoffs[b.sink] = o
			}
		}
	}

	// Rewire: kept stages gain their new edges first, so that no merge
	// sees all its inputs close; then edges to or from stages that go
	// away are closed, and those stages' goroutines drain nothing and end.
	p.mu.Lock()
	for _, k := range fresh {
		ch := edges[k]
		if kept(k.to) {
			p.aligners[k.to].add(ch)
		}
		if kept(k.from) {
			if k.dl {
				p.emitters[k.from].setDL(ch)
			} else {
				p.emitters[k.from].addOut(ch)
			}
		}
	}
	for _, k := range dropped {
		if kept(k.from) {
			p.emitters[k.from].removeOut(oldEdges[k])
		}
	}
	rewired = true
	var goneGates []*sourceGate
	for _, s := range p.sources {
		if s.gate != nil && !kept(s.id) {
			goneGates = append(goneGates, s.gate)
		}
	}
	var gone []chan struct{}
	for _, id := range slices.Concat(sw.replaced, sw.removed) {
		gone = append(gone, p.exited[id])
	}
	p.mu.Unlock()
	// Only the sources that go away wake now (to quit); kept ones stay
	// parked until the new stages run, or what they read would go into
	// edges towards stages that may still fail to open.
	for _, s := range p.sourceList() {
		if w, ok := wake[s.id]; ok && !kept(s.id) {
			s.quit.Store(true)
			close(w)
			delete(wake, s.id)
		}
	}
	for _, g := range gone {
		select {
		case <-g:
		case <-t.C:
			abandon()
			p.cancelStop()
			wakeAll(func(string) bool { return true })
			return sw, fmt.Errorf("pipeline %q: replaced stages did not stop within %v: %w", next.Name, timeout, errRestart)
		}
	}

	// The merges: successors take over their predecessor's buffer, new
	// ones start from the last committed state (the newest key written),
	// kept ones learn their new upstream sources.
	for _, b := range builds {
		if b.sink == nil || b.sink.merge == nil {
			continue
		}
		spec := b.sink.merge.spec
		if o := handoffs[b.sink]; o != nil {
			b.sink.merge = o.merge
			b.sink.merge.retune(spec)
		} else if err := b.sink.restoreMerge(p.ckpt.latestMergeState(b.id)); err != nil {
			b.sink.log.Error().Err(err).Msg("merge state not restored; starting the merge empty")
		}
		b.sink.merge.setUpstream(next.UpstreamSources(b.id))
	}
	for _, s := range p.sinkList() {
		if kept(s.id) && s.merge != nil {
			s.merge.setUpstream(next.UpstreamSources(s.id))
		}
	}

	// Open the new stages: sinks first, then sources (reverse topological
	// order), each file source resuming where its predecessor stopped.
	var opened []func()
	fail := func(id string, err error) (swap, error) {
		for i := len(opened) - 1; i >= 0; i-- {
			opened[i]()
		}
		abandon()
		p.cancelStop() // what is left drains; the caller restarts
		wakeAll(func(string) bool { return true })
		return sw, fmt.Errorf("pipeline %q: stage %q: open: %v: %w", next.Name, id, err, errRestart)
	}
	for i := len(builds) - 1; i >= 0; i-- {
		if b := builds[i]; b.sink != nil {
			if err := b.sink.sink.Open(ctx); err != nil {
				return fail(b.id, err)
			}
			opened = append(opened, func() { _ = b.sink.sink.Close(context.Background()) })
		}
	}
	for i := len(builds) - 1; i >= 0; i-- {
		if b := builds[i]; b.source != nil {
			if st := p.ckpt.latestSourceState(b.id); st != nil {
				if r, ok := b.source.src.(stages.Stateful); ok {
					if err := r.Restore(st); err != nil {
						return fail(b.id, err)
					}
				}
			}
			if err := b.source.src.Open(ctx); err != nil {
				return fail(b.id, err)
			}
			opened = append(opened, func() { _ = b.source.src.Close() })
			b.source.registerFeed()
		}
	}

	// Commit the new stages' starting positions with the quiescent state,
	// so a crash before the next barrier rolls them back too.
	var newSrcs []*sourceRunner
	var newSinks []*sinkRunner
	for _, b := range builds {
		if b.source != nil {
			newSrcs = append(newSrcs, b.source)
		}
		if b.sink != nil {
			newSinks = append(newSinks, b.sink)
		}
	}
	merging := map[string]bool{}
	for _, st := range next.Sinks() {
		if st.Merge != nil {
			merging[st.ID] = true
		}
	}
	p.ckpt.keepMerges(merging) // a sink that stopped merging wrote its buffer out
	srcStates, sinkStates, err := p.states(newSrcs, newSinks)
	if err != nil {
		return fail("", err)
	}
	if err := p.ckpt.commitNow(srcStates, sinkStates); err != nil {
		return fail("", fmt.Errorf("cannot save the checkpoint of the new stages: %w", err))
	}

	// Adopt and start the new stages, then let the sources read again.
	p.mu.Lock()
	goneIDs := slices.Concat(sw.replaced, sw.removed)
	p.sources = slices.DeleteFunc(p.sources, func(s *sourceRunner) bool { return slices.Contains(goneIDs, s.id) })
	p.workers = slices.DeleteFunc(p.workers, func(w *workerRunner) bool { return slices.Contains(goneIDs, w.id) })
	p.sinks = slices.DeleteFunc(p.sinks, func(s *sinkRunner) bool { return slices.Contains(goneIDs, s.id) })
	for _, id := range goneIDs {
		delete(p.emitters, id)
		delete(p.aligners, id)
		delete(p.metrics, id)
		delete(p.exited, id)
	}
	for _, b := range builds {
		p.adoptLocked(b)
	}
	p.edges = edges
	p.cfg = next
	p.mu.Unlock()
	for _, b := range builds {
		if b.sink != nil {
			p.ckpt.addSink(b.id)
			p.launchSink(b.sink)
		}
	}
	for _, b := range builds {
		if b.worker != nil {
			p.launchWorker(b.worker)
		}
	}
	for _, b := range builds {
		if b.source != nil {
			p.launchSource(b.source)
		}
	}
	wakeAll(func(string) bool { return false })
	// The feeds of sources that went away end now, except those their
	// successors registered (so a merge never sees a replaced source's
	// feed end and start again, which could reorder it).
	for _, g := range goneGates {
		g.endAll()
	}
	sw.took = time.Since(start)
	p.log.Info().Strs("kept", sw.kept).Strs("replaced", sw.replaced).Strs("removed", sw.removed).
		Strs("added", sw.added).Dur("drain", drained).Dur("took", sw.took).Msg("pipeline reconfigured in place")
	return sw, nil
}

// hasExited reports whether a stage's goroutines have returned.
func (p *pipeline) hasExited(id string) bool {
	p.mu.Lock()
	ch := p.exited[id]
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
