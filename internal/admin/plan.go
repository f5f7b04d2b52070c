package admin

import (
	"context"
	"encoding/json"
	"io"
	"net/http"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/engine"
)

// PlanRequest is the body of POST /api/plan.
type PlanRequest struct {
	// Path is the config path to plan a reload of, absolute; "" means
	// the daemon's own -c.
	Path string `json:"path"`
}

// PlanResult is the answer of POST /api/plan: what a reload of Path
// would do. It changes nothing.
type PlanResult struct {
	Path      string         `json:"path"`
	Pipelines []PlanPipeline `json:"pipelines"`
	// Invalid names the pipelines whose file has errors: a reload keeps
	// their running version. Diagnostics has the errors (and warnings).
	Invalid     []string     `json:"invalid,omitempty"`
	Diagnostics []Diagnostic `json:"diagnostics,omitempty"`
}

// PlanPipeline is one pipeline of a PlanResult (engine.PipelinePlan).
type PlanPipeline struct {
	Name        string           `json:"name"`
	Action      engine.Action    `json:"action"`
	Reason      string           `json:"reason,omitempty"`
	Keep        []PlanStage      `json:"keep,omitempty"`
	Replace     []PlanStage      `json:"replace,omitempty"`
	Add         []PlanStage      `json:"add,omitempty"`
	Remove      []PlanStage      `json:"remove,omitempty"`
	Checkpoints []PlanCheckpoint `json:"checkpoints,omitempty"`
	// Text is the plan as `etld plan` prints it (PipelinePlan.String).
	Text string `json:"text"`
}

// PlanStage is a stage of a PlanPipeline and why it has that fate.
type PlanStage struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Reason string `json:"reason,omitempty"`
}

// PlanCheckpoint is the fate of one source's position.
type PlanCheckpoint struct {
	Source string `json:"source"`
	Fate   string `json:"fate"` // keep, reset or drop
	Reason string `json:"reason"`
}

// Diagnostic is a config problem at FILE:LINE:COL.
type Diagnostic struct {
	File     string `json:"file"`
	Line     int    `json:"line,omitempty"`
	Col      int    `json:"col,omitempty"`
	Warning  bool   `json:"warning,omitempty"`
	Message  string `json:"message"`
	Rendered string `json:"rendered"` // FILE:LINE:COL: message, as etld validate prints it
}

// NewPlanPipeline converts an engine plan.
func NewPlanPipeline(pp engine.PipelinePlan) PlanPipeline {
	stages := func(cs []engine.StageChange) []PlanStage {
		var out []PlanStage
		for _, c := range cs {
			out = append(out, PlanStage{ID: c.ID, Kind: string(c.Kind), Reason: c.Reason})
		}
		return out
	}
	out := PlanPipeline{Name: pp.Pipeline, Action: pp.Action, Reason: pp.Reason, Text: pp.String(),
		Keep: stages(pp.Stages.Keep), Replace: stages(pp.Stages.Replace), Add: stages(pp.Stages.Add), Remove: stages(pp.Stages.Remove)}
	for _, c := range pp.Checkpoints {
		out.Checkpoints = append(out.Checkpoints, PlanCheckpoint(c))
	}
	return out
}

// NewDiagnostics converts config diagnostics.
func NewDiagnostics(ds config.Diagnostics) []Diagnostic {
	var out []Diagnostic
	for _, d := range ds {
		out = append(out, Diagnostic{File: d.File, Line: d.Line, Col: d.Col, Warning: d.Severity == config.Warning,
			Message: d.Msg, Rendered: d.String()})
	}
	return out
}

// Planner works out a PlanResult for a config path ("" for the
// daemon's own).
type Planner func(ctx context.Context, path string) (*PlanResult, error)

func (s *Server) plan(w http.ResponseWriter, r *http.Request) {
	var req PlanRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil && err != io.EOF {
		text(w, http.StatusBadRequest, "bad request: want {\"path\": \"/abs/config/path\"}: "+err.Error())
		return
	}
	res, err := s.opts.Plan(r.Context(), req.Path)
	if err != nil {
		text(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	writeJSON(w, res)
}
