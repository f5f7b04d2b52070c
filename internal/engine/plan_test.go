package engine

import (
	"slices"
	"strings"
	"testing"
)

// planBase is the running config of TestPlanReload: two chains, a -> w
// -> out and b -> w2 -> side.
const planBase = `version: 1
checkpoint_interval: 1s
sources:
  a: { type: file, path: a.log }
  b: { type: file, path: b.log }
workers:
  w: { inputs: [a], steps: [ parse_json: {}, set: { v: 1 } ] }
  w2: { inputs: [b], steps: [ parse_json: {} ] }
sinks:
  out: { type: file, inputs: [w], path: out.jsonl }
  side: { type: file, inputs: [w2], path: side.jsonl }
`

// planMerging is planBase with out merging w and w2.
var planMerging = strings.Replace(planBase, "inputs: [w], path: out.jsonl }",
	"inputs: [w, w2], path: out.jsonl, merge: { order_by: ts, max_lateness: 1s } }", 1)

// TestPlanReload: the plan of a reload, from the two configs alone.
func TestPlanReload(t *testing.T) {
	type fates struct{ keep, replace, add, remove, handoff []string }
	for _, c := range []struct {
		name          string
		running, next string
		want          fates
		reasons       map[string]string // id -> part of its reason
		restart       string            // part of the restart reason; "" for none
	}{
		{
			name:    "layout and comments only",
			running: planBase,
			next:    strings.Replace(planBase, "sources:\n", "# the inputs\nsources:\n", 1),
			want:    fates{keep: []string{"a", "b", "w", "w2", "out", "side"}},
		},
		{
			name:    "worker steps changed: that worker is replaced, nothing else",
			running: planBase,
			next:    strings.Replace(planBase, "set: { v: 1 }", "set: { v: 2 }", 1),
			want:    fates{keep: []string{"a", "b", "w2", "out", "side"}, replace: []string{"w"}},
			reasons: map[string]string{"w": "steps or settings changed"},
		},
		{
			name:    "source path changed: a new source",
			running: planBase,
			next:    strings.Replace(planBase, "path: a.log", "path: a2.log", 1),
			want:    fates{keep: []string{"b", "w", "w2", "out", "side"}, replace: []string{"a"}},
			reasons: map[string]string{"a": "options changed"},
		},
		{
			name:    "upstream changed: the stage is replaced",
			running: planBase,
			next:    strings.Replace(planBase, "side: { type: file, inputs: [w2]", "side: { type: file, inputs: [w, w2]", 1),
			want:    fates{keep: []string{"a", "b", "w", "w2", "out"}, replace: []string{"side"}},
			reasons: map[string]string{"side": "inputs changed ([w2] -> [w w2])"},
		},
		{
			name:    "merge option changed: the sink is replaced and hands its buffer over",
			running: planMerging,
			next:    strings.Replace(planMerging, "max_lateness: 1s", "max_lateness: 5s", 1),
			want:    fates{keep: []string{"a", "b", "w", "w2", "side"}, replace: []string{"out"}, handoff: []string{"out"}},
			reasons: map[string]string{"out": "merge options changed"},
		},
		{
			name:    "merge key changed: no handoff",
			running: planMerging,
			next:    strings.Replace(planMerging, "order_by: ts", "order_by: time", 1),
			want:    fates{keep: []string{"a", "b", "w", "w2", "side"}, replace: []string{"out"}},
			reasons: map[string]string{"out": "merge options changed"},
		},
		{
			name:    "a merge is added: its upstream sources are rebuilt for flow control",
			running: strings.Replace(planMerging, ", merge: { order_by: ts, max_lateness: 1s }", "", 1),
			next:    planMerging,
			want:    fates{keep: []string{"w", "w2", "side"}, replace: []string{"a", "b", "out"}},
			reasons: map[string]string{"a": `now feeds the ordered merge of sink "out"`, "out": "merge options changed"},
		},
		{
			name:    "a merge is removed",
			running: planMerging,
			next:    strings.Replace(planMerging, ", merge: { order_by: ts, max_lateness: 1s }", "", 1),
			want:    fates{keep: []string{"w", "w2", "side"}, replace: []string{"a", "b", "out"}},
			reasons: map[string]string{"b": `no longer feeds the ordered merge of sink "out"`},
		},
		{
			name:    "a sink added",
			running: planBase,
			next:    planBase + "  copy: { type: file, inputs: [w], path: copy.jsonl }\n",
			want:    fates{keep: []string{"a", "b", "w", "w2", "out", "side"}, add: []string{"copy"}},
			reasons: map[string]string{"copy": "new"},
		},
		{
			name:    "a chain removed",
			running: planBase,
			next: strings.NewReplacer("  b: { type: file, path: b.log }\n", "",
				"  w2: { inputs: [b], steps: [ parse_json: {} ] }\n", "",
				"  side: { type: file, inputs: [w2], path: side.jsonl }\n", "").Replace(planBase),
			want:    fates{keep: []string{"a", "w", "out"}, remove: []string{"b", "w2", "side"}},
			reasons: map[string]string{"w2": "not in the new config"},
		},
		{
			name:    "a stage changes kind",
			running: planBase,
			next: strings.NewReplacer("  w2: { inputs: [b], steps: [ parse_json: {} ] }\n", "",
				"inputs: [w2], path: side.jsonl }", "inputs: [b], path: side.jsonl }\n  w2: { type: file, inputs: [b], path: w2.jsonl }").Replace(planBase),
			want:    fates{keep: []string{"a", "b", "w", "out"}, replace: []string{"w2", "side"}},
			reasons: map[string]string{"w2": "was a worker, now it is a sink"},
		},
		{
			name:    "checkpoint_interval changed: a whole restart",
			running: planBase,
			next:    strings.Replace(planBase, "checkpoint_interval: 1s", "checkpoint_interval: 2s", 1),
			restart: "checkpoint_interval changed (1s -> 2s)",
		},
		{
			name:    "dead-letter sink set: a whole restart",
			running: planBase,
			next: strings.Replace(planBase, "checkpoint_interval: 1s\n", "checkpoint_interval: 1s\ndead_letter: rejects\n", 1) +
				"  rejects: { type: file, path: rejects.jsonl }\n",
			restart: `the dead-letter sink changed (none -> "rejects")`,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			pl := PlanReload(rcLoad(t, dir, c.running), rcLoad(t, dir, c.next))
			if c.restart != "" {
				if !pl.Restart || !strings.Contains(pl.Reason, c.restart) {
					t.Fatalf("plan %+v; want a restart because %s", pl, c.restart)
				}
				if len(pl.Keep)+len(pl.Replace)+len(pl.Add)+len(pl.Remove) != 0 || pl.empty() {
					t.Errorf("a restart plan lists stages or is empty: %+v", pl)
				}
				return
			}
			if pl.Restart {
				t.Fatalf("plan says restart (%s); want an in-place reload", pl.Reason)
			}
			got := fates{ids(pl.Keep), ids(pl.Replace), ids(pl.Add), ids(pl.Remove), pl.Handoff}
			for _, f := range []struct {
				what      string
				got, want []string
			}{{"keep", got.keep, c.want.keep}, {"replace", got.replace, c.want.replace}, {"add", got.add, c.want.add},
				{"remove", got.remove, c.want.remove}, {"handoff", got.handoff, c.want.handoff}} {
				if !slices.Equal(f.got, f.want) {
					t.Errorf("%s %v, want %v\nplan:\n%s", f.what, f.got, f.want, pl)
				}
			}
			if pl.empty() != (len(c.want.replace)+len(c.want.add)+len(c.want.remove) == 0) {
				t.Errorf("empty() = %v for %+v", pl.empty(), pl)
			}
			all := slices.Concat(pl.Replace, pl.Add, pl.Remove)
			for _, sc := range all {
				if sc.Reason == "" {
					t.Errorf("%s %s has no reason", sc.Kind, sc.ID)
				}
			}
			for id, part := range c.reasons {
				i := slices.IndexFunc(all, func(sc StageChange) bool { return sc.ID == id })
				if i < 0 || !strings.Contains(all[i].Reason, part) {
					t.Errorf("reason for %s: want it to say %q\nplan:\n%s", id, part, pl)
				}
			}
		})
	}
}

// TestPlanRebuildEnded: a kept stage whose goroutines ended is rebuilt,
// in the running config's order, and a merging sink among them still
// hands its buffer over when its key stays.
func TestPlanRebuildEnded(t *testing.T) {
	dir := t.TempDir()
	running := rcLoad(t, dir, planMerging)
	next := rcLoad(t, dir, strings.Replace(planMerging, "max_lateness: 1s", "max_lateness: 5s", 1))
	pl := PlanReload(running, next)
	pl.rebuildEnded(running, next, func(id string) bool { return id == "a" || id == "side" })
	if got, want := ids(pl.Replace), []string{"a", "out", "side"}; !slices.Equal(got, want) {
		t.Errorf("replace %v, want %v", got, want)
	}
	if got, want := ids(pl.Keep), []string{"b", "w", "w2"}; !slices.Equal(got, want) {
		t.Errorf("keep %v, want %v", got, want)
	}
	if !slices.Equal(pl.Handoff, []string{"out"}) {
		t.Errorf("handoff %v, want [out]", pl.Handoff)
	}
	for _, c := range pl.Replace {
		if c.ID != "out" && c.Reason != "it had already ended" {
			t.Errorf("%s: reason %q", c.ID, c.Reason)
		}
	}
}

// TestPlanString: the plan as `etld plan` shows it.
func TestPlanString(t *testing.T) {
	dir := t.TempDir()
	next := strings.Replace(planMerging, "max_lateness: 1s", "max_lateness: 5s", 1) +
		"  copy: { type: file, inputs: [w], path: copy.jsonl }\n"
	pl := PlanReload(rcLoad(t, dir, planMerging), rcLoad(t, dir, next))
	want := `keep     source a
keep     source b
keep     worker w
keep     worker w2
keep     sink side
replace  sink out: its merge options changed (its merge buffer is handed over)
add      sink copy: new in the config
`
	if got := pl.String(); got != want {
		t.Errorf("String():\n%s\nwant:\n%s", got, want)
	}
	restart := Plan{Restart: true, Reason: "checkpoint_interval changed (1s -> 2s)"}
	if got, want := restart.String(), "restart the pipeline: checkpoint_interval changed (1s -> 2s)\n"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
