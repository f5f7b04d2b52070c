package engine

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds etld's Prometheus collectors (SPEC §4). One Metrics is
// shared by every pipeline of a process; tests make their own.
type Metrics struct {
	Registry *prometheus.Registry

	recordsIn     *prometheus.CounterVec
	recordsOut    *prometheus.CounterVec
	dropped       *prometheus.CounterVec
	deadLettered  *prometheus.CounterVec
	errors        *prometheus.CounterVec
	bytesWritten  *prometheus.CounterVec
	retries       *prometheus.CounterVec
	checkpointAge *prometheus.GaugeVec

	mergeWatermark *prometheus.GaugeVec
	mergeLag       *prometheus.GaugeVec
	mergeBuffered  *prometheus.GaugeVec
	mergeLate      *prometheus.CounterVec

	checkpointFailures *prometheus.CounterVec
	checkpoints        *prometheus.CounterVec
	reloads            *prometheus.CounterVec
	collector          *runtimeCollector
	vecs               stageVecs // what stages ask for through stages.Meter
	taps               tapHub    // where `etld tap` attaches (tap.go)
}

// NewMetrics creates the collectors and registers them in a new registry.
func NewMetrics() *Metrics {
	stage := []string{"pipeline", "stage"}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		recordsIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etld_stage_records_in_total", Help: "Records received by a stage.",
		}, stage),
		recordsOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etld_stage_records_out_total", Help: "Records a stage passed on (sinks: wrote).",
		}, stage),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etld_stage_records_dropped_total", Help: "Records a stage dropped, by reason.",
		}, []string{"pipeline", "stage", "reason"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etld_stage_records_dead_lettered_total", Help: "Bad records a stage sent to the dead-letter sink.",
		}, stage),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etld_stage_errors_total", Help: "Errors of a stage: bad records and failed operations.",
		}, stage),
		bytesWritten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etld_sink_bytes_written_total", Help: "Bytes a sink wrote, newlines included.",
		}, stage),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etld_sink_retries_total", Help: "Failed sink operations that are being retried.",
		}, stage),
		checkpointAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etld_checkpoint_age_seconds", Help: "Time since the pipeline's last completed checkpoint.",
		}, []string{"pipeline"}),
		checkpointFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etld_checkpoint_failures_total", Help: "Checkpoints that could not be saved.",
		}, []string{"pipeline"}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etld_checkpoints_total", Help: "Checkpoints completed; one that changed no stage state is not written to disk again.",
		}, []string{"pipeline"}),
	}
	feed := []string{"pipeline", "stage", "feed"}
	m.mergeWatermark = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "etld_merge_watermark_seconds", Help: "Newest order_by key an ordered merge received from a feed (Unix seconds).",
	}, feed)
	m.mergeLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "etld_merge_lag_seconds", Help: "Wall-clock time minus a feed's watermark, when the feed last sent records.",
	}, feed)
	m.mergeBuffered = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "etld_merge_buffered_records", Help: "Records an ordered merge holds, waiting for other feeds.",
	}, stage)
	m.mergeLate = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etld_merge_late_records_total", Help: "Records older than one an ordered merge already wrote, by feed.",
	}, feed)
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etld_config_reloads_total", Help: "Config reloads by pipeline and result (success, failure, unchanged).",
	}, []string{"pipeline", "result"})
	m.collector = &runtimeCollector{queue: prometheus.NewDesc("etld_stage_queue_length",
		"Batches waiting on a stage's input channels.", []string{"pipeline", "stage"}, nil)}
	m.Registry.MustRegister(m.checkpointFailures, m.checkpoints, m.reloads, m.collector, m.recordsIn, m.recordsOut, m.dropped, m.deadLettered,
		m.errors, m.bytesWritten, m.retries, m.checkpointAge,
		m.mergeWatermark, m.mergeLag, m.mergeBuffered, m.mergeLate)
	m.vecs = stageVecs{reg: m.Registry, counters: map[string]*prometheus.CounterVec{},
		gauges: map[string]*prometheus.GaugeVec{}, help: map[string]string{}}
	return m
}

// Drop reasons, the values of the reason label.
const (
	reasonFiltered  = "filtered"   // a filter step returned false
	reasonBadRecord = "bad_record" // a bad record with no dead-letter sink
	reasonNoOutput  = "no_output"  // a source nobody reads
	reasonLate      = "late"       // a late record of an ordered merge with late: drop
)

// stageMetrics are one stage's counters, resolved once so the hot path
// only does atomic adds.
type stageMetrics struct {
	in, out, deadLettered, errors prometheus.Counter
	filtered, badRecord, noOutput prometheus.Counter
	bytes, retries                prometheus.Counter
	healthy                       atomic.Bool // false while a sink operation fails
	// probe is the stage's own health (stages.HealthReporter), or nil.
	probe func() error
}

func (m *Metrics) stage(pipeline, id string) *stageMetrics {
	sm := &stageMetrics{
		in:           m.recordsIn.WithLabelValues(pipeline, id),
		out:          m.recordsOut.WithLabelValues(pipeline, id),
		deadLettered: m.deadLettered.WithLabelValues(pipeline, id),
		errors:       m.errors.WithLabelValues(pipeline, id),
		filtered:     m.dropped.WithLabelValues(pipeline, id, reasonFiltered),
		badRecord:    m.dropped.WithLabelValues(pipeline, id, reasonBadRecord),
		noOutput:     m.dropped.WithLabelValues(pipeline, id, reasonNoOutput),
		bytes:        m.bytesWritten.WithLabelValues(pipeline, id),
		retries:      m.retries.WithLabelValues(pipeline, id),
	}
	sm.healthy.Store(true)
	return sm
}

// Reload counts a config reload of a pipeline.
func (m *Metrics) Reload(pipeline string, result Result) {
	m.reloads.WithLabelValues(pipeline, string(result)).Inc()
}
