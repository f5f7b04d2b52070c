package runtime

import (
	"context"
	"fmt"
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
}

// Retry backoff of a failing sink: it doubles from retryMin to retryMax.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 5 * time.Second
)

// run writes until its inputs are closed, then closes the sink (flush and
// fsync). At the hard stop it returns at once, leaving the sink open.
func (s *sinkRunner) run() error {
	for {
		m, ok := recv(s.hard, s.in)
		if !ok {
			if err := s.hard.Err(); err != nil {
				return err
			}
			break
		}
		if m.b != nil {
			n := len(m.b.Records)
			bytes := 0
			for i := range m.b.Records {
				bytes += len(m.b.Records[i].Raw) + 1
			}
			s.m.in.Add(float64(n))
			// A failed Write keeps in m.b exactly the records it did not
			// take, so retrying it writes every record once.
			if err := s.retry("write", func() error { return s.sink.Write(s.hard, m.b) }); err != nil {
				return err
			}
			s.m.out.Add(float64(n))
			s.m.bytes.Add(float64(bytes))
			m.b.Release() // written: nothing references it anymore
			continue
		}
		if err := s.retry("flush", func() error { return s.sink.Flush(s.hard) }); err != nil {
			return err
		}
		st, err := stateOf(s.sink)
		s.ckpt.sinkAck(s.id, m.epoch, st, err)
	}
	// Flush with retries first: Close releases the file even when it
	// fails, so it is not retryable itself.
	if err := s.retry("flush", func() error { return s.sink.Flush(s.hard) }); err != nil {
		return err
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
