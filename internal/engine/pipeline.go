package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/fswatch"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/state"
	"github.com/rs/zerolog"
)

// pipeline is one running pipeline: its stages, the edges between them,
// and the goroutines that drive them.
type pipeline struct {
	cfg   *config.Pipeline
	log   zerolog.Logger
	mx    *Metrics
	store *state.Store
	fsw   *fswatch.Watcher   // for the stages' Settings
	own   *stages.OwnOutputs // for the stages' Settings

	// The runners, in topological order. They change only in
	// reconfigure, with mu held.
	sources []*sourceRunner
	workers []*workerRunner
	sinks   []*sinkRunner

	// hard aborts everything at once (shutdown timeout); stop, its child,
	// makes the sources stop reading so that the rest drains.
	hard       context.Context
	cancelHard context.CancelFunc
	stop       context.Context
	cancelStop context.CancelFunc

	ckpt checkpointer

	// board is the flow control of the feeds of ordered merges.
	board *feedBoard

	// Wiring, for queue lengths and reconfiguration (guarded by mu).
	edges    map[edgeKey]chan msg
	emitters map[string]*emitter
	aligners map[string]*aligner
	metrics  map[string]*stageMetrics
	exited   map[string]chan struct{} // closed when a stage's goroutines return
	ended    map[string]chan struct{} // closed when a stage stopped working (see linger)

	wg group // every stage goroutine, plus a token during reconfigure
	// lingering counts the Committer stages that ended and wait, not
	// closed yet, for the checkpoint holding their final state (linger);
	// finalDone is closed once the final checkpoint is saved, failed or
	// skipped.
	lingering sync.WaitGroup
	finalDone chan struct{}
	mu        sync.Mutex
	errs      []error // stage failures
	done      chan struct{}

	onQuiesced func() // Options.onQuiesced
}

// group counts running goroutines, like a sync.WaitGroup whose zero is
// final: once the count has dropped to zero, add fails instead of reviving
// a finished pipeline.
type group struct {
	mu     sync.Mutex
	n      int
	closed bool
	zero   chan struct{}
}

func (g *group) init() { g.zero = make(chan struct{}) }

// add counts one more; false when the group already reached zero.
func (g *group) add() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

func (g *group) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.n == 0 {
		g.closed = true
		close(g.zero)
	}
}

// Go runs f in a counted goroutine (f is not run when the group is done).
// f may call release to stop being counted before it returns, once.
func (g *group) Go(f func(release func())) {
	if !g.add() {
		return
	}
	go func() {
		var once sync.Once
		release := func() { once.Do(g.done) }
		defer release()
		f(release)
	}()
}

func (g *group) zeroed() <-chan struct{} { return g.zero }

// edgeKey names an edge: from an upstream stage to a downstream one, or
// (dl) from a stage to the dead-letter sink.
type edgeKey struct {
	from, to string
	dl       bool
}

// edgeKeys lists the edges of a pipeline graph: one per (upstream,
// downstream) pair, plus one from every other stage to the dead-letter
// sink (a sink's carries the records it can never write).
func edgeKeys(cfg *config.Pipeline) []edgeKey {
	var keys []edgeKey
	for _, st := range cfg.Stages {
		for _, in := range st.Inputs {
			keys = append(keys, edgeKey{from: in, to: st.ID})
		}
	}
	if cfg.DeadLetter != "" {
		for _, st := range cfg.Stages {
			if st.ID != cfg.DeadLetter {
				keys = append(keys, edgeKey{from: st.ID, to: cfg.DeadLetter, dl: true})
			}
		}
	}
	return keys
}

// edgeSel returns the route bits of the records edge k carries (see
// steps.Router): those of the route its downstream reads, or 0 for every
// record.
func edgeSel(cfg *config.Pipeline, k edgeKey) uint64 {
	to, from := cfg.Stage(k.to), cfg.Stage(k.from)
	if k.dl || to == nil || from == nil || from.Worker == nil {
		return 0
	}
	i := slices.Index(to.Inputs, k.from)
	if i < 0 || i >= len(to.InputRoutes) || to.InputRoutes[i] == "" {
		return 0
	}
	bit := from.Worker.RouteIndex(to.InputRoutes[i])
	if bit < 0 {
		return 0 // not a valid config: Load reports it
	}
	return 1 << bit
}

// stageError names the pipeline and stage of a failure.
type stageError struct {
	Pipeline, Stage string
	Err             error
}

func (e *stageError) Error() string {
	return fmt.Sprintf("pipeline %q: stage %q: %v", e.Pipeline, e.Stage, e.Err)
}

func (e *stageError) Unwrap() error { return e.Err }

// newPipeline builds the stages of cfg and wires them; it does no I/O.
func newPipeline(cfg *config.Pipeline, log zerolog.Logger, mx *Metrics, store *state.Store, fsw *fswatch.Watcher, own *stages.OwnOutputs) (*pipeline, error) {
	p := &pipeline{cfg: cfg, log: log.With().Str("pipeline", cfg.Name).Logger(), mx: mx, store: store, fsw: fsw, own: own,
		done: make(chan struct{}), finalDone: make(chan struct{}), edges: map[edgeKey]chan msg{}, emitters: map[string]*emitter{},
		aligners: map[string]*aligner{}, metrics: map[string]*stageMetrics{}, exited: map[string]chan struct{}{},
		ended: map[string]chan struct{}{}}
	p.hard, p.cancelHard = context.WithCancel(context.Background())
	p.stop, p.cancelStop = context.WithCancel(p.hard)
	p.ckpt.init(p, mx, store)
	p.board = newFeedBoard()
	p.wg.init()
	// The reload series exist from the start, so that an increase() alert
	// sees the first failure too.
	mx.reloads.WithLabelValues(cfg.Name, "success")
	mx.reloads.WithLabelValues(cfg.Name, "failure")
	for _, k := range edgeKeys(cfg) {
		p.edges[k] = newEdge()
	}
	var errs []error
	for _, st := range cfg.Stages {
		r, err := p.build(cfg, st, p.edges)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p.adopt(r)
	}
	for _, s := range p.sinks {
		p.ckpt.addSink(s.id)
	}
	if len(errs) > 0 {
		p.cancelHard() // ends the merge goroutines
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// built is one stage built by build: exactly one runner is set.
type built struct {
	id     string
	source *sourceRunner
	worker *workerRunner
	sink   *sinkRunner
	em     *emitter
	al     *aligner
	m      *stageMetrics
}

// build makes the runner of one stage of cfg over the given edges (every
// edge of cfg must be in edges). It does no I/O.
func (p *pipeline) build(cfg *config.Pipeline, st *config.Stage, edges map[edgeKey]chan msg) (*built, error) {
	var ins, outs []chan msg
	var sels []uint64
	routed := false
	var dl chan msg
	for _, k := range edgeKeys(cfg) {
		switch {
		case k.to == st.ID:
			ins = append(ins, edges[k])
		case k.from == st.ID && k.dl:
			dl = edges[k]
		case k.from == st.ID:
			outs = append(outs, edges[k])
			sel := edgeSel(cfg, k)
			sels = append(sels, sel)
			routed = routed || sel != 0
		}
	}
	slog := p.log.With().Str("stage", st.ID).Logger()
	settings := stages.Settings{Pipeline: cfg.Name, ID: st.ID, Logger: slog, Watcher: p.fsw, Own: p.own,
		Meter: p.mx.meter(cfg.Name, st.ID), RequestCheckpoint: p.ckpt.requestSoon}
	sm := p.mx.stage(cfg.Name, st.ID)
	if !routed {
		sels = nil
	}
	b := &built{id: st.ID, m: sm}
	newEmitter := func() *emitter {
		return &emitter{
			stage: st.ID, outs: outs, sels: sels, dl: dl, hard: p.hard, m: sm, tp: p.mx.taps.point(cfg.Name, st.ID),
			badLog: slog.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second}),
		}
	}
	switch st.Kind {
	case config.Source:
		src, err := st.Factory.NewSource(settings, st.Config)
		if err != nil {
			return nil, &stageError{cfg.Name, st.ID, err}
		}
		if h, ok := src.(stages.HealthReporter); ok {
			sm.probe = h.Health
		}
		b.em = newEmitter()
		b.source = &sourceRunner{id: st.ID, src: src, out: b.em, log: slog, ckpt: &p.ckpt, retired: newRetire()}
		if r, ok := src.(stages.LineRunSource); ok && len(outs) == 1 && !routed && passthrough(cfg, st.ID) {
			r.SetLineRuns(true)
		}
		if cfg.MergingSinkOf(st.ID) != "" {
			b.source.gate = p.board.gate(st.ID, st.Finite)
			if g, ok := src.(stages.GatedSource); ok {
				g.SetFeedGate(b.source.gate)
				b.source.gated = true
			}
		}
	case config.Worker:
		w := &workerRunner{id: st.ID, concurrency: st.Worker.Concurrency, ordered: st.Worker.Ordered, router: st.Worker.Router}
		for _, sk := range cfg.Sinks() {
			if sk.Merge != nil && slices.Contains(sk.Inputs, st.ID) {
				w.orderBy = sk.Merge.OrderBy // its goroutines compute the merge keys
			}
		}
		if w.concurrency <= 0 {
			w.concurrency = runtime.NumCPU()
		}
		for _, ss := range st.Worker.Steps {
			step, err := ss.Factory.NewStep(settings, ss.Config)
			if err != nil {
				return nil, &stageError{cfg.Name, st.ID, fmt.Errorf("step %s: %w", ss.Type, err)}
			}
			w.steps = append(w.steps, step)
		}
		b.em, b.al = newEmitter(), newAligner(p.hard, ins)
		w.in, w.out = b.al.out, b.em
		b.worker = w
	case config.Sink:
		snk, err := st.Factory.NewSink(settings, st.Config)
		if err != nil {
			return nil, &stageError{cfg.Name, st.ID, err}
		}
		if h, ok := snk.(stages.HealthReporter); ok {
			sm.probe = h.Health
		}
		b.al, b.em = newAligner(p.hard, ins), newEmitter()
		b.sink = &sinkRunner{
			id: st.ID, sink: snk, in: b.al.out, m: sm, log: slog, hard: p.hard,
			ckpt: &p.ckpt, setHealthy: sm.healthy.Store, em: b.em, retired: newRetire(),
		}
		if w, ok := snk.(stages.LineRunWriter); ok && st.Merge == nil {
			b.sink.runs = w.WritesLineRuns()
		}
		if st.Merge != nil {
			b.sink.merge = newMerger(*st.Merge, p.board, cfg.UpstreamSources(st.ID), p.mx, cfg.Name, st.ID)
		}
	}
	return b, nil
}

// passthrough reports whether the records of source id go straight to
// sinks that write them as lines (no step, no ordered merge, and each
// sink's config says it writes runs as they are: see
// stages.LineRunWriter): then the
// source may send its lines as runs (stages.LineRunSource). The runtime
// splits them wherever Records are needed after all (a tap, a sink that
// does not write runs, a graph a reload changed), so this only decides
// where the work is saved.
func passthrough(cfg *config.Pipeline, id string) bool {
	for _, sk := range cfg.Sinks() {
		if !slices.Contains(sk.Inputs, id) {
			continue
		}
		if w, ok := sk.Config.(stages.LineRunWriter); !ok || !w.WritesLineRuns() || sk.Merge != nil {
			return false // the sink runner would split every batch
		}
	}
	for _, w := range cfg.Workers() {
		if slices.Contains(w.Inputs, id) {
			return false // and with it any merge behind the worker
		}
	}
	return true
}

// adopt makes a built stage part of the pipeline, before start.
func (p *pipeline) adopt(b *built) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.adoptLocked(b)
}

// adoptLocked is adopt with mu held (reconfigure).
func (p *pipeline) adoptLocked(b *built) {
	switch {
	case b.source != nil:
		p.sources = append(p.sources, b.source)
	case b.worker != nil:
		p.workers = append(p.workers, b.worker)
	case b.sink != nil:
		p.sinks = append(p.sinks, b.sink)
	}
	if b.em != nil {
		p.emitters[b.id] = b.em
	}
	if b.al != nil {
		p.aligners[b.id] = b.al
	}
	p.metrics[b.id] = b.m
	p.exited[b.id] = make(chan struct{})
	p.ended[b.id] = make(chan struct{})
}

// open opens the sinks first, then the sources (reverse topological
// order), so nothing is read before it can be written. On failure it
// closes what it opened.
func (p *pipeline) open(ctx context.Context) error {
	var opened []func()
	fail := func(id string, err error) error {
		for i := len(opened) - 1; i >= 0; i-- {
			opened[i]()
		}
		p.cancelHard()
		return &stageError{p.cfg.Name, id, fmt.Errorf("open: %w", err)}
	}
	if err := p.restore(); err != nil {
		p.cancelHard()
		return err
	}
	for i := len(p.sinks) - 1; i >= 0; i-- {
		s := p.sinks[i]
		if err := s.sink.Open(ctx); err != nil {
			return fail(s.id, err)
		}
		opened = append(opened, func() { _ = s.sink.Close(context.Background()) })
		s.log.Debug().Msg("sink opened")
	}
	if err := p.writeOrphanMerges(ctx); err != nil {
		return fail("", err)
	}
	for i := len(p.sources) - 1; i >= 0; i-- {
		s := p.sources[i]
		if err := s.src.Open(ctx); err != nil {
			return fail(s.id, err)
		}
		opened = append(opened, func() { _ = s.src.Close() })
		s.registerFeed()
		s.log.Debug().Msg("source opened")
	}
	// Commit where everything starts, before anything is read: without
	// it a crash before the first barrier would leave the sinks' output
	// unrolled-back while the sources start over.
	srcStates, sinkStates, err := p.states(p.sources, p.sinks)
	if err != nil {
		return fail("", err)
	}
	if err := p.ckpt.commitNow(srcStates, sinkStates); err != nil {
		// Without it a crash could not be rolled back: refuse to start.
		return fail("", fmt.Errorf("cannot save the start-up checkpoint: %w", err))
	}
	return nil
}

// states collects the checkpoint states of the given stateful stages;
// only when nothing is in flight.
func (p *pipeline) states(srcs []*sourceRunner, sinks []*sinkRunner) (map[string][]byte, map[string][]byte, error) {
	srcStates, sinkStates := map[string][]byte{}, map[string][]byte{}
	for _, s := range srcs {
		st, err := stateOf(s.src)
		if err != nil {
			return nil, nil, &stageError{p.cfg.Name, s.id, err}
		}
		if st != nil {
			srcStates[s.id] = st
		}
	}
	for _, s := range sinks {
		st, err := stateOf(s.sink)
		if err != nil {
			return nil, nil, &stageError{p.cfg.Name, s.id, err}
		}
		if st != nil {
			sinkStates[s.id] = st
		}
	}
	return srcStates, sinkStates, nil
}

// finished reports whether every stage of a started pipeline returned.
func (p *pipeline) finished() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// closeUnstarted closes an opened pipeline that never started.
func (p *pipeline) closeUnstarted() {
	for _, s := range p.sinks {
		_ = s.sink.Close(context.Background())
	}
	for _, s := range p.sources {
		_ = s.src.Close()
	}
	p.cancelHard()
	close(p.done)
}

// start runs every stage in its goroutines; done is closed when all of
// them have returned.
func (p *pipeline) start() {
	for _, s := range p.sinks {
		p.launchSink(s)
	}
	for _, w := range p.workers {
		p.launchWorker(w)
	}
	for _, s := range p.sources {
		p.launchSource(s)
	}
	ckptDone := make(chan struct{})
	go func() {
		defer close(ckptDone)
		p.ckpt.loop(p.stop, p.sourceList)
	}()
	p.log.Info().Int("sources", len(p.sources)).Int("workers", len(p.workers)).
		Int("sinks", len(p.sinks)).Msg("pipeline started")
	go func() {
		<-p.wg.zeroed()
		p.cancelStop() // ends the checkpoint loop
		<-ckptDone
		aborted := p.hard.Err() != nil
		if p.err() == nil && !aborted {
			if err := p.ckpt.final(); err != nil {
				// Everything was written, but a restart will redo the
				// work since the last saved checkpoint: not a clean stop.
				p.mu.Lock()
				p.errs = append(p.errs, fmt.Errorf("pipeline %q: final checkpoint: %w", p.name(), err))
				p.mu.Unlock()
			}
		}
		close(p.finalDone) // the Committer stages still open learn it and close
		p.lingering.Wait()
		p.cancelHard() // releases the merge goroutines' AfterFunc hooks
		if err := p.err(); err != nil {
			p.log.Error().Err(err).Msg("pipeline failed")
		} else {
			p.log.Info().Msg("pipeline finished")
		}
		close(p.done)
	}()
}

// exitedChan returns the channels closed when a stage stopped working
// and when its goroutines returned (see pipeline.ended and exited).
func (p *pipeline) exitedChan(id string) (ended, exited chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ended[id], p.exited[id]
}

// stageDone closes a stage's channels from exitedChan when its goroutine
// returns (ended may be closed before, by linger).
func stageDone(ended, exited chan struct{}) {
	select {
	case <-ended:
	default:
		close(ended)
	}
	close(exited)
}

// retire is closed (once) when a reconfiguration stops a stage for good:
// a Committer stage that lingers (see linger) closes at once then.
type retire struct {
	ch   chan struct{}
	once sync.Once
}

func newRetire() *retire { return &retire{ch: make(chan struct{})} }

func (r *retire) retire() { r.once.Do(func() { close(r.ch) }) }

// linger holds a Committer stage that ended cleanly (its state final
// reported, it is not closed yet) until the stage was told that a saved
// checkpoint holds final, or the pipeline's final checkpoint was saved
// (or failed, or was skipped), or a reconfiguration retires the stage, or
// the hard stop comes, delivering on the way what the commit box
// receives. Whatever was committed is delivered before the stage is
// closed, but never at the hard stop. It runs on the stage's goroutine,
// after release stopped counting it (so that the final checkpoint can be
// taken); the pipeline is done only once the stage is closed.
func (p *pipeline) linger(b *commitBox, final []byte, r *retire, ended chan struct{}, release func(),
	ctx context.Context, m *stageMetrics, log zerolog.Logger) {
	close(ended)
	release()
	for p.hard.Err() == nil {
		b.deliver(ctx, m, log)
		if b.holds(final) {
			return
		}
		select {
		case <-b.readyChan():
			continue
		case <-p.finalDone:
		case <-r.ch:
		case <-p.hard.Done():
			return
		}
		if p.hard.Err() == nil {
			b.deliver(ctx, m, log)
		}
		return
	}
}

// closeCtx is the context for closing a stage after the stop: the hard
// stop's, unless that came, then one that Close can still use.
func (p *pipeline) closeCtx() context.Context {
	if p.hard.Err() != nil {
		return context.Background()
	}
	return p.hard
}

func (p *pipeline) launchSink(s *sinkRunner) {
	ended, exited := p.exitedChan(s.id)
	p.wg.Go(func(release func()) {
		defer stageDone(ended, exited)
		err := s.run()
		if err == nil {
			st, serr := stateOf(s.sink)
			if serr != nil {
				s.log.Error().Err(serr).Msg("sink state unavailable after close")
			}
			var mst []byte
			if s.merge != nil {
				// What it wrote out, or (handed over) what it holds: the
				// pair with the output position st.
				if mst, serr = s.merge.state(); serr != nil {
					s.log.Error().Err(serr).Msg("merge state unavailable after close")
				}
			}
			p.ckpt.sinkEnded(s.id, st, mst)
			if s.commits != nil {
				// run flushed it but left it open: it learns that the
				// checkpoint holding st is saved first.
				p.lingering.Add(1)
				defer p.lingering.Done()
				p.linger(s.commits, st, s.retired, ended, release, s.hard, s.m, s.log)
				p.ckpt.unsubscribe(s.commits)
				if err := s.sink.Close(p.closeCtx()); err != nil {
					s.m.errors.Inc()
					p.fail(s.id, fmt.Errorf("close: %w", err))
				}
			}
			return
		}
		p.ckpt.unsubscribe(s.commits)
		// Its output position is unknown now: no later cut can be
		// consistent, so the last committed checkpoint stands.
		p.ckpt.freeze()
		p.ckpt.sinkEnded(s.id, nil, nil)
		if p.hard.Err() != nil && errors.Is(err, context.Canceled) {
			err = errors.New("stopped before its input was written (shutdown timeout)")
		}
		p.fail(s.id, err)
		// Release the file at a hard stop too; what is still
		// buffered is best-effort.
		_ = s.sink.Close(context.Background())
	})
}

func (p *pipeline) launchWorker(w *workerRunner) {
	ended, exited := p.exitedChan(w.id)
	p.wg.Go(func(func()) {
		defer stageDone(ended, exited)
		w.run()
	})
}

func (p *pipeline) launchSource(s *sourceRunner) {
	ended, exited := p.exitedChan(s.id)
	s.injected = p.ckpt.current()
	p.wg.Go(func(release func()) {
		defer stageDone(ended, exited)
		err := s.run(p.stop)
		// Positions cover exactly the batches returned by Read, all of
		// which were emitted (or abandoned at a hard stop, when no final
		// checkpoint is taken).
		st, serr := stateOf(s.src)
		if serr == nil {
			p.ckpt.sourceEnded(s.id, st)
		} else {
			st = nil
		}
		if s.commits != nil && err == nil {
			// It learns that the checkpoint holding st is saved before it
			// closes.
			p.lingering.Add(1)
			defer p.lingering.Done()
			p.linger(s.commits, st, s.retired, ended, release, s.out.hard, s.out.m, s.log)
		}
		p.ckpt.unsubscribe(s.commits)
		if cerr := s.src.Close(); cerr != nil {
			s.log.Warn().Err(cerr).Msg("close source")
		}
		if err != nil {
			p.fail(s.id, err)
		}
	})
}

// sourceList returns the running sources.
func (p *pipeline) sourceList() []*sourceRunner {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sources)
}

// stateOf returns the checkpoint state of a stateful stage, or nil. A
// state that is not valid JSON is an error, which fails the checkpoint:
// written, it would make the checkpoint unreadable after committers were
// told it was durable. A stages.ValidJSONState is not scanned.
func stateOf(v any) ([]byte, error) {
	s, ok := v.(stages.Stateful)
	if !ok {
		return nil, nil
	}
	st, err := s.State()
	if err != nil || len(st) == 0 {
		return st, err
	}
	if _, valid := v.(stages.ValidJSONState); !valid && !json.Valid(st) {
		return nil, fmt.Errorf("the stage returned a state that is not valid JSON: %.80q", st)
	}
	return st, nil
}

// writeOrphanMerges writes the records that the committed checkpoint holds
// for an ordered merge the config no longer has: the sources resume after
// them, so they would be lost otherwise (SPEC §3.1). A sink that stopped
// merging gets them first, in order; for a sink that is gone they have
// nowhere to go and are dropped with an error log. Either way the merge
// state is then dropped from the checkpoint.
func (p *pipeline) writeOrphanMerges(ctx context.Context) error {
	merging := map[string]bool{}
	for _, s := range p.sinks {
		if s.merge != nil {
			merging[s.id] = true
		}
	}
	p.ckpt.keepMerges(merging)
	orphans := p.ckpt.orphanMerges()
	for id, st := range orphans {
		var sink *sinkRunner
		for _, s := range p.sinks {
			if s.id == id {
				sink = s
			}
		}
		var ms mergeState
		_ = json.Unmarshal(st, &ms)
		mg := newMerger(config.MergeSpec{OrderBy: ms.OrderBy, Late: "emit"}, newFeedBoard(), nil, NewMetrics(), p.cfg.Name, id)
		bad, err := mg.restore(st, time.Now())
		if err != nil {
			return &stageError{p.cfg.Name, id, err}
		}
		recs := make([]stages.Record, 0, mg.buffered+len(bad))
		mg.take(time.Now(), true, math.MaxInt)
		recs = append(recs, mg.out...)
		for _, r := range bad { // no usable key: after the others
			recs = append(recs, r.Record)
		}
		if len(recs) == 0 {
			continue
		}
		if sink == nil {
			p.log.Error().Str("stage", id).Int("records", len(recs)).
				Msg("the checkpoint holds records queued by the ordered merge of a sink that is no longer in the config; they are dropped")
			continue
		}
		if err := sink.sink.Write(ctx, &stages.Batch{Records: recs}); err != nil {
			return &stageError{p.cfg.Name, id, fmt.Errorf("write the records its former ordered merge held: %w", err)}
		}
		sink.log.Warn().Int("records", len(recs)).Msg("the sink no longer merges: wrote the records its ordered merge held at the last checkpoint")
	}
	return nil
}

// restore hands the committed checkpoint to the stateful sources and
// sinks, before they open.
func (p *pipeline) restore() error {
	cp, err := p.ckpt.load()
	if err != nil || cp == nil {
		return err
	}
	for _, s := range p.sinks {
		if st, ok := cp.Sinks[s.id]; ok {
			if r, ok := s.sink.(stages.Stateful); ok {
				if err := r.Restore(st); err != nil {
					return &stageError{p.cfg.Name, s.id, fmt.Errorf("restore checkpoint: %w", err)}
				}
			}
		}
		if err := s.restoreMerge(cp.Merge[s.id]); err != nil {
			return &stageError{p.cfg.Name, s.id, fmt.Errorf("restore checkpoint: %w", err)}
		}
	}
	for _, s := range p.sources {
		if st, ok := cp.Sources[s.id]; ok {
			if r, ok := s.src.(stages.Stateful); ok {
				if err := r.Restore(st); err != nil {
					return &stageError{p.cfg.Name, s.id, fmt.Errorf("restore checkpoint: %w", err)}
				}
			}
		}
	}
	p.log.Info().Uint64("epoch", cp.Epoch).Time("committed", cp.Time).Msg("resuming from checkpoint")
	return nil
}

// fail records a stage failure and stops the pipeline gracefully: the
// other stages drain what they have.
func (p *pipeline) fail(id string, err error) {
	p.log.Error().Str("stage", id).Err(err).Msg("stage failed; stopping the pipeline")
	p.mu.Lock()
	p.errs = append(p.errs, &stageError{p.cfg.Name, id, err})
	p.mu.Unlock()
	p.cancelStop()
}

func (p *pipeline) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return errors.Join(p.errs...)
}
