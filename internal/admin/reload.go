package admin

import (
	"maps"
	"sync"
	"time"

	"github.com/etld/etld/internal/engine"
)

// Reload is the outcome of loading the config, for one pipeline or for
// the whole load, as /api/pipelines shows it.
type Reload struct {
	Time   time.Time     `json:"time"`
	Result engine.Result `json:"result"`
	// Action is what happened to the pipeline (see engine.Action). Empty
	// for a whole load.
	Action engine.Action `json:"action,omitempty"`
	Error  string        `json:"error,omitempty"`
}

// Failed reports whether the load failed.
func (r Reload) Failed() bool { return r.Result.Failed() }

// ReloadTracker remembers the last load of every pipeline and of the
// whole config. It is safe for concurrent use; the zero value is ready.
type ReloadTracker struct {
	mu          sync.Mutex
	last        *Reload
	perPipeline map[string]Reload
}

// Record stores one load: its overall outcome and the outcome for each
// pipeline it concerned. A zero Time is set to now. Pipelines not in
// perPipeline keep their previous record; a pipeline whose action is
// stopped is forgotten.
func (t *ReloadTracker) Record(overall Reload, perPipeline map[string]Reload) {
	now := time.Now()
	if overall.Time.IsZero() {
		overall.Time = now
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.last = &overall
	if t.perPipeline == nil {
		t.perPipeline = map[string]Reload{}
	}
	for name, r := range perPipeline {
		if r.Action == engine.ActionStopped {
			delete(t.perPipeline, name)
			continue
		}
		if r.Time.IsZero() {
			r.Time = overall.Time
		}
		t.perPipeline[name] = r
	}
}

// Last returns the most recent load; ok is false before the first.
func (t *ReloadTracker) Last() (r Reload, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last == nil {
		return Reload{}, false
	}
	return *t.last, true
}

// Pipelines returns the last load of every pipeline, by name.
func (t *ReloadTracker) Pipelines() map[string]Reload {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.perPipeline)
}
