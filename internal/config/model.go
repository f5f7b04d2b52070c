package config

import (
	"slices"
	"time"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/steps"
)

// StageKind tells sources, workers and sinks apart.
type StageKind string

const (
	Source StageKind = "source"
	Worker StageKind = "worker"
	Sink   StageKind = "sink"
)

// Pos is a position in a pipeline file.
type Pos struct {
	File      string
	Line, Col int
}

// Pipeline is one validated pipeline file: a typed graph of stages the
// runtime can build without further checks.
type Pipeline struct {
	Name string // file name without extension
	File string // path as given (joined with the file name in directory mode)
	Dir  string // absolute directory of the file; relative paths resolve against it

	// Hash identifies the file's content after interpolation (comments
	// and formatting excluded): equal hashes mean nothing to reload.
	Hash string

	// Stages in topological order: every stage comes after its inputs;
	// ties keep file order (sources, then workers, then sinks).
	Stages []*Stage
	// DeadLetter is the id of the dead-letter sink, or "".
	DeadLetter string
	// CheckpointInterval is how often sources and sinks commit together.
	CheckpointInterval time.Duration

	byID map[string]*Stage
}

// Stage is one node of the pipeline graph.
type Stage struct {
	ID   string
	Kind StageKind
	// Type is the registered type of a source or sink; "worker" for workers.
	Type   string
	Inputs []string // ids of upstream stages (a route's worker for `w.route`)
	// InputRoutes is parallel to Inputs: the route read from that worker
	// (`w.errors` gives "errors", `w._unmatched` gives Unmatched), or ""
	// for every record of the input.
	InputRoutes []string
	Outputs     []string // ids of downstream stages, in topological order
	Pos         Pos

	// Config is the decoded, validated options of a source or sink: the
	// pointer returned by its factory's NewConfig.
	Config  any
	Factory stages.Factory // for sources and sinks

	Worker *WorkerSpec // workers only
	Merge  *MergeSpec  // sinks with merge: only

	// Finite is true for a source that ends by itself.
	Finite bool
	// Parses is true for a worker whose output records are parsed JSON,
	// and for a source whose config says it produces fields
	// (stages.FieldsProducer).
	Parses bool

	// Fingerprint covers the stage's own options and the ids of its
	// inputs (not transitively): hot reload replaces a stage exactly when
	// its fingerprint changes.
	Fingerprint string
}

// WorkerSpec is a worker's own settings.
type WorkerSpec struct {
	// Concurrency is the number of goroutines; 0 means one per CPU.
	Concurrency int
	// Ordered keeps each input's order on output.
	Ordered bool
	Steps   []StepSpec
	// Routes are the worker's named routes in file order; Router
	// evaluates them (nil without routes).
	Routes []RouteSpec
	Router *steps.Router
}

// Unmatched is the reserved route of the records that matched no route.
const Unmatched = "_unmatched"

// RouteSpec is one named route of a worker.
type RouteSpec struct {
	Name string
	Expr string
	Pos  Pos
}

// RouteIndex returns the bit index of route name in the worker's masks
// (steps.MaxRoutes for Unmatched), or -1.
func (w *WorkerSpec) RouteIndex(name string) int {
	if name == Unmatched {
		return steps.MaxRoutes
	}
	for i, r := range w.Routes {
		if r.Name == name {
			return i
		}
	}
	return -1
}

// StepSpec is one decoded, validated step.
type StepSpec struct {
	Type    string
	Config  any
	Factory stages.Factory
	Pos     Pos
	Index   int // in the worker's steps as written (a step that did not decode has none)
}

// MergeSpec is a sink's ordered merge (SPEC §5).
type MergeSpec struct {
	OrderBy     string        `yaml:"order_by" doc:"field holding an RFC 3339 time or a number of Unix seconds"`
	MaxLateness time.Duration `yaml:"max_lateness" doc:"longest wait for a slower live feed"`
	IdleTimeout time.Duration `yaml:"idle_timeout" doc:"a live feed silent this long stops holding the merge back"`
	Late        string        `yaml:"late" doc:"what to do with a record older than one already written: emit, dead_letter or drop"`
}

func defaultMerge() MergeSpec {
	return MergeSpec{MaxLateness: time.Second, IdleTimeout: 30 * time.Second, Late: "emit"}
}

// WrittenInputs returns the stage's inputs as written: `w.route` for a
// route of worker w.
func (st *Stage) WrittenInputs() []string {
	out := make([]string, len(st.Inputs))
	for i, in := range st.Inputs {
		out[i] = in
		if i < len(st.InputRoutes) && st.InputRoutes[i] != "" {
			out[i] += "." + st.InputRoutes[i]
		}
	}
	return out
}

// Stage returns the stage with the given id, or nil.
func (p *Pipeline) Stage(id string) *Stage { return p.byID[id] }

// Sources returns the source stages in topological order.
func (p *Pipeline) Sources() []*Stage { return p.ofKind(Source) }

// Workers returns the worker stages in topological order.
func (p *Pipeline) Workers() []*Stage { return p.ofKind(Worker) }

// Sinks returns the sink stages in topological order.
func (p *Pipeline) Sinks() []*Stage { return p.ofKind(Sink) }

func (p *Pipeline) ofKind(k StageKind) []*Stage {
	var out []*Stage
	for _, s := range p.Stages {
		if s.Kind == k {
			out = append(out, s)
		}
	}
	return out
}

// Finite reports whether every source of the pipeline ends by itself, so
// the pipeline finishes once they are drained.
func (p *Pipeline) Finite() bool {
	for _, s := range p.Sources() {
		if !s.Finite {
			return false
		}
	}
	return true
}

// UpstreamSources returns the ids of the sources whose records can reach
// stage id, in the order of the pipeline file (the feed order of a merge).
func (p *Pipeline) UpstreamSources(id string) []string {
	seen := map[string]bool{}
	var walk func(string)
	walk = func(id string) {
		st := p.byID[id]
		if st == nil || seen[id] {
			return
		}
		seen[id] = true
		for _, in := range st.Inputs {
			walk(in)
		}
	}
	walk(id)
	var out []*Stage
	for _, st := range p.Stages {
		if st.Kind == Source && seen[st.ID] {
			out = append(out, st)
		}
	}
	slices.SortStableFunc(out, func(a, b *Stage) int {
		if a.Pos.Line != b.Pos.Line {
			return a.Pos.Line - b.Pos.Line
		}
		return a.Pos.Col - b.Pos.Col
	})
	ids := make([]string, len(out))
	for i, st := range out {
		ids[i] = st.ID
	}
	return ids
}

// MergingSinkOf returns the merging sink that source id feeds, or "".
func (p *Pipeline) MergingSinkOf(id string) string {
	for _, st := range p.Stages {
		if st.Kind == Sink && st.Merge != nil && slices.Contains(p.UpstreamSources(st.ID), id) {
			return st.ID
		}
	}
	return ""
}

// OwnOutputs returns the files the pipeline's sinks write (dead-letter
// sink included), for the daemon's file sources to skip.
func (p *Pipeline) OwnOutputs() []stages.OwnOutput {
	var out []stages.OwnOutput
	for _, s := range p.Sinks() {
		if op, ok := s.Config.(stages.OutputPather); ok && op.OutputPath() != "" {
			out = append(out, stages.OwnOutput{Path: op.OutputPath(), Pipeline: p.Name, Stage: s.ID})
		}
	}
	return out
}
