package engine

import (
	"fmt"
	"slices"
	"strings"

	"github.com/etld/etld/internal/config"
)

// StageChange is one stage in a Plan: its id and kind, and why it is
// replaced, added or removed (empty for a kept stage).
type StageChange struct {
	ID     string
	Kind   config.StageKind
	Reason string
}

// Plan is what a reload does to a running pipeline (SPEC §3.2), worked
// out from the running config and the new one alone: which stages keep
// running, which are replaced by a new instance, added or removed, and
// why; or that the change cannot be applied in place (Restart, with
// Reason): the pipeline then stops and the new config starts from the
// committed checkpoint.
//
// A hot reload executes exactly this plan (see pipeline.reconfigure), so
// that what `etld plan` shows is what a reload does. The one thing the
// configs cannot tell is whether a kept stage's goroutines already ended
// (a finite source that finished, a sink whose inputs all ended); the
// reload rebuilds those too (see rebuildEnded).
type Plan struct {
	// Stages by fate: Keep, Replace and Remove in the running config's
	// order, Add in the new config's.
	Keep, Replace, Add, Remove []StageChange
	// Handoff lists the replaced sinks whose successor merges by the
	// same key: the successor takes over the queued records instead of
	// the predecessor writing them out.
	Handoff []string
	// Restart is true when the change needs a restart of the whole
	// pipeline; Reason says why. The stage lists are empty then.
	Restart bool
	Reason  string
}

// PlanReload works out how a pipeline running the config running
// becomes next (same pipeline name). It does no I/O and needs no
// running state.
func PlanReload(running, next *config.Pipeline) Plan {
	var pl Plan
	switch {
	case next.DeadLetter != running.DeadLetter:
		pl.Restart, pl.Reason = true, fmt.Sprintf("the dead-letter sink changed (%s)", change(running.DeadLetter, next.DeadLetter))
		return pl
	case next.CheckpointInterval != running.CheckpointInterval:
		pl.Restart, pl.Reason = true, fmt.Sprintf("checkpoint_interval changed (%v -> %v)", running.CheckpointInterval, next.CheckpointInterval)
		return pl
	}
	for _, st := range running.Stages {
		ns := next.Stage(st.ID)
		c := StageChange{ID: st.ID, Kind: st.Kind}
		if ns == nil {
			c.Reason = "not in the new config"
			pl.Remove = append(pl.Remove, c)
			continue
		}
		c.Kind = ns.Kind
		if c.Reason = replaceReason(running, next, st, ns); c.Reason == "" {
			pl.Keep = append(pl.Keep, c)
			continue
		}
		pl.Replace = append(pl.Replace, c)
	}
	for _, st := range next.Stages {
		if running.Stage(st.ID) == nil {
			pl.Add = append(pl.Add, StageChange{ID: st.ID, Kind: st.Kind, Reason: "new in the config"})
		}
	}
	pl.setHandoff(running, next)
	return pl
}

// setHandoff lists the replaced sinks that merge by the same key before
// and after.
func (pl *Plan) setHandoff(running, next *config.Pipeline) {
	pl.Handoff = nil
	for _, c := range pl.Replace {
		st, ns := running.Stage(c.ID), next.Stage(c.ID)
		if st.Merge != nil && ns.Merge != nil && st.Merge.OrderBy == ns.Merge.OrderBy {
			pl.Handoff = append(pl.Handoff, c.ID)
		}
	}
}

// replaceReason says why stage st of running must be replaced by ns of
// next, or "" when it can keep running.
func replaceReason(running, next *config.Pipeline, st, ns *config.Stage) string {
	switch {
	case ns.Kind != st.Kind:
		return fmt.Sprintf("it was a %s, now it is a %s", st.Kind, ns.Kind)
	case ns.Fingerprint != st.Fingerprint:
		switch {
		case ns.Type != st.Type:
			return fmt.Sprintf("its type changed (%s -> %s)", st.Type, ns.Type)
		case !slices.Equal(st.WrittenInputs(), ns.WrittenInputs()):
			return fmt.Sprintf("its inputs changed ([%s] -> [%s])", strings.Join(st.WrittenInputs(), " "), strings.Join(ns.WrittenInputs(), " "))
		case (st.Merge == nil) != (ns.Merge == nil) || st.Merge != nil && *st.Merge != *ns.Merge:
			return "its merge options changed"
		case st.Kind == config.Worker:
			return "its steps or settings changed"
		default:
			return "its options changed"
		}
	}
	// A source's flow control is set when it is built: one that starts
	// or stops feeding an ordered merge is rebuilt.
	if st.Kind == config.Source {
		was, is := running.MergingSinkOf(st.ID), next.MergingSinkOf(st.ID)
		switch {
		case was == "" && is != "":
			return fmt.Sprintf("it now feeds the ordered merge of sink %q", is)
		case was != "" && is == "":
			return fmt.Sprintf("it no longer feeds the ordered merge of sink %q", was)
		}
	}
	return ""
}

func change(from, to string) string {
	q := func(s string) string {
		if s == "" {
			return "none"
		}
		return fmt.Sprintf("%q", s)
	}
	return q(from) + " -> " + q(to)
}

// rebuildEnded moves the kept stages whose goroutines already returned
// (ended reports them) to Replace, in the running config's order: a
// stage that ended cannot take new edges.
func (pl *Plan) rebuildEnded(running, next *config.Pipeline, ended func(id string) bool) {
	moved := false
	pl.Keep = slices.DeleteFunc(pl.Keep, func(c StageChange) bool {
		if !ended(c.ID) {
			return false
		}
		c.Reason = "it had already ended"
		pl.Replace = append(pl.Replace, c)
		moved = true
		return true
	})
	if !moved {
		return
	}
	order := map[string]int{}
	for i, st := range running.Stages {
		order[st.ID] = i
	}
	slices.SortStableFunc(pl.Replace, func(a, b StageChange) int { return order[a.ID] - order[b.ID] })
	pl.setHandoff(running, next)
}

// empty reports whether the plan changes no stage (only formatting or
// comments changed).
func (pl Plan) empty() bool {
	return !pl.Restart && len(pl.Replace) == 0 && len(pl.Remove) == 0 && len(pl.Add) == 0
}

// kept reports whether the stage id keeps running.
func (pl Plan) kept(id string) bool {
	return slices.ContainsFunc(pl.Keep, func(c StageChange) bool { return c.ID == id })
}

// String is the plan as `etld plan` shows it: one line a stage, with
// what happens to it and why.
func (pl Plan) String() string {
	if pl.Restart {
		return "restart the pipeline: " + pl.Reason + "\n"
	}
	var b strings.Builder
	line := func(what string, cs []StageChange) {
		for _, c := range cs {
			fmt.Fprintf(&b, "%-8s %s %s", what, c.Kind, c.ID)
			if c.Reason != "" {
				fmt.Fprintf(&b, ": %s", c.Reason)
			}
			if what == "replace" && slices.Contains(pl.Handoff, c.ID) {
				b.WriteString(" (its merge buffer is handed over)")
			}
			b.WriteByte('\n')
		}
	}
	line("keep", pl.Keep)
	line("replace", pl.Replace)
	line("add", pl.Add)
	line("remove", pl.Remove)
	return b.String()
}

// ids returns the stage ids of cs.
func ids(cs []StageChange) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}
