package engine

import (
	"fmt"
	"sort"
	"sync/atomic"

	"github.com/etld/etld/internal/config"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// PipelineStatus is a snapshot of one pipeline for /api/pipelines and
// `etld status`.
type PipelineStatus struct {
	Name   string        `json:"name"`
	File   string        `json:"file"`
	State  State         `json:"state"`
	Error  string        `json:"error,omitempty"`
	Stages []StageStatus `json:"stages"`
}

// StageStatus is a snapshot of one stage.
type StageStatus struct {
	ID           string   `json:"id"`
	Kind         string   `json:"kind"`
	Type         string   `json:"type"`
	Inputs       []string `json:"inputs,omitempty"`
	Concurrency  int      `json:"concurrency,omitempty"`
	Steps        []string `json:"steps,omitempty"`
	In           uint64   `json:"records_in"`
	Out          uint64   `json:"records_out"`
	Dropped      uint64   `json:"records_dropped"`
	DeadLettered uint64   `json:"records_dead_lettered"`
	Errors       uint64   `json:"errors"`
	QueueLength  int      `json:"queue_length"`
	// QueueCapacity is how many batches the stage's input edges hold
	// in all: QueueLength/QueueCapacity is how full its queue is.
	QueueCapacity int  `json:"queue_capacity,omitempty"`
	Healthy       bool `json:"healthy"`
	// Problem says why the stage is unhealthy, when it says so itself
	// (stages.HealthReporter).
	Problem string `json:"problem,omitempty"`
	// Merge is a merging sink's ordered merge, as of its last checkpoint
	// barrier (or its end).
	Merge *MergeStatus `json:"merge,omitempty"`
}

// MergeStatus is a snapshot of an ordered merge.
type MergeStatus struct {
	OrderBy  string       `json:"order_by"`
	Newest   string       `json:"newest_written,omitempty"` // RFC 3339
	Buffered int          `json:"buffered_records"`
	Late     uint64       `json:"late_records"`
	Feeds    []FeedStatus `json:"feeds"`
}

// FeedStatus is one feed of an ordered merge.
type FeedStatus struct {
	Feed      string `json:"feed"`
	Watermark string `json:"watermark,omitempty"` // newest key received, RFC 3339
	Buffered  int    `json:"buffered_records"`
	Late      uint64 `json:"late_records"`
}

// Status returns a snapshot of every pipeline, sorted by name.
func (rt *Runtime) Status() []PipelineStatus {
	rt.mu.Lock()
	ps := make([]*pipeline, 0, len(rt.pipes))
	for _, p := range rt.pipes {
		ps = append(ps, p)
	}
	rt.mu.Unlock()
	sort.Slice(ps, func(i, j int) bool { return ps[i].name() < ps[j].name() })
	out := make([]PipelineStatus, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.status())
	}
	return out
}

// Ready reports whether every pipeline runs (or finished cleanly) and no
// sink is failing.
func (rt *Runtime) Ready() bool { return NotReady(rt.Status()) == "" }

// NotReady judges a snapshot of Status: "" when every pipeline runs (or
// finished cleanly) and no stage is failing, else the first problem.
func NotReady(ps []PipelineStatus) string {
	for _, p := range ps {
		if !p.State.Ready() {
			if p.State == StateFailed {
				return fmt.Sprintf("pipeline %q failed: %s", p.Name, p.Error)
			}
			return fmt.Sprintf("pipeline %q is %s", p.Name, p.State)
		}
		for _, st := range p.Stages {
			if !st.Healthy && st.Problem != "" {
				return fmt.Sprintf("pipeline %q: %s %q is unhealthy: %s", p.Name, st.Kind, st.ID, st.Problem)
			}
			if !st.Healthy {
				return fmt.Sprintf("pipeline %q: %s %q is failing and retrying (see the log)", p.Name, st.Kind, st.ID)
			}
		}
	}
	return ""
}

func (p *pipeline) status() PipelineStatus {
	cfg := p.config()
	st := PipelineStatus{Name: cfg.Name, File: cfg.File, State: StateRunning}
	switch {
	case p.finished() && p.err() != nil:
		st.State, st.Error = StateFailed, p.err().Error()
	case p.finished():
		st.State = StateFinished
	case p.stop.Err() != nil:
		st.State = StateStopping
	}
	for _, s := range cfg.Stages {
		ss := StageStatus{ID: s.ID, Kind: string(s.Kind), Type: s.Type, Inputs: s.WrittenInputs(), Healthy: true}
		if s.Worker != nil {
			ss.Concurrency = s.Worker.Concurrency
			for _, step := range s.Worker.Steps {
				ss.Steps = append(ss.Steps, step.Type)
			}
		}
		p.mu.Lock()
		m := p.metrics[s.ID]
		p.mu.Unlock()
		if m != nil {
			ss.In = counterValue(m.in)
			ss.Out = counterValue(m.out)
			ss.Dropped = counterValue(m.filtered) + counterValue(m.badRecord) + counterValue(m.noOutput)
			ss.DeadLettered = counterValue(m.deadLettered)
			ss.Errors = counterValue(m.errors)
			ss.Healthy = m.healthy.Load()
			if m.probe != nil {
				if err := m.probe(); err != nil {
					ss.Healthy, ss.Problem = false, err.Error()
				}
			}
		}
		ss.QueueLength, ss.QueueCapacity = p.queueFill(s.ID)
		if s.Merge != nil {
			for _, r := range p.sinkList() {
				if r.id == s.ID && r.merge != nil {
					ss.Merge = r.merge.status.Load()
					ss.Dropped += counterValue(r.merge.mx.lateDropped)
				}
			}
		}
		st.Stages = append(st.Stages, ss)
	}
	return st
}

// queueLength is the number of batches waiting on a stage's input edges.
func (p *pipeline) queueLength(id string) int {
	n, _ := p.queueFill(id)
	return n
}

// queueFill is queueLength and the number of batches those edges hold.
func (p *pipeline) queueFill(id string) (n, capacity int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, e := range p.edges {
		if k.to == id {
			n += len(e)
			capacity += cap(e)
		}
	}
	return n, capacity
}

func counterValue(c prometheus.Counter) uint64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil || m.Counter == nil {
		return 0
	}
	return uint64(m.Counter.GetValue())
}

// runtimeCollector exports what is read at scrape time: queue lengths.
type runtimeCollector struct {
	rt    atomic.Pointer[Runtime]
	queue *prometheus.Desc
}

func (c *runtimeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.queue }

func (c *runtimeCollector) Collect(ch chan<- prometheus.Metric) {
	rt := c.rt.Load()
	if rt == nil {
		return
	}
	rt.mu.Lock()
	ps := make([]*pipeline, 0, len(rt.pipes))
	for _, p := range rt.pipes {
		ps = append(ps, p)
	}
	rt.mu.Unlock()
	for _, p := range ps {
		cfg := p.config()
		for _, s := range cfg.Stages {
			if s.Kind == config.Source {
				continue
			}
			ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue,
				float64(p.queueLength(s.ID)), cfg.Name, s.ID)
		}
	}
}

// registerRuntime makes the metrics export rt's scrape-time values.
func (m *Metrics) registerRuntime(rt *Runtime) { m.collector.rt.Store(rt) }
