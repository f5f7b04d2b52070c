package runtime

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/state"
	"github.com/rs/zerolog"
)

// pipeline is one running pipeline: its stages, the edges between them,
// and the goroutines that drive them.
type pipeline struct {
	cfg *config.Pipeline
	log zerolog.Logger

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

	inputs  map[string][]chan msg // input edges by stage id, for queue lengths
	metrics map[string]*stageMetrics

	mu   sync.Mutex
	errs []error // stage failures
	done chan struct{}
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
func newPipeline(cfg *config.Pipeline, log zerolog.Logger, mx *Metrics, store *state.Store) (*pipeline, error) {
	p := &pipeline{cfg: cfg, log: log.With().Str("pipeline", cfg.Name).Logger(), done: make(chan struct{})}
	p.hard, p.cancelHard = context.WithCancel(context.Background())
	p.stop, p.cancelStop = context.WithCancel(p.hard)
	p.ckpt.init(p, mx, store)

	// One edge per (upstream, downstream) pair, plus one from every source
	// and worker to the dead-letter sink.
	inputs := map[string][]chan msg{}
	outputs := map[string][]chan msg{}
	for _, st := range cfg.Stages {
		for _, in := range st.Inputs {
			e := newEdge()
			inputs[st.ID] = append(inputs[st.ID], e)
			outputs[in] = append(outputs[in], e)
		}
	}
	dlEdges := map[string]chan msg{}
	if cfg.DeadLetter != "" {
		for _, st := range cfg.Stages {
			if st.Kind == config.Source || st.Kind == config.Worker {
				e := newEdge()
				dlEdges[st.ID] = e
				inputs[cfg.DeadLetter] = append(inputs[cfg.DeadLetter], e)
			}
		}
	}

	p.inputs = inputs
	p.metrics = map[string]*stageMetrics{}
	var errs []error
	for _, st := range cfg.Stages {
		slog := p.log.With().Str("stage", st.ID).Logger()
		settings := stages.Settings{Pipeline: cfg.Name, ID: st.ID, Logger: slog}
		sm := mx.stage(cfg.Name, st.ID)
		p.metrics[st.ID] = sm
		em := &emitter{
			stage: st.ID, outs: outputs[st.ID], dl: dlEdges[st.ID], hard: p.hard, m: sm,
			badLog: slog.Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Second}),
		}
		switch st.Kind {
		case config.Source:
			src, err := st.Factory.NewSource(settings, st.Config)
			if err != nil {
				errs = append(errs, &stageError{cfg.Name, st.ID, err})
				continue
			}
			p.sources = append(p.sources, &sourceRunner{id: st.ID, src: src, out: em, log: slog, ckpt: &p.ckpt})
		case config.Worker:
			w := &workerRunner{
				id: st.ID, concurrency: st.Worker.Concurrency, ordered: st.Worker.Ordered,
				in: merge(p.hard, inputs[st.ID]), out: em,
			}
			if w.concurrency <= 0 {
				w.concurrency = goruntime.NumCPU()
			}
			for _, ss := range st.Worker.Steps {
				step, err := ss.Factory.NewStep(settings, ss.Config)
				if err != nil {
					errs = append(errs, &stageError{cfg.Name, st.ID, fmt.Errorf("step %s: %w", ss.Type, err)})
					continue
				}
				w.steps = append(w.steps, step)
			}
			p.workers = append(p.workers, w)
		case config.Sink:
			snk, err := st.Factory.NewSink(settings, st.Config)
			if err != nil {
				errs = append(errs, &stageError{cfg.Name, st.ID, err})
				continue
			}
			p.sinks = append(p.sinks, &sinkRunner{
				id: st.ID, sink: snk, in: merge(p.hard, inputs[st.ID]), m: sm, log: slog, hard: p.hard,
				ckpt: &p.ckpt, setHealthy: sm.healthy.Store,
			})
		}
	}
	p.ckpt.liveSinks = len(p.sinks)
	if len(errs) > 0 {
		p.cancelHard() // ends the merge goroutines
		return nil, errors.Join(errs...)
	}
	return p, nil
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
	for i := len(p.sources) - 1; i >= 0; i-- {
		s := p.sources[i]
		if err := s.src.Open(ctx); err != nil {
			return fail(s.id, err)
		}
		opened = append(opened, func() { _ = s.src.Close() })
		s.log.Debug().Msg("source opened")
	}
	return nil
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
	var wg sync.WaitGroup
	for _, s := range p.sinks {
		wg.Go(func() {
			err := s.run()
			if err == nil {
				st, serr := stateOf(s.sink)
				if serr != nil {
					s.log.Error().Err(serr).Msg("sink state unavailable after close")
				}
				p.ckpt.sinkEnded(s.id, st)
				return
			}
			// Its output position is unknown now: no later cut can be
			// consistent, so the last committed checkpoint stands.
			p.ckpt.freeze()
			p.ckpt.sinkEnded(s.id, nil)
			if p.hard.Err() != nil && errors.Is(err, context.Canceled) {
				err = errors.New("stopped before its input was written (shutdown timeout)")
			}
			p.fail(s.id, err)
			// Release the file at a hard stop too; what is still
			// buffered is best-effort.
			_ = s.sink.Close(context.Background())
		})
	}
	for _, w := range p.workers {
		wg.Go(w.run)
	}
	var sourcesLeft atomic.Int32
	sourcesLeft.Store(int32(len(p.sources)))
	for _, s := range p.sources {
		s.injected = p.ckpt.current()
		wg.Go(func() {
			err := s.run(p.stop)
			// Positions cover exactly the batches returned by Read, all
			// of which were emitted (or abandoned at a hard stop, when no
			// final checkpoint is taken).
			if st, serr := stateOf(s.src); serr == nil {
				p.ckpt.sourceEnded(s.id, st)
			}
			if cerr := s.src.Close(); cerr != nil {
				s.log.Warn().Err(cerr).Msg("close source")
			}
			if err != nil {
				p.fail(s.id, err)
			}
			if sourcesLeft.Add(-1) == 0 {
				p.log.Info().Msg("every source has ended; draining")
			}
		})
	}
	ckptDone := make(chan struct{})
	go func() {
		defer close(ckptDone)
		p.ckpt.loop(p.stop, p.sourceList)
	}()
	p.log.Info().Int("sources", len(p.sources)).Int("workers", len(p.workers)).
		Int("sinks", len(p.sinks)).Msg("pipeline started")
	go func() {
		wg.Wait()
		p.cancelStop() // ends the checkpoint loop
		<-ckptDone
		aborted := p.hard.Err() != nil
		p.cancelHard() // releases the merge goroutines' AfterFunc hooks
		if p.err() == nil && !aborted {
			p.ckpt.final()
		}
		if err := p.err(); err != nil {
			p.log.Error().Err(err).Msg("pipeline failed")
		} else {
			p.log.Info().Msg("pipeline finished")
		}
		close(p.done)
	}()
}

// sourceList returns the running sources.
func (p *pipeline) sourceList() []*sourceRunner {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sources)
}

// stateOf returns the checkpoint state of a stateful stage, or nil.
func stateOf(v any) ([]byte, error) {
	if s, ok := v.(stages.Stateful); ok {
		return s.State()
	}
	return nil, nil
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
