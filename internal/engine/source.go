package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/etld/etld/internal/stages"
	"github.com/rs/zerolog"
)

// sourceRunner drives one source from one goroutine: Read, emit, and a
// checkpoint barrier between two reads whenever one is requested.
type sourceRunner struct {
	id   string
	src  stages.Source
	out  *emitter
	log  zerolog.Logger
	ckpt *checkpointer
	// gate is the flow control towards an ordered merge, or nil; gated
	// is true when the source applies it per feed itself, else the whole
	// source is one feed, held back here.
	gate  *sourceGate
	gated bool

	barrierReq atomic.Uint64 // newest barrier epoch requested
	// injected is the newest barrier epoch injected (run goroutine only).
	// It starts at the epoch current when the source starts, so a source
	// never injects epochs that were settled before it existed.
	injected uint64

	mu         sync.Mutex
	cancelRead context.CancelFunc // cancels the Read in progress

	// commits hands the source its committed states (nil unless it is a
	// stages.Committer), delivered between two Reads, and after the last
	// one until it is closed (see pipeline.linger; retired ends that).
	commits *commitBox
	retired *retire

	// park, when set, holds the source once it has injected the barrier
	// of park.epoch, until park.wake is closed (see reconfigure); quit
	// then makes it return instead of reading on.
	park atomic.Pointer[parkRequest]
	quit atomic.Bool
	// drainFirst, set by a reload that replaces or removes the source,
	// makes a stages.Drainer empty itself before the barrier that parks
	// it; drained records that it was (run goroutine only).
	drainFirst atomic.Bool
	drained    bool
}

type parkRequest struct {
	epoch uint64
	wake  chan struct{}
}

// hold parks the source after barrier epoch, which it requests.
func (s *sourceRunner) hold(epoch uint64, wake chan struct{}) {
	s.park.Store(&parkRequest{epoch: epoch, wake: wake})
	s.requestBarrier(epoch)
}

// requestBarrier asks the source to inject barrier epoch as soon as
// possible: a Read waiting for input is interrupted.
func (s *sourceRunner) requestBarrier(epoch uint64) {
	s.barrierReq.Store(epoch)
	s.interruptRead()
}

// interruptRead cancels the Read in progress, if any: the read loop
// regains control.
func (s *sourceRunner) interruptRead() {
	s.mu.Lock()
	if s.cancelRead != nil {
		s.cancelRead()
	}
	s.mu.Unlock()
}

// registerFeed announces the feed of a source that does not gate its
// feeds itself (the whole source is one feed), once it opened: a merge
// waits for it from then on. Gated sources register their files.
func (s *sourceRunner) registerFeed() {
	if s.gate != nil && !s.gated {
		s.gate.Register("")
	}
}

// run reads until the source ends (nil), stop is done (nil: a graceful
// stop), the hard stop comes (nil: the caller knows) or Read fails (the
// error). It closes the source's outgoing edges on return. The caller
// unsubscribes s.commits.
func (s *sourceRunner) run(stop context.Context) error {
	defer s.out.close()
	if c, ok := s.src.(stages.Committer); ok {
		s.commits = s.ckpt.subscribe("source", s.id, c, s.interruptRead)
	}
	if s.gate != nil {
		defer func() {
			// After the last emit: the merge stops waiting for its feeds.
			// A source that quits for a reconfiguration leaves that to
			// the reconfiguration, once its successor took its feeds over.
			if !s.quit.Load() {
				s.gate.endAll()
			}
		}()
	}
	for {
		s.commits.deliver(s.out.hard, s.out.m, s.log)
		if s.drainFirst.Load() && s.park.Load() != nil {
			if !s.drain() {
				return nil
			}
		}
		if req := s.barrierReq.Load(); req > s.injected {
			// Inject every epoch requested since the last one, even when
			// several piled up while Read or emit was blocked: aligners
			// and the checkpointer rely on every source reporting every
			// epoch (a skipped epoch would let another input's barrier
			// release the alignment while this input's records before
			// the newer barrier are still held back).
			st, err := stateOf(s.src)
			for e := s.injected + 1; e <= req; e++ {
				s.ckpt.sourceBarrier(s.id, e, st, err)
				if !s.out.barrier(e) {
					return nil
				}
			}
			s.injected = req
		}
		if pr := s.park.Load(); pr != nil && s.injected >= pr.epoch {
			select {
			case <-pr.wake:
			case <-stop.Done():
				return nil
			}
			s.park.CompareAndSwap(pr, nil)
			if s.quit.Load() {
				return nil
			}
		}
		if stop.Err() != nil {
			s.drain()
			return nil
		}
		rctx, cancel := context.WithCancel(stop)
		s.mu.Lock()
		s.cancelRead = cancel
		s.mu.Unlock()
		if s.barrierReq.Load() > s.injected || s.commits.waiting() {
			cancel() // requested between the checks above and cancelRead
		}
		var b *stages.Batch
		var err error
		if s.gate != nil && !s.gated {
			s.gate.waitRoom(rctx)
		}
		if err = rctx.Err(); err == nil {
			b, err = s.src.Read(rctx)
		}
		interrupted := rctx.Err() != nil // before cancel below sets it
		s.mu.Lock()
		s.cancelRead = nil
		s.mu.Unlock()
		cancel()
		if !s.emitRead(b) {
			return nil
		}
		switch {
		case err == nil:
		case errors.Is(err, stages.ErrEndOfInput):
			s.log.Info().Msg("source finished")
			return nil
		case interrupted:
			// Interrupted for a barrier or a stop: both handled above.
		default:
			s.out.m.errors.Inc()
			return fmt.Errorf("read: %w", err)
		}
	}
}

// emitRead passes on what a Read returned (b may be nil), through the
// merge's gate when there is one; false at the hard stop.
func (s *sourceRunner) emitRead(b *stages.Batch) bool {
	var tk *ticket
	switch {
	case s.gate == nil:
	case s.gated:
		tk = s.gate.claim(b)
	case b != nil:
		tk = s.gate.take("", b)
	}
	if b == nil {
		return true
	}
	s.out.m.in.Add(float64(b.Len() + len(b.Rejects)))
	return s.out.emit(msg{b: b, t: tk})
}

// drain empties a stages.Drainer that is going away cleanly: Drain, then
// Read until ErrEndOfInput, emitting everything (see stages.Drainer).
// Only the hard stop or a failing Read cut it short; false at the hard
// stop. Other sources, and a second call, do nothing.
func (s *sourceRunner) drain() bool {
	d, ok := s.src.(stages.Drainer)
	if !ok || s.drained {
		return true
	}
	s.drained = true
	d.Drain()
	n := 0
	for {
		b, err := s.src.Read(s.out.hard)
		if b != nil {
			n += b.Len() + len(b.Rejects)
		}
		if !s.emitRead(b) {
			return false
		}
		switch {
		case err == nil:
		case errors.Is(err, stages.ErrEndOfInput):
			s.log.Info().Int("records", n).Msg("source drained")
			return true
		case s.out.hard.Err() != nil:
			return false
		default:
			s.out.m.errors.Inc()
			s.log.Error().Err(err).Int("records", n).Msg("source failed while draining; what it still held is lost")
			return true
		}
	}
}
