package engine

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages/builtin"
)

const previewBase = `version: 1
sources:
  a: { type: file, path: a.log }
  b: { type: file, path: b.log }
workers:
  w: { inputs: [a, b], concurrency: 1, steps: [ parse_json: {}, set: { v: 1 } ] }
sinks:
  out: { type: file, inputs: [w], path: out.jsonl }
`

// TestPreview: what Preview says a reload does, and that it changes
// nothing; then the reload does what it said.
func TestPreview(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"a.log", "b.log"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(`{"n":1}`+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rt, _ := rcRuntime(t, dir, hangTimeout)
	defer func() {
		if err := rt.Stop(); err != nil {
			t.Error(err)
		}
	}()
	ctx := context.Background()
	base := rcLoad(t, dir, previewBase)
	if _, err := rt.Apply(ctx, []*config.Pipeline{base}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.jsonl")
	waitFor(t, hangTimeout, "both lines written", func() bool { return countLines(out) == 2 })
	// The positions of a and b are committed.
	waitFor(t, hangTimeout, "a checkpoint with both sources", func() bool {
		cp, err := rt.store.Load("p")
		return err == nil && cp != nil && len(cp.Sources) == 2
	})

	renamed := rcLoad(t, dir, strings.NewReplacer("  a: {", "  a2: {", "inputs: [a, b]", "inputs: [a2, b]", "v: 1", "v: 2").Replace(previewBase))
	plans := rt.Preview([]*config.Pipeline{renamed})
	if len(plans) != 1 {
		t.Fatalf("plans: %+v", plans)
	}
	pp := plans[0]
	if pp.Action != ActionReconfigured || !slices.Equal(ids(pp.Stages.Keep), []string{"b", "out"}) ||
		!slices.Equal(ids(pp.Stages.Replace), []string{"w"}) || !slices.Equal(ids(pp.Stages.Add), []string{"a2"}) ||
		!slices.Equal(ids(pp.Stages.Remove), []string{"a"}) {
		t.Errorf("plan of a renamed source:\n%s", pp)
	}
	fates := map[string]string{}
	for _, c := range pp.Checkpoints {
		fates[c.Source] = c.Fate + ": " + c.Reason
	}
	for src, want := range map[string]string{"a2": `reset: renamed from "a"`, "b": "keep: keeps running", "a": "drop: "} {
		if !strings.HasPrefix(fates[src], want) {
			t.Errorf("checkpoint of %s: %q, want it to start with %q\n%s", src, fates[src], want, pp)
		}
	}
	text := pp.String()
	for _, want := range []string{"pipeline p: reconfigured\n", "  keep     source b\n", "  replace  worker w: its inputs changed ([a b] -> [a2 b])\n",
		"  add      source a2: new in the config\n", "  remove   source a: not in the new config\n", "  checkpoint reset source a2: renamed from \"a\""} {
		if !strings.Contains(text, want) {
			t.Errorf("plan text lacks %q:\n%s", want, text)
		}
	}

	other, diags := config.Parse(filepath.Join(dir, "q.yaml"), []byte(strings.ReplaceAll(previewBase, "out.jsonl", "q.jsonl")),
		config.Options{Registry: builtin.Registry()})
	if other == nil {
		t.Fatal(diags)
	}
	plans = rt.Preview([]*config.Pipeline{base, other})
	if len(plans) != 2 || plans[0].Action != ActionUnchanged || plans[1].Action != ActionStarted ||
		len(plans[1].Checkpoints) != 2 || plans[1].Checkpoints[0].Fate != CheckpointReset {
		t.Errorf("unchanged p and new q: %+v", plans)
	}
	plans = rt.Preview(nil)
	if len(plans) != 1 || plans[0].Action != ActionStopped {
		t.Errorf("no pipeline left: %+v", plans)
	}
	cpChanged := rcLoad(t, dir, "checkpoint_interval: 2s\n"+previewBase)
	plans = rt.Preview([]*config.Pipeline{cpChanged})
	if len(plans) != 1 || plans[0].Action != ActionReplaced || !strings.Contains(plans[0].Reason, "checkpoint_interval changed") ||
		len(plans[0].Checkpoints) != 2 || plans[0].Checkpoints[0].Fate != CheckpointKeep {
		t.Errorf("restart: %+v", plans)
	}

	// Nothing changed: the same config runs and reads on.
	if got := rt.Configs()["p"]; got != base {
		t.Error("Preview changed the running config")
	}
	// Appended, not rewritten: a rewrite truncates first, and a source
	// that looks between the truncate and the write rightly reads the
	// file again from the start.
	appendTo(t, filepath.Join(dir, "b.log"), `{"n":2}`+"\n")
	waitFor(t, hangTimeout, "the pipeline reads on", func() bool { return countLines(out) == 3 })

	// The reload does what the preview said.
	changes, err := rt.Apply(ctx, []*config.Pipeline{renamed})
	if err != nil || len(changes) != 1 || changes[0].Action != ActionReconfigured {
		t.Fatalf("apply: %+v, %v", changes, err)
	}
	// a2 starts over: a's line is written again.
	waitFor(t, hangTimeout, "a2 reads a.log again", func() bool { return countLines(out) == 4 })
}
