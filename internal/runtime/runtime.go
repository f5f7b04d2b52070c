// Package runtime runs validated pipelines: it builds their stages from the
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
package runtime

import (
	"context"
	"errors"
	"time"

	"github.com/etld/etld/internal/config"
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
}

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
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	log := opts.Logger

	var store *state.Store
	if opts.StateDir != "" {
		var err error
		if store, err = state.Open(opts.StateDir); err != nil {
			return &StartError{err}
		}
	}
	var running []*pipeline
	abort := func() {
		for _, p := range running {
			p.cancelHard()
		}
	}
	for _, cfg := range pipes {
		p, err := newPipeline(cfg, log, opts.Metrics, store)
		if err != nil {
			abort()
			return &StartError{err}
		}
		if err := p.open(ctx); err != nil {
			abort()
			return &StartError{err}
		}
		running = append(running, p)
	}
	// Only once every pipeline opened: a start-up failure leaves no
	// half-run pipeline behind.
	for _, p := range running {
		p.start()
	}
	if opts.Started != nil {
		opts.Started()
	}

	allDone := make(chan struct{})
	go func() {
		for _, p := range running {
			<-p.done
		}
		close(allDone)
	}()

	select {
	case <-allDone:
	case <-ctx.Done():
		log.Info().Dur("timeout", opts.ShutdownTimeout).Msg("stopping: sources stop reading, in-flight records drain")
		for _, p := range running {
			p.cancelStop()
		}
		t := time.NewTimer(opts.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-allDone:
		case <-t.C:
			log.Error().Msg("shutdown timeout: abandoning unfinished work")
			abort()
			<-allDone
			return errors.Join(append(pipelineErrs(running), ErrShutdownTimeout)...)
		}
	}
	if errs := pipelineErrs(running); len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
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
