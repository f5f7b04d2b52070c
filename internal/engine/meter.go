package engine

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etld/etld/internal/stages"
)

// stageVecs are the collectors stages ask for through stages.Meter, one
// vector per name, registered on first use and shared by every pipeline
// of the process.
type stageVecs struct {
	mu       sync.Mutex
	reg      prometheus.Registerer
	counters map[string]*prometheus.CounterVec
	gauges   map[string]*prometheus.GaugeVec
	help     map[string]string
}

// meter is the stages.Meter of one stage.
type meter struct {
	v               *stageVecs
	pipeline, stage string
}

var _ stages.Meter = meter{}

// meter returns the stages.Meter of one stage.
func (m *Metrics) meter(pipeline, stage string) stages.Meter {
	return meter{v: &m.vecs, pipeline: pipeline, stage: stage}
}

func (v *stageVecs) check(name, help string) {
	if h, ok := v.help[name]; ok && h != help {
		// A programming error of a stage type: one name, two meanings.
		panic(fmt.Sprintf("engine: metric %s asked with two help texts: %q and %q", name, h, help))
	}
	v.help[name] = help
}

func (m meter) Counter(name, help string) prometheus.Counter {
	v := m.v
	v.mu.Lock()
	defer v.mu.Unlock()
	v.check(name, help)
	cv, ok := v.counters[name]
	if !ok {
		cv = prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"pipeline", "stage"})
		v.reg.MustRegister(cv)
		v.counters[name] = cv
	}
	return cv.WithLabelValues(m.pipeline, m.stage)
}

func (m meter) Gauge(name, help string) prometheus.Gauge {
	v := m.v
	v.mu.Lock()
	defer v.mu.Unlock()
	v.check(name, help)
	gv, ok := v.gauges[name]
	if !ok {
		gv = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"pipeline", "stage"})
		v.reg.MustRegister(gv)
		v.gauges[name] = gv
	}
	return gv.WithLabelValues(m.pipeline, m.stage)
}
