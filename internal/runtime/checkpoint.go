package runtime

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// checkpointer injects a barrier into every source each checkpoint
// interval. Sinks flush (and fsync, per their policy) when the barrier
// reaches them, so output becomes visible and durable at a steady pace
// even while input trickles in.
type checkpointer struct {
	interval time.Duration
	age      prometheus.Gauge

	mu        sync.Mutex
	nSinks    int
	acks      map[uint64]int // epoch -> sinks that flushed it
	completed time.Time      // when the newest epoch completed
}

func (c *checkpointer) init(p *pipeline, mx *Metrics) {
	c.interval = p.cfg.CheckpointInterval
	if c.interval <= 0 {
		c.interval = time.Second
	}
	c.age = mx.checkpointAge.WithLabelValues(p.cfg.Name)
	c.acks = map[uint64]int{}
}

// loop requests a barrier from every source each interval until ctx is done.
func (c *checkpointer) loop(ctx context.Context, sources []*sourceRunner) {
	c.mu.Lock()
	c.completed = time.Now()
	c.mu.Unlock()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	var epoch uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		epoch++
		for _, s := range sources {
			s.requestBarrier(epoch)
		}
		c.mu.Lock()
		c.age.Set(time.Since(c.completed).Seconds())
		c.mu.Unlock()
	}
}

// ack is called by a sink once it has flushed everything before epoch.
func (c *checkpointer) ack(epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acks[epoch]++
	for e := range c.acks {
		if e+16 < epoch { // a sink stopped before acking it: never completes
			delete(c.acks, e)
		}
	}
	if c.acks[epoch] < c.nSinks {
		return
	}
	for e := range c.acks {
		if e <= epoch {
			delete(c.acks, e)
		}
	}
	c.completed = time.Now()
	c.age.Set(0)
}

// sinkDone is called when a sink has stopped: it acks no more barriers.
func (c *checkpointer) sinkDone() {
	c.mu.Lock()
	c.nSinks--
	c.mu.Unlock()
}
