package engine

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
)

// PipelinePlan is what Apply would do to one pipeline: the action, and
// for an in-place reconfiguration the Plan of its stages, as the reload
// itself works them out (see Runtime.Preview).
type PipelinePlan struct {
	Pipeline string
	// Action is ActionStarted, ActionStopped, ActionUnchanged,
	// ActionReconfigured or ActionReplaced (a restart of the whole
	// pipeline, Reason says why).
	Action Action
	Reason string
	Stages Plan // ActionReconfigured only
	// Checkpoints says, for every source that keeps a position, whether
	// it resumes from it, starts over or is forgotten.
	Checkpoints []CheckpointFate
}

// Fates of a source's checkpoint in a reload.
const (
	CheckpointKeep  = "keep"  // the source resumes from its position
	CheckpointReset = "reset" // the source has none: it starts at start_at
	CheckpointDrop  = "drop"  // the source goes away with its position
)

// CheckpointFate is what a reload does to one source's position.
type CheckpointFate struct {
	Source string
	Fate   string
	Reason string
}

// Preview returns what Apply(pipes) would do, pipeline by pipeline, in
// Apply's order (stopped pipelines first), without changing anything. It
// takes the same decisions as Apply: an unchanged hash, the Plan of an
// in-place reconfiguration (pipeline.planReload, the plan reconfigure
// executes), a restart, a renamed pipeline file whose checkpoint moves.
// Only what happens between Preview and the reload (a finite source that
// ends meanwhile, a stage that fails to open) can make them differ.
func (rt *Runtime) Preview(pipes []*config.Pipeline) []PipelinePlan {
	rt.mu.Lock()
	running := make(map[string]*pipeline, len(rt.pipes))
	for n, p := range rt.pipes {
		running[n] = p
	}
	rt.mu.Unlock()
	want := map[string]bool{}
	for _, cfg := range pipes {
		want[cfg.Name] = true
	}
	isRunning := map[string]bool{}
	for n := range running {
		isRunning[n] = true
	}
	var out []PipelinePlan
	movedFrom := map[string]string{} // new name -> old name of a renamed file
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range running {
			if !yield(n) {
				return
			}
		}
	}) {
		if want[name] {
			continue
		}
		pp := PipelinePlan{Pipeline: name, Action: ActionStopped, Reason: "its file is gone: it stops gracefully"}
		if to := rt.renamedTo(name, pipes, isRunning); to != "" && rt.store != nil {
			pp.Reason = fmt.Sprintf("its file was renamed: it continues as pipeline %q with its checkpoint", to)
			movedFrom[to] = name
		}
		out = append(out, pp)
	}
	for _, cfg := range pipes {
		out = append(out, rt.previewOne(running[cfg.Name], cfg, movedFrom[cfg.Name]))
	}
	return out
}

// previewOne is applyOne's decision for cfg, old being the pipeline of
// that name (nil: none) and movedFrom the running pipeline whose
// checkpoint a rename hands to it ("": none).
func (rt *Runtime) previewOne(old *pipeline, cfg *config.Pipeline, movedFrom string) PipelinePlan {
	pp := PipelinePlan{Pipeline: cfg.Name}
	switch {
	case old.unchangedBy(cfg):
		pp.Action = ActionUnchanged
		return pp
	case old != nil && !old.finished():
		pl := old.planReload(cfg)
		if !pl.Restart {
			pp.Action, pp.Stages = ActionReconfigured, pl
			if pl.empty() {
				pp.Action = ActionUnchanged // only formatting or comments changed
			}
			pp.Checkpoints = inPlaceFates(old, cfg, pl)
			return pp
		}
		pp.Action, pp.Reason = ActionReplaced, "restart: "+pl.Reason
	case old != nil:
		pp.Action, pp.Reason = ActionReplaced, "it had finished or failed: it starts again with the new config"
	default:
		pp.Action, pp.Reason = ActionStarted, "new pipeline"
	}
	// A (re)started pipeline restores the checkpoint saved under its
	// name, or the one a rename moves to it.
	name := cmp.Or(movedFrom, cfg.Name)
	committed := map[string]bool{}
	if rt.store != nil {
		if cp, err := rt.store.Load(name); err == nil && cp != nil {
			for id := range cp.Sources {
				committed[id] = true
			}
		}
	}
	for _, st := range cfg.Sources() {
		if !stateful(cfg, st) {
			continue
		}
		if committed[st.ID] {
			pp.Checkpoints = append(pp.Checkpoints, CheckpointFate{st.ID, CheckpointKeep, "resumes from the checkpoint"})
		} else {
			pp.Checkpoints = append(pp.Checkpoints, CheckpointFate{st.ID, CheckpointReset, "no checkpoint: " + startsOver})
		}
	}
	return pp
}

// inPlaceFates follows reload.open: a kept source keeps its position; a
// new instance resumes from the newest state its id has, else starts
// over; a removed source's position goes with it.
func inPlaceFates(old *pipeline, cfg *config.Pipeline, pl Plan) []CheckpointFate {
	var out []CheckpointFate
	running := old.config()
	removed := map[string]*config.Stage{}
	for _, c := range pl.Remove {
		if st := running.Stage(c.ID); st != nil && st.Kind == config.Source && stateful(running, st) {
			removed[c.ID] = st
		}
	}
	for _, st := range cfg.Sources() {
		if !stateful(cfg, st) {
			continue
		}
		switch {
		case pl.kept(st.ID):
			out = append(out, CheckpointFate{st.ID, CheckpointKeep, "keeps running"})
		case old.ckpt.latestSourceState(st.ID) != nil:
			out = append(out, CheckpointFate{st.ID, CheckpointKeep, "the new instance resumes from its position"})
		default:
			why := "no checkpoint under this id: " + startsOver
			for id, rs := range removed {
				if rs.Fingerprint == st.Fingerprint {
					why = fmt.Sprintf("renamed from %q, whose position is not carried over: %s", id, startsOver)
				}
			}
			out = append(out, CheckpointFate{st.ID, CheckpointReset, why})
		}
	}
	for _, c := range pl.Remove {
		if _, ok := removed[c.ID]; ok {
			out = append(out, CheckpointFate{c.ID, CheckpointDrop, "removed: its position is forgotten"})
		}
	}
	return out
}

// stateful reports whether a source of cfg keeps a position, by building
// it (no I/O, see stages.Factory) and closing it unopened.
func stateful(cfg *config.Pipeline, st *config.Stage) bool {
	if st.Factory.NewSource == nil {
		return false
	}
	src, err := st.Factory.NewSource(stages.Settings{Pipeline: cfg.Name, ID: st.ID, Logger: zerolog.Nop()}, st.Config)
	if err != nil {
		return false
	}
	defer src.Close()
	_, ok := src.(stages.Stateful)
	return ok
}

// startsOver says where a source without a position starts.
const startsOver = "it starts over (a file source at start_at: what it read before is read again)"

// String is the plan as `etld plan` shows it: the pipeline and its
// action, then the stages (Plan.String) and the checkpoints, indented.
func (pp PipelinePlan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pipeline %s: %s", pp.Pipeline, pp.Action)
	if pp.Reason != "" {
		fmt.Fprintf(&b, " (%s)", pp.Reason)
	}
	b.WriteByte('\n')
	if pp.Action == ActionReconfigured {
		for _, l := range strings.SplitAfter(pp.Stages.String(), "\n") {
			if l != "" {
				b.WriteString("  " + l)
			}
		}
	}
	for _, c := range pp.Checkpoints {
		fmt.Fprintf(&b, "  checkpoint %-5s source %s: %s\n", c.Fate, c.Source, c.Reason)
	}
	return b.String()
}
