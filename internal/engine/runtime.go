// Package engine runs validated pipelines: it builds their stages from the
// config graph, wires them with bounded channels that carry batches, and
// drives their lifecycle.
//
// Every source runs in one goroutine; a worker runs `concurrency`
// goroutines over the merged stream of its inputs; every sink has exactly
// one writer goroutine that merges its inputs. A full channel blocks its
// sender, so a slow sink slows the sources down and memory stays bounded.
//
// Start order is sinks, then sources (reverse topological order); a stop
// makes the sources stop reading, and everything in flight drains through
// the workers to the sinks, which flush and fsync before they close.
package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/fswatch"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/state"
	"github.com/rs/zerolog"
)

// Options configure Run.
type Options struct {
	Logger zerolog.Logger
	// Metrics receives the counters; nil makes a private set.
	Metrics *Metrics
	// ShutdownTimeout bounds a graceful stop; 0 means 30s.
	ShutdownTimeout time.Duration
	// StateDir holds the checkpoints; "" disables them (nothing is
	// resumed or committed).
	StateDir string
	// Started, when set, is called once every pipeline runs.
	Started func()
	// Watcher is handed to the stages (stages.Settings.Watcher): one
	// inotify instance for the whole daemon. Nil: each file source opens
	// its own.
	Watcher *fswatch.Watcher

	// onQuiesced, set by tests, is run by every in-place reconfiguration
	// once the graph is quiescent, before the swap.
	onQuiesced func()
}

// newPipeline builds a pipeline of cfg with the runtime's settings.
func (rt *Runtime) newPipeline(cfg *config.Pipeline) (*pipeline, error) {
	p, err := newPipeline(cfg, rt.log, rt.opts.Metrics, rt.store, rt.opts.Watcher, rt.own)
	if p != nil {
		p.onQuiesced = rt.opts.onQuiesced
	}
	return p, err
}

// hardStopGrace is how long Stop waits, after the shutdown timeout, for
// stages to return once told to abandon their work.
const hardStopGrace = time.Second

// ErrShutdownTimeout is returned when a graceful stop did not finish in
// time; unfinished work is abandoned.
var ErrShutdownTimeout = errors.New("graceful stop did not finish within the shutdown timeout")

// StartError is returned when a pipeline cannot be built or opened; no
// pipeline has run then.
type StartError struct{ Err error }

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// Run runs the pipelines until all of them have finished (every source
// ended and everything was written), or until ctx is done: then it stops
// them gracefully within ShutdownTimeout. It returns the stage failures,
// joined, or ErrShutdownTimeout, or a *StartError.
func Run(ctx context.Context, pipes []*config.Pipeline, opts Options) error {
	rt, err := New(opts)
	if err != nil {
		return err
	}
	if _, err := rt.Apply(ctx, pipes); err != nil {
		rt.Stop()
		return err
	}
	if opts.Started != nil {
		opts.Started()
	}
	select {
	case <-rt.Idle():
	case <-ctx.Done():
	}
	return rt.Stop()
}

// Runtime runs a changing set of pipelines: Apply starts, replaces and
// stops them to match a new config; Stop stops them all.
type Runtime struct {
	opts  Options
	log   zerolog.Logger
	store *state.Store
	// own is every file the sinks of the pipelines write, handed to the
	// stages (stages.Settings.Own): file sources never read them. Apply
	// keeps it current.
	own *stages.OwnOutputs

	mu      sync.Mutex
	pipes   map[string]*pipeline // running or finished, by name
	failed  []error              // failures of pipelines stopped or replaced
	idle    chan struct{}        // closed while no pipeline runs
	running int                  // pipelines started and not done
}

// New returns a Runtime with no pipelines.
func New(opts Options) (*Runtime, error) {
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	rt := &Runtime{opts: opts, log: opts.Logger, pipes: map[string]*pipeline{}, idle: make(chan struct{}),
		own: &stages.OwnOutputs{}}
	close(rt.idle)
	if opts.StateDir != "" {
		store, err := state.Open(opts.StateDir)
		if err != nil {
			return nil, &StartError{err}
		}
		if err := store.Lock(); err != nil {
			return nil, &StartError{err}
		}
		rt.store = store
	}
	opts.Metrics.registerRuntime(rt)
	return rt, nil
}

// Configs returns the config of every pipeline the runtime knows, by name.
func (rt *Runtime) Configs() map[string]*config.Pipeline {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	out := make(map[string]*config.Pipeline, len(rt.pipes))
	for n, p := range rt.pipes {
		out[n] = p.config()
	}
	return out
}

// Metrics returns the runtime's metrics.
func (rt *Runtime) Metrics() *Metrics { return rt.opts.Metrics }

// Idle returns a channel that is closed once no pipeline is running (all
// finished, failed or stopped). Apply may start pipelines again.
func (rt *Runtime) Idle() <-chan struct{} {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.idle
}

// Apply makes the running pipelines match pipes, by name: a new name
// starts a pipeline; a name no longer present stops its pipeline
// gracefully (drain, flush, checkpoint); a pipeline whose content changed
// (config.Pipeline.Hash) is replaced; an unchanged one keeps running.
//
// A replacement is built first, so a pipeline that cannot be built leaves
// the running one untouched. Then the old one is stopped gracefully, which
// saves its final checkpoint, and the new one opens from that checkpoint:
// file sources resume at their exact positions and file sinks continue
// their files, so nothing is lost or written twice. If the new one cannot
// open, the old config is started again from the same checkpoint.
//
// At the first Apply (nothing running yet) a pipeline that cannot start
// makes Apply fail with a *StartError and start nothing.
func (rt *Runtime) Apply(ctx context.Context, pipes []*config.Pipeline) ([]Change, error) {
	// While pipelines change, the outputs of the old and the new configs
	// are all own outputs; afterwards, those of what runs.
	rt.setOwnOutputs(pipes)
	defer rt.setOwnOutputs(nil)
	rt.mu.Lock()
	first := len(rt.pipes) == 0
	rt.mu.Unlock()
	if first {
		if err := rt.startAll(ctx, pipes); err != nil {
			return nil, err
		}
		changes := make([]Change, 0, len(pipes))
		for _, p := range pipes {
			changes = append(changes, Change{Pipeline: p.Name, Action: ActionStarted})
		}
		return changes, nil
	}
	var changes []Change
	var errs []error
	want := map[string]*config.Pipeline{}
	for _, cfg := range pipes {
		want[cfg.Name] = cfg
	}
	rt.mu.Lock()
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range rt.pipes {
			if !yield(n) {
				return
			}
		}
	})
	rt.mu.Unlock()
	running := map[string]bool{}
	for _, n := range names {
		running[n] = true
	}
	for _, name := range names {
		if _, ok := want[name]; !ok {
			rt.log.Info().Str("pipeline", name).Msg("pipeline file removed: stopping it")
			start := time.Now()
			renamed := rt.renamedTo(name, pipes, running)
			err := rt.remove(name)
			if err != nil {
				errs = append(errs, err)
			} else if renamed != "" && rt.store != nil {
				// The same pipeline under a new file name: it continues
				// from the checkpoint instead of starting over (which
				// would write its output again).
				if rerr := rt.store.Rename(name, renamed); rerr != nil {
					rt.log.Warn().Err(rerr).Str("pipeline", renamed).Msg("renamed pipeline file: its checkpoint stays under the old name; it starts without one")
				} else {
					rt.log.Info().Str("from", name).Str("to", renamed).Msg("pipeline file renamed: its checkpoint moves with it")
				}
			}
			changes = append(changes, Change{Pipeline: name, Action: ActionStopped, Err: err, Took: time.Since(start)})
		}
	}
	for _, cfg := range pipes {
		start := time.Now()
		action, err := rt.applyOne(ctx, cfg)
		if err != nil {
			errs = append(errs, err)
		}
		changes = append(changes, Change{Pipeline: cfg.Name, Action: action, Err: err, Took: time.Since(start)})
	}
	return changes, errors.Join(errs...)
}

// setOwnOutputs makes the own outputs those of the known pipelines plus
// those of extra.
func (rt *Runtime) setOwnOutputs(extra []*config.Pipeline) {
	var outs []stages.OwnOutput
	for _, cfg := range rt.Configs() {
		outs = append(outs, cfg.OwnOutputs()...)
	}
	for _, cfg := range extra {
		outs = append(outs, cfg.OwnOutputs()...)
	}
	rt.own.Set(outs)
}

// renamedTo returns the name of a new pipeline in pipes (not running)
// whose content is exactly that of the running pipeline name: the same
// file under a new name. "" when there is none or more than one.
func (rt *Runtime) renamedTo(name string, pipes []*config.Pipeline, running map[string]bool) string {
	rt.mu.Lock()
	p := rt.pipes[name]
	rt.mu.Unlock()
	if p == nil {
		return ""
	}
	hash, found := p.config().Hash, ""
	for _, cfg := range pipes {
		if !running[cfg.Name] && cfg.Hash == hash {
			if found != "" {
				return ""
			}
			found = cfg.Name
		}
	}
	return found
}

// Change is what Apply did to one pipeline.
type Change struct {
	Pipeline string
	// Action is what was done; never ActionInvalid. Result tells
	// whether it succeeded.
	Action Action
	Err    error
	Took   time.Duration
}

// startAll opens every pipeline before any runs: a start-up failure leaves
// no half-run pipeline behind.
func (rt *Runtime) startAll(ctx context.Context, pipes []*config.Pipeline) error {
	var opened []*pipeline
	for _, cfg := range pipes {
		p, err := rt.newPipeline(cfg)
		if err == nil {
			err = p.open(ctx)
		}
		if err != nil {
			for _, o := range opened {
				o.closeUnstarted()
			}
			return &StartError{err}
		}
		opened = append(opened, p)
	}
	rt.mu.Lock()
	for _, p := range opened {
		rt.pipes[p.cfg.Name] = p
		rt.launch(p)
	}
	rt.mu.Unlock()
	return nil
}

// applyOne starts, replaces or keeps one pipeline.
func (rt *Runtime) applyOne(ctx context.Context, cfg *config.Pipeline) (action Action, err error) {
	rt.mu.Lock()
	old := rt.pipes[cfg.Name]
	rt.mu.Unlock()
	if old.unchangedBy(cfg) {
		return ActionUnchanged, nil
	}
	start := time.Now()
	if old != nil && !old.finished() {
		sw, rerr := old.reconfigure(ctx, cfg, rt.opts.ShutdownTimeout)
		if rerr == nil {
			if sw.empty() {
				return ActionUnchanged, nil
			}
			return ActionReconfigured, nil
		}
		if !errors.Is(rerr, errRestart) {
			return ActionFailed, rerr
		}
		rt.log.Info().Str("pipeline", cfg.Name).Str("reason", rerr.Error()).Msg("restarting the pipeline with its new config")
	}
	next, err := rt.newPipeline(cfg)
	if err != nil {
		return ActionFailed, fmt.Errorf("pipeline %q: not reloaded, the running one is kept: %w", cfg.Name, err)
	}
	if old != nil {
		if err := rt.stopPipeline(old); err != nil {
			next.cancelHard()
			return ActionFailed, err
		}
	}
	if oerr := next.open(ctx); oerr != nil {
		if old == nil {
			return ActionFailed, oerr
		}
		rt.log.Error().Err(oerr).Str("pipeline", cfg.Name).Msg("the new pipeline cannot open; restarting the previous one")
		back, berr := rt.newPipeline(old.config())
		if berr == nil {
			berr = back.open(ctx)
		}
		if berr != nil {
			rt.mu.Lock()
			delete(rt.pipes, cfg.Name)
			rt.mu.Unlock()
			return ActionFailed, errors.Join(oerr, fmt.Errorf("restarting the previous pipeline %q: %w", cfg.Name, berr))
		}
		next = back
		action, err = ActionFailed, fmt.Errorf("pipeline %q: not reloaded, the previous config runs again: %w", cfg.Name, oerr)
	}
	rt.mu.Lock()
	rt.pipes[cfg.Name] = next
	rt.launch(next)
	rt.mu.Unlock()
	if action == "" {
		action = ActionStarted
		if old != nil {
			action = ActionReplaced
		}
	}
	rt.log.Info().Str("pipeline", cfg.Name).Dur("took", time.Since(start)).Msg("pipeline " + action.String())
	return action, err
}

// unchangedBy reports whether applying cfg leaves p (nil: no pipeline
// of that name) as it is: same content, and p is running or finished
// cleanly (a finished pipeline is not restarted, its sources are done,
// but a failed one is retried).
func (p *pipeline) unchangedBy(cfg *config.Pipeline) bool {
	return p != nil && p.config().Hash == cfg.Hash && (!p.finished() || p.err() == nil)
}

// remove stops a pipeline gracefully and forgets it.
func (rt *Runtime) remove(name string) error {
	rt.mu.Lock()
	p := rt.pipes[name]
	rt.mu.Unlock()
	if p == nil {
		return nil
	}
	err := rt.stopPipeline(p)
	rt.mu.Lock()
	delete(rt.pipes, name)
	rt.mu.Unlock()
	return err
}

// stopPipeline stops p gracefully within the shutdown timeout, then
// abandons what is left. Stage failures are kept for Stop's result.
func (rt *Runtime) stopPipeline(p *pipeline) error {
	p.cancelStop()
	if rt.drain([]*pipeline{p}) {
		return fmt.Errorf("pipeline %q: %w", p.name(), ErrShutdownTimeout)
	}
	if err := p.err(); err != nil {
		rt.mu.Lock()
		rt.failed = append(rt.failed, err)
		rt.mu.Unlock()
	}
	return nil
}

// drain waits for ps, told to stop, until one deadline: the shutdown
// timeout. Past it, it stops what is left hard and gives it hardStopGrace,
// all together, to return; a stage that still does not (stuck in a system
// call that ignores the hard stop, such as a hung NFS write) is left
// behind. It reports whether the timeout expired.
func (rt *Runtime) drain(ps []*pipeline) (timedOut bool) {
	deadline := time.NewTimer(rt.opts.ShutdownTimeout)
	defer deadline.Stop()
	left := waitDone(ps, deadline.C)
	if len(left) == 0 {
		return false
	}
	for _, p := range left {
		rt.log.Error().Str("pipeline", p.name()).Msg("shutdown timeout: abandoning unfinished work")
		p.cancelHard()
	}
	grace := time.NewTimer(hardStopGrace)
	defer grace.Stop()
	for _, p := range waitDone(left, grace.C) {
		rt.log.Error().Str("pipeline", p.name()).Msg("a stage does not return after the hard stop; leaving it behind")
	}
	return true
}

// waitDone waits until every pipeline of ps is done or expired fires,
// and returns those not done then. expired is received from once at
// most: a timer's channel fires once.
func waitDone(ps []*pipeline, expired <-chan time.Time) []*pipeline {
	for i, p := range ps {
		select {
		case <-p.done:
		case <-expired:
			var left []*pipeline
			for _, q := range ps[i:] {
				if !q.finished() {
					left = append(left, q)
				}
			}
			return left
		}
	}
	return nil
}

// launch starts p, counts it as running until it is done, and re-arms
// the Idle channel if nothing ran. Called with mu held. The goroutine
// that counts it down ends with p.
func (rt *Runtime) launch(p *pipeline) {
	p.start()
	if rt.running == 0 {
		rt.idle = make(chan struct{})
	}
	rt.running++
	go func() {
		<-p.done
		rt.mu.Lock()
		defer rt.mu.Unlock()
		if rt.running--; rt.running == 0 {
			close(rt.idle)
		}
	}()
}

// Stop stops every pipeline gracefully, all at once, within the shutdown
// timeout (one deadline for all of them); after it, unfinished work is
// abandoned (it is re-read from the
// last checkpoint at the next start). It returns every stage failure seen
// since New, joined, with ErrShutdownTimeout when the timeout expired.
func (rt *Runtime) Stop() error {
	rt.mu.Lock()
	ps := make([]*pipeline, 0, len(rt.pipes))
	for _, p := range rt.pipes {
		ps = append(ps, p)
	}
	rt.mu.Unlock()
	running := 0
	for _, p := range ps {
		if !p.finished() {
			running++
		}
		p.cancelStop()
	}
	if running > 0 {
		rt.log.Info().Dur("timeout", rt.opts.ShutdownTimeout).Msg("stopping: sources stop reading, in-flight records drain")
	}
	timedOut := rt.drain(ps)
	var errs []error
	rt.mu.Lock()
	errs = append(errs, rt.failed...)
	rt.mu.Unlock()
	errs = append(errs, pipelineErrs(ps)...)
	if timedOut {
		errs = append(errs, ErrShutdownTimeout)
	}
	if rt.store != nil && !timedOut {
		rt.store.Unlock() // a stage left behind may still write: keep it then
	}
	return errors.Join(errs...)
}

func pipelineErrs(ps []*pipeline) []error {
	var errs []error
	for _, p := range ps {
		if err := p.err(); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
