package stages

import "github.com/prometheus/client_golang/prometheus"

// HealthReporter is implemented by sources and sinks that depend on
// something outside the process which can fail while the pipeline runs:
// a child process (journalctl), a broker connection, a listener. Health
// returns nil while the stage works, or why it does not ("journalctl
// exited: ...; restarting in 4s"). An unhealthy stage keeps the daemon
// not ready (/readyz answers 503 with the reason) and shows as unhealthy
// in /api/pipelines and `etld status`; the pipeline keeps running and the
// stage is expected to recover by itself (retry with backoff).
//
// Health is called from any goroutine, at any time after NewSource or
// NewSink returns (before Open and after Close too), and often: it must
// be cheap, non-blocking and safe for concurrent use. A stage typically
// keeps the last error in an atomic.Pointer.
type HealthReporter interface {
	Health() error
}

// Meter hands a stage its own Prometheus collectors, beyond the counters
// the runtime keeps for every stage (records in and out, errors, ...).
// Each collector is labelled with the pipeline and the stage id; the
// same name asked twice (by two stages, or by a stage rebuilt by a
// reload) returns the same series for the same stage, so a reload does
// not reset or duplicate it. Names should start with "etld_" and follow
// Prometheus conventions (counters end in _total). A name must always be
// asked with the same help text and kind.
type Meter interface {
	Counter(name, help string) prometheus.Counter
	Gauge(name, help string) prometheus.Gauge
}

// Counter returns the stage's counter name from s.Meter, or an
// unregistered counter when s has no Meter (tests, embedding).
func (s Settings) Counter(name, help string) prometheus.Counter {
	if s.Meter == nil {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	return s.Meter.Counter(name, help)
}

// Gauge returns the stage's gauge name from s.Meter, or an unregistered
// gauge when s has no Meter.
func (s Settings) Gauge(name, help string) prometheus.Gauge {
	if s.Meter == nil {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	return s.Meter.Gauge(name, help)
}
