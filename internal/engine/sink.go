package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/etld/etld/internal/stages"
	"github.com/rs/zerolog"
)

// sinkRunner is a sink's single writer: one goroutine merges the sink's
// inputs and calls Write, Flush and Close, so lines are never interleaved.
type sinkRunner struct {
	id   string
	sink stages.Sink
	in   chan msg // merged inputs
	m    *stageMetrics
	log  zerolog.Logger
	hard context.Context

	ckpt *checkpointer
	// setHealthy reports whether the sink's last operation succeeded.
	setHealthy func(bool)

	// em sends the records the sink can never write (and an ordered
	// merge's bad and late records) to the dead-letter sink, and forwards
	// barriers there.
	em *emitter
	// An ordered merge (SPEC §5), or nil. handoff, set by a reconfiguration
	// that replaces the sink with one merging by the same key, makes the
	// sink leave its merge buffer to its successor instead of writing it.
	merge   *merger
	handoff atomic.Bool
	// hold, set by a reconfiguration, stops the merge from writing once
	// it has acked barrier hold.epoch, until hold.wake is closed: the swap
	// needs a quiescent graph, and a merge would otherwise go on writing
	// on its deadlines (output the paused checkpoint does not cover, or a
	// late record sent on a dead-letter edge being replaced).
	hold  atomic.Pointer[parkRequest]
	acked uint64 // newest barrier acked (sink goroutine only)

	// commits hands the sink its committed states (nil unless it is a
	// stages.Committer), delivered between two Writes, and after the last
	// one until it is closed (see pipeline.linger; retired ends that).
	commits *commitBox
	retired *retire
	// runs: the sink takes batches of line runs (stages.LineRunWriter);
	// others get Records.
	runs bool
}

// Retry backoff of a failing sink: it doubles from retryMin to retryMax.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// run writes until its inputs are closed, then closes the sink (flush and
// fsync; a Committer is flushed only, see close). At the hard stop it
// returns at once, leaving the sink open. The caller unsubscribes
// s.commits.
func (s *sinkRunner) run() error {
	if c, ok := s.sink.(stages.Committer); ok {
		s.commits = s.ckpt.subscribe("sink", s.id, c, nil)
	}
	if s.merge != nil {
		return s.runMerge()
	}
	defer s.em.close()
	for {
		s.commits.deliver(s.hard, s.m, s.log)
		var m msg
		var ok bool
		select {
		case m, ok = <-s.in:
		case <-s.commits.readyChan():
			continue
		case <-s.hard.Done():
		}
		if !ok {
			if err := s.hard.Err(); err != nil {
				return err
			}
			break
		}
		if m.b != nil {
			s.m.in.Add(float64(m.b.Len()))
			if !s.runs {
				m.b.SplitRuns()
			}
			if err := s.write(m.b); err != nil {
				return err
			}
			m.release() // written: nothing references it anymore
			continue
		}
		if err := s.retry("flush", func() error { return s.sink.Flush(s.hard) }); err != nil {
			return err
		}
		st, err := stateOf(s.sink)
		if !s.em.barrier(m.epoch) {
			return s.hard.Err()
		}
		s.ckpt.sinkAck(s.id, m.epoch, st, nil, err)
	}
	return s.close()
}

// write writes every record of b once. A failed Write keeps in b exactly
// the records it did not take: after a transient error they are retried
// with backoff (retry); after a permanent one (stages.PermanentError) the
// first of them is rejected to the dead-letter sink and the others are
// written at once. It counts what was written.
func (s *sinkRunner) write(b *stages.Batch) error {
	n, bytes := b.Len(), b.LineBytes()
	err := s.retry("write", func() error {
		for {
			err := s.sink.Write(s.hard, b)
			var pe *stages.PermanentError
			if err == nil || !errors.As(err, &pe) {
				return err
			}
			b.SplitRuns() // the first record left is rejected
			if len(b.Records) == 0 {
				// It blamed no record: everything was taken.
				s.log.Warn().Err(err).Msg("sink reported a permanent write error for no record; ignored")
				return nil
			}
			r := b.Records[0]
			b.Records = b.Records[1:]
			n--
			bytes -= len(r.Raw) + 1
			if !s.em.reject(s.dl(), []stages.Reject{{Record: r, Stage: s.id, Err: fmt.Errorf("sink write: %w", pe.Err)}}) {
				return s.hard.Err()
			}
			if len(b.Records) == 0 {
				return nil
			}
		}
	})
	if err != nil {
		return err
	}
	s.m.out.Add(float64(n))
	s.m.bytes.Add(float64(bytes))
	return nil
}

// close flushes and closes the sink once its inputs ended. Flush is
// retried first: Close releases the file even when it fails, so it is
// not retryable itself. A Committer sink is only flushed: its final
// state (taken after Flush, the same as after Close) is committed and
// announced to it before it is closed (see pipeline.linger).
func (s *sinkRunner) close() error {
	if err := s.retry("flush", func() error { return s.sink.Flush(s.hard) }); err != nil {
		return err
	}
	if s.commits != nil {
		return nil
	}
	if err := s.sink.Close(s.hard); err != nil {
		s.m.errors.Inc()
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// retry runs op until it succeeds, backing off between attempts: a full
// disk or an unwritable output slows the pipeline down, it loses nothing.
// A fault is logged once when it starts and once when it clears, not at
// every attempt. It gives up only at the hard stop.
func (s *sinkRunner) retry(what string, op func() error) error {
	wait := retryMin
	var timer *time.Timer
	var first time.Time
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			if attempt > 1 {
				s.log.Info().Int("attempts", attempt).Dur("after", time.Since(first)).
					Msgf("sink %s works again; resuming", what)
				s.health(true)
			}
			return nil
		}
		s.m.errors.Inc()
		s.m.retries.Inc()
		if attempt == 1 {
			first = time.Now()
			s.health(false)
			s.log.Error().Err(err).Msgf("sink %s failed; retrying with backoff (up to %v) until it works, holding the input back", what, retryMax)
		} else {
			s.log.Debug().Err(err).Int("attempt", attempt).Msgf("sink %s still failing", what)
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-timer.C:
		case <-s.hard.Done():
			return fmt.Errorf("%s: %w (gave up at shutdown)", what, err)
		}
		wait = min(2*wait, retryMax)
	}
}

func (s *sinkRunner) health(ok bool) {
	if s.setHealthy != nil {
		s.setHealthy(ok)
	}
}

// mergeWriteMax is the most records an ordered merge writes at once.
const mergeWriteMax = 1024

// runMerge is run for a sink with an ordered merge: it queues what
// arrives, writes what the merge allows, and wakes for max_lateness and
// idle_timeout deadlines and for changes of its feeds (one ends, or its
// last batch is released). At a barrier the merge's queued records become
// part of the checkpoint. When every input has ended it writes what is
// queued, in order (SPEC §5: a graceful stop writes the merge buffer).
func (s *sinkRunner) runMerge() error {
	defer s.em.close()
	mg := s.merge
	mg.publish()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		s.commits.deliver(s.hard, s.m, s.log)
		changed := mg.board.changes() // before looking, so no change is missed
		var held <-chan struct{}
		if h := s.hold.Load(); h != nil && s.acked >= h.epoch {
			select {
			case <-h.wake:
				s.hold.CompareAndSwap(h, nil)
			default:
				held = h.wake
			}
		}
		var wake time.Time
		if held == nil {
			var err error
			if wake, err = s.mergeWrite(false); err != nil {
				return err
			}
		}
		var tick <-chan time.Time
		if !wake.IsZero() {
			d := time.Until(wake)
			if d <= 0 {
				if s.hard.Err() != nil {
					return s.hard.Err()
				}
				continue
			}
			timer.Reset(d)
			tick = timer.C
		}
		select {
		case m, ok := <-s.in:
			timer.Stop()
			if !ok {
				return s.endMerge()
			}
			if m.b != nil {
				m.b.SplitRuns()
				s.m.in.Add(float64(len(m.b.Records)))
				if bad := mg.add(m, time.Now(), nil); len(bad) > 0 && !s.em.reject(s.dl(), bad) {
					return s.hard.Err()
				}
				mg.releaseDone()
				continue
			}
			if err := s.retry("flush", func() error { return s.sink.Flush(s.hard) }); err != nil {
				return err
			}
			st, err := stateOf(s.sink)
			mst, merr := mg.state()
			if !s.em.barrier(m.epoch) {
				return s.hard.Err()
			}
			s.acked = m.epoch
			s.ckpt.sinkAck(s.id, m.epoch, st, mst, errors.Join(err, merr))
			mg.publish()
		case <-held:
		case <-s.commits.readyChan():
		case <-tick:
		case <-changed:
		case <-s.hard.Done():
			return s.hard.Err()
		}
	}
}

func (s *sinkRunner) dl() chan msg {
	_, dl := s.em.edges()
	return dl
}

// endMerge writes what the merge holds, unless it is handed over, then
// flushes and closes the sink.
func (s *sinkRunner) endMerge() error {
	if !s.handoff.Load() {
		for s.merge.buffered > 0 {
			if _, err := s.mergeWrite(true); err != nil {
				return err
			}
		}
	}
	s.merge.publish()
	return s.close()
}

// mergeWrite writes the records the merge lets go now (all of them when
// final, up to mergeWriteMax), sends late ones to the dead-letter sink
// per policy, and releases the batches written in full. It returns when
// to look again (zero: at the next input).
func (s *sinkRunner) mergeWrite(final bool) (time.Time, error) {
	mg := s.merge
	wake := mg.take(time.Now(), final, mergeWriteMax)
	if len(mg.rejects) > 0 {
		if !s.em.deadLetter(s.dl(), mg.rejects) {
			return time.Time{}, s.hard.Err()
		}
		clear(mg.rejects)
		mg.rejects = mg.rejects[:0]
	}
	if len(mg.out) > 0 {
		if err := s.write(&stages.Batch{Records: mg.out}); err != nil {
			return time.Time{}, err
		}
		clear(mg.out)
		mg.out = mg.out[:0]
	}
	mg.releaseDone()
	return wake, nil
}

// restoreMerge queues the records of a committed merge state again,
// before anything runs. Those without a usable key (order_by changed)
// are counted as bad records: the dead-letter edge is not running yet.
func (s *sinkRunner) restoreMerge(state []byte) error {
	if s.merge == nil || len(state) == 0 {
		return nil
	}
	bad, err := s.merge.restore(state, time.Now())
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		s.m.errors.Add(float64(len(bad)))
		s.m.badRecord.Add(float64(len(bad)))
		s.log.Warn().Int("records", len(bad)).Msg("records restored from the checkpoint have no usable merge key; dropped")
	}
	s.merge.releaseDone()
	return nil
}
