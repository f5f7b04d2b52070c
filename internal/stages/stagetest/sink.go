package stagetest

import (
	"bytes"
	"context"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// SinkCase is one sink to check. A case function makes a fresh one (a
// fresh destination) for every check.
type SinkCase struct {
	// Config is the config for the factory (see Config).
	Config any
	// Settings are given to the constructor; Pipeline and ID default.
	Settings stages.Settings
	// Output returns the lines the destination holds; the suite calls it
	// after Flush or Close.
	Output func(t *testing.T) []string
	// FailWrites, when set, makes the next n writes to the destination
	// fail (below the sink's own buffering). Without it the Write trim
	// rule is checked on success only.
	FailWrites func(n int)
}

// sinkLines is how many sample records a sink check writes per batch.
const sinkLines = 200

// Sink checks a sink type: Close without Open and twice, Write and Flush,
// the Write trim rule, no reference kept to a written batch, Open with a
// done context, and, for a Stateful sink, that a fresh instance restored
// from a State (taken after a Flush) writes what came after it exactly
// once. State must also work right after Open and after Close.
func Sink(t *testing.T, f stages.Factory, newCase func(t *testing.T) SinkCase) {
	t.Helper()
	if f.Kind != stages.KindSink {
		t.Fatalf("stagetest.Sink: %s type %q is not a sink", f.Kind, f.Type)
	}
	ctx := context.Background()
	build := func(t *testing.T, c SinkCase) stages.Sink {
		t.Helper()
		s, err := f.NewSink(settings(c.Settings, "out"), c.Config)
		if err != nil {
			t.Fatalf("NewSink: %v", err)
		}
		return s
	}
	open := func(t *testing.T, c SinkCase) stages.Sink {
		t.Helper()
		s := build(t, c)
		if err := s.Open(ctx); err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	}
	must := func(t *testing.T, what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	all := Lines(2 * sinkLines)
	one, two := all[:sinkLines], all[sinkLines:]

	check(t, "CommitterIsStateful", func(t *testing.T) {
		s := build(t, newCase(t))
		checkCommitter(t, s)
		_ = s.Close(ctx)
	})

	check(t, "CloseWithoutOpen", func(t *testing.T) {
		s := build(t, newCase(t))
		must(t, "Close without Open", s.Close(ctx))
		must(t, "second Close", s.Close(ctx))
	})

	check(t, "CloseTwice", func(t *testing.T) {
		c := newCase(t)
		s := open(t, c)
		must(t, "Write", s.Write(ctx, batch(one, true)))
		must(t, "Close", s.Close(ctx))
		must(t, "second Close", s.Close(ctx))
		equal(t, "output after Close", c.Output(t), one)
	})

	check(t, "WriteFlush", func(t *testing.T) {
		c := newCase(t)
		s := open(t, c)
		defer closeSink(t, s)
		b := batch(one, true)
		must(t, "Write", s.Write(ctx, b))
		// The trim rule on success: the runtime does not look at
		// b.Records again, so the sink may leave it or empty it, not
		// leave some other part of it.
		if n := len(b.Records); n != 0 {
			equal(t, "b.Records after a successful Write (want them all or none)", raws(b.Records), one)
		}
		must(t, "Flush", s.Flush(ctx))
		equal(t, "output after Flush", c.Output(t), one)
	})

	check(t, "NoRetainedReferences", func(t *testing.T) {
		c := newCase(t)
		s := open(t, c)
		first := batch(one, true)
		must(t, "Write", s.Write(ctx, first))
		scribble(first)
		first.Release()
		second := batch(two, true)
		must(t, "Write", s.Write(ctx, second))
		scribble(second)
		must(t, "Flush", s.Flush(ctx))
		closeSink(t, s)
		equal(t, "output after the written batches were overwritten", c.Output(t), all)
	})

	check(t, "OpenCancelled", func(t *testing.T) {
		s := build(t, newCase(t))
		within(t, "Open with a cancelled context", func() { _ = s.Open(cancelled()) })
		closeSink(t, s)
	})

	// openFailing opens a sink of a case that can make its destination
	// fail, and closes it at the end of the test; it skips the test for
	// a case that cannot.
	openFailing := func(t *testing.T) (SinkCase, stages.Sink) {
		t.Helper()
		c := newCase(t)
		if c.FailWrites == nil {
			t.Skipf("the %s case cannot make its destination fail (SinkCase.FailWrites)", f.Type)
		}
		s := open(t, c)
		t.Cleanup(func() { closeSink(t, s) })
		return c, s
	}

	check(t, "WriteTrim", func(t *testing.T) {
		c, s := openFailing(t)
		// Enough records to overflow any sink buffer, so that the failure
		// comes in the middle of the batch.
		lines := Lines(5000)
		b := batch(lines, true)
		c.FailWrites(2)
		var before []string
		retryFailing(t, s, b, func() { before = raws(b.Records) }, func() {
			// The trim rule: b.Records is exactly the suffix not accepted.
			equal(t, "b.Records after a failed Write (want the unwritten suffix)", raws(b.Records), before[len(before)-min(len(b.Records), len(before)):])
		})
		// Duplicates here mean a failed Write did not trim b.Records.
		equal(t, "output after retried Writes and Flushes (every record once, in order: the trim rule)", c.Output(t), lines)
	})

	probe := build(t, newCase(t))
	_, stateful := probe.(stages.Stateful)
	w, ok := probe.(stages.LineRunWriter)
	runs := ok && w.WritesLineRuns()
	_ = probe.Close(ctx)
	if runs {
		check(t, "WriteLineRuns", func(t *testing.T) {
			// Batches of line runs (stages.Batch.AddLines) of one line
			// to hundreds, then one of Records: the lines once, in order.
			c := newCase(t)
			s := open(t, c)
			lines := Lines(1000)
			for _, per := range []int{1, 7, 400} {
				b := runBatch(lines, per)
				must(t, "Write of line runs", s.Write(ctx, b))
				scribble(b)
				b.Release()
			}
			must(t, "Write", s.Write(ctx, batch(one, false)))
			must(t, "Flush", s.Flush(ctx))
			closeSink(t, s)
			want := append(append(append(append([]string{}, lines...), lines...), lines...), one...)
			equal(t, "output of line runs", c.Output(t), want)
		})
		check(t, "WriteLineRunsTrim", func(t *testing.T) {
			c, s := openFailing(t)
			lines := Lines(5000)
			b := runBatch(lines, 300)
			c.FailWrites(2)
			before := 0
			retryFailing(t, s, b, func() { before = b.Len() }, func() {
				if b.Len() > before {
					t.Fatalf("a failed Write left %d records of %d", b.Len(), before)
				}
			})
			// Duplicates here mean a failed Write did not drop the runs
			// it wrote.
			equal(t, "output after retried Writes of line runs (every line once, in order)", c.Output(t), lines)
		})
	}
	if !stateful {
		return
	}
	check(t, "StateRoundTrip", func(t *testing.T) {
		c := newCase(t)
		s := open(t, c)
		checkState(t, s, "right after Open")
		must(t, "Write", s.Write(ctx, batch(one, true)))
		must(t, "Flush", s.Flush(ctx))
		state, err := s.(stages.Stateful).State()
		must(t, "State", err)
		validState(t, "after a Flush", state)
		// Written after the checkpoint, then lost with it: a crash.
		must(t, "Write", s.Write(ctx, batch(two, true)))
		must(t, "Flush", s.Flush(ctx))
		flushed, err := s.(stages.Stateful).State()
		must(t, "State after Flush", err)
		validState(t, "after a second Flush", flushed)
		closeSink(t, s)
		// The engine takes a Committer sink's final state after Flush and
		// closes it later (stages.Committer): Close must not move it.
		if closed, err := s.(stages.Stateful).State(); err != nil {
			t.Errorf("State after Close: %v", err)
		} else if !bytes.Equal(closed, flushed) {
			t.Errorf("State after Close = %s, after the Flush before it %s: Close must not change it", closed, flushed)
		}

		next := build(t, c)
		must(t, "Restore", next.(stages.Stateful).Restore(state))
		must(t, "Open after Restore", next.Open(ctx))
		must(t, "Write", next.Write(ctx, batch(two, true)))
		must(t, "Flush", next.Flush(ctx))
		closeSink(t, next)
		equal(t, "output after Restore and writing the rest again (every record once)", c.Output(t), all)
	})
}

func closeSink(t *testing.T, s stages.Sink) {
	t.Helper()
	within(t, "Close", func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// retryFailing writes b to s until Write succeeds, then flushes until
// Flush does, as the runtime retries a sink whose destination fails;
// pre runs before every Write, failed after every failed one. It fails
// the test when nothing failed or failures go on.
func retryFailing(t *testing.T, s stages.Sink, b *stages.Batch, pre, failed func()) {
	t.Helper()
	ctx := context.Background()
	n := 0
	for attempt := 0; ; attempt++ {
		pre()
		err := s.Write(ctx, b)
		if err == nil {
			break
		}
		n++
		if attempt > 10 {
			t.Fatalf("Write still fails after %d attempts: %v", attempt, err)
		}
		failed()
	}
	for attempt := 0; ; attempt++ {
		err := s.Flush(ctx)
		if err == nil {
			break
		}
		n++
		if attempt > 10 {
			t.Fatalf("Flush still fails after %d attempts: %v", attempt, err)
		}
	}
	if n == 0 {
		t.Fatalf("the injected write failures reached neither Write nor Flush")
	}
}
