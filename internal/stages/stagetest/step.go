package stagetest

import (
	"sync"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// stepLines is how many sample records a step check processes.
const stepLines = 60

// Step checks a step type built from cfg (see Config) on the sample
// Lines: it keeps some of them (a config that keeps nothing checks
// nothing), it does what its Caps say, its output does not depend on
// batches it processed before or share memory with later ones, and
// concurrent Process calls on different batches agree with a single one.
func Step(t *testing.T, f stages.Factory, cfg any) {
	t.Helper()
	StepOn(t, f, cfg, Lines)
}

// StepOn is Step on other sample records, for a parser of a format other
// than JSON lines: lines(n) returns n records, all different, most of
// which the step keeps.
func StepOn(t *testing.T, f stages.Factory, cfg any, lines func(n int) []string) {
	t.Helper()
	if f.Kind != stages.KindStep {
		t.Fatalf("stagetest.Step: %s type %q is not a step", f.Kind, f.Type)
	}
	build := func(t *testing.T) stages.Step {
		t.Helper()
		st, err := f.NewStep(settings(stages.Settings{}, "w"), cfg)
		if err != nil {
			t.Fatalf("NewStep: %v", err)
		}
		return st
	}
	// A parser gets the raw lines; every other step parsed records, as
	// it does behind a parser in a pipeline.
	parsed := !f.Caps.Parses
	sample := lines(stepLines)
	process := func(st stages.Step) *stages.Batch {
		b := batch(sample, parsed)
		st.Process(b)
		return b
	}
	ref := process(build(t))
	want := raws(ref.Records)

	check(t, "Process", func(t *testing.T) {
		if len(ref.Records) == 0 {
			t.Fatalf("the step kept none of the %d sample records (%d rejected): give it a config that keeps some", stepLines, len(ref.Rejects))
		}
		if n := len(ref.Records) + len(ref.Rejects); n > stepLines {
			t.Errorf("%d records in, %d kept and %d rejected", stepLines, len(ref.Records), len(ref.Rejects))
		}
		for _, r := range ref.Rejects {
			if r.Err == nil {
				t.Errorf("reject %q has no error", r.Record.Raw)
			}
		}
		if f.Caps.Parses {
			for _, r := range ref.Records {
				if !r.Parsed {
					t.Errorf("Caps.Parses, but kept record %q is not Parsed", r.Raw)
				}
				// The first parser keeps the line (Record.SetParsed), for
				// {{_line}} and dead-letter lines.
				if r.Offset >= 0 && r.Offset < int64(len(sample)) && string(r.Line) != sample[r.Offset] {
					t.Errorf("Caps.Parses, but kept record %q has Line %q, want its original line %q", r.Raw, r.Line, sample[r.Offset])
				}
			}
		}
	})

	if f.Caps.NeedsFields {
		check(t, "NeedsFields", func(t *testing.T) {
			b := batch(sample, false)
			build(t).Process(b)
			if len(b.Records) != 0 || len(b.Rejects) != stepLines {
				t.Errorf("Caps.NeedsFields, but of %d unparsed records %d were kept and %d rejected, want all rejected",
					stepLines, len(b.Records), len(b.Rejects))
			}
		})
	}

	check(t, "NoRetainedReferences", func(t *testing.T) {
		st := build(t)
		// The first batch is overwritten and released, as the runtime's
		// reuse of its buffers would: the next result must not change.
		first := process(st)
		scribble(first)
		first.Release()
		second := process(st)
		got := raws(second.Records)
		equal(t, "records after an earlier batch was overwritten", got, want)
		// A later Process, of other records, must not write into the
		// second batch's records.
		third := batch(lines(2 * stepLines)[stepLines:], parsed)
		st.Process(third)
		equal(t, "records after a later Process", raws(second.Records), got)
		scribble(third)
		third.Release()
		equal(t, "records after a later batch was overwritten", raws(second.Records), got)
	})

	check(t, "Concurrent", func(t *testing.T) {
		st := build(t)
		const workers = 4
		out := make([][]string, workers)
		var wg sync.WaitGroup
		for i := range out {
			wg.Go(func() {
				for range 3 {
					b := process(st)
					out[i] = raws(b.Records)
					b.Release()
				}
			})
		}
		wg.Wait()
		for i := range out {
			equal(t, "records of a concurrent Process", out[i], want)
		}
	})
}
