package stagetest

import (
	"context"
	"errors"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// SourceCase is one source to check: its config and the records it must
// yield. A case function makes a fresh one (fresh input) for every check.
type SourceCase struct {
	// Config is the config for the factory (see Config).
	Config any
	// Settings are given to the constructor; Pipeline and ID default.
	Settings stages.Settings
	// Want is the Raw text of every record the source yields, in order,
	// without rejects. A finite source (its config's Finite is true) then
	// returns ErrEndOfInput; a live one then blocks in Read until its ctx
	// is done. Use enough records for several batches, so that the state
	// round trip resumes in the middle.
	Want []string
	// Feed, when set, is called after every Open of a source of the case
	// that succeeded, for sources fed from outside (listeners): it starts
	// sending the rest of Want to src, picking up after what earlier
	// instances acknowledged, in goroutines that must end by themselves
	// once everything was sent or src is closed.
	Feed func(t *testing.T, src stages.Source)
	// LineRuns, for a stages.LineRunSource, says that the case's input
	// comes as line runs when the source is asked for them: the
	// ReadAllAsLineRuns check then fails unless some batch does.
	LineRuns bool
}

// Source checks a source type: Close without Open and twice, reading
// everything, Read and Open with a done context, and, for a Stateful
// source, that a fresh instance restored from a State taken between two
// Reads continues right after the records already returned. A
// stages.LineRunSource is read to its end and round-tripped through its
// State with line runs on too, its batches split into Records.
func Source(t *testing.T, f stages.Factory, newCase func(t *testing.T) SourceCase) {
	t.Helper()
	if f.Kind != stages.KindSource {
		t.Fatalf("stagetest.Source: %s type %q is not a source", f.Kind, f.Type)
	}
	lineRuns := false // build's sources send line runs (stages.LineRunSource)
	build := func(t *testing.T, c SourceCase) stages.Source {
		t.Helper()
		src, err := f.NewSource(settings(c.Settings, "s"), c.Config)
		if err != nil {
			t.Fatalf("NewSource: %v", err)
		}
		if r, ok := src.(stages.LineRunSource); ok && lineRuns {
			r.SetLineRuns(true)
		}
		return src
	}
	open := func(t *testing.T, c SourceCase) stages.Source {
		t.Helper()
		src := build(t, c)
		if err := src.Open(context.Background()); err != nil {
			t.Fatalf("Open: %v", err)
		}
		if c.Feed != nil {
			c.Feed(t, src)
		}
		return src
	}

	check(t, "CommitterIsStateful", func(t *testing.T) {
		src := build(t, newCase(t))
		checkCommitter(t, src)
		_ = src.Close()
	})

	check(t, "CloseWithoutOpen", func(t *testing.T) {
		src := build(t, newCase(t))
		if err := src.Close(); err != nil {
			t.Errorf("Close without Open: %v", err)
		}
		if err := src.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})

	check(t, "CloseTwice", func(t *testing.T) {
		c := newCase(t)
		src := open(t, c)
		r := reader{t: t, src: src}
		r.read(context.Background())
		if err := src.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := src.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})

	readAll := func(t *testing.T) {
		c := newCase(t)
		src := open(t, c)
		defer closeSource(t, src)
		r := reader{t: t, src: src}
		r.readUntil(len(c.Want))
		equal(t, "records read", r.got, c.Want)
		r.end(c)
		if lineRuns {
			t.Logf("%d batches of line runs", r.runs)
			if c.LineRuns && r.runs == 0 {
				t.Errorf("no batch came as line runs; the case says its input does")
			}
		}
	}
	check(t, "ReadAll", readAll)

	probe := build(t, newCase(t))
	_, runs := probe.(stages.LineRunSource)
	_, stateful := probe.(stages.Stateful)
	_ = probe.Close()
	if runs {
		check(t, "ReadAllAsLineRuns", func(t *testing.T) {
			lineRuns = true
			defer func() { lineRuns = false }()
			readAll(t)
		})
	}

	check(t, "OpenCancelled", func(t *testing.T) {
		src := build(t, newCase(t))
		within(t, "Open with a cancelled context", func() { _ = src.Open(cancelled()) })
		closeSource(t, src)
	})

	check(t, "ReadCancelled", func(t *testing.T) {
		// Interleave Reads whose ctx is done before the call, Reads whose
		// ctx is cancelled while they run, and plain ones: every record
		// comes out once, in order.
		c := newCase(t)
		src := open(t, c)
		defer closeSource(t, src)
		r := reader{t: t, src: src}
		for len(r.got) < len(c.Want) && !r.ended && !t.Failed() {
			if _, err := r.read(cancelled()); !errors.Is(err, context.Canceled) {
				t.Fatalf("Read with a cancelled ctx returned %v, want context.Canceled", err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			go cancel()
			if _, err := r.read(ctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, stages.ErrEndOfInput) {
				t.Fatalf("Read with a ctx cancelled meanwhile returned %v", err)
			}
			if len(r.got) < len(c.Want) && !r.ended {
				r.read(context.Background())
			}
		}
		equal(t, "records read around cancellations", r.got, c.Want)
		r.end(c)
	})

	if !stateful {
		return
	}
	roundTrip := func(t *testing.T) {
		c := newCase(t)
		first := open(t, c)
		checkState(t, first, "right after Open")
		r := reader{t: t, src: first}
		for len(r.got) == 0 && !r.ended {
			r.read(context.Background())
		}
		if len(r.got) >= len(c.Want) {
			t.Logf("the first batch holds all %d records: the restored source resumes at the end", len(c.Want))
		}
		state, err := first.(stages.Stateful).State()
		if err != nil {
			t.Fatalf("State: %v", err)
		}
		validState(t, "after a Read", state)
		closeSource(t, first)
		checkState(t, first, "after Close")

		next := build(t, c)
		if err := next.(stages.Stateful).Restore(state); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		if err := next.Open(context.Background()); err != nil {
			t.Fatalf("Open after Restore: %v", err)
		}
		if c.Feed != nil {
			c.Feed(t, next)
		}
		defer closeSource(t, next)
		checkState(t, next, "after Restore and Open")
		rest := reader{t: t, src: next}
		rest.readUntil(len(c.Want) - len(r.got))
		equal(t, "records read after Restore", rest.got, c.Want[min(len(r.got), len(c.Want)):])
		rest.end(c)
	}
	check(t, "StateRoundTrip", roundTrip)
	if runs {
		check(t, "StateRoundTripAsLineRuns", func(t *testing.T) {
			lineRuns = true
			defer func() { lineRuns = false }()
			roundTrip(t)
		})
	}
}

func closeSource(t *testing.T, src stages.Source) {
	t.Helper()
	within(t, "Close", func() {
		if err := src.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// reader collects what a source returns.
type reader struct {
	t     *testing.T
	src   stages.Source
	got   []string
	ended bool // ErrEndOfInput seen
	runs  int  // batches that came as line runs
}

// read calls Read once (failing the test if it hangs) and keeps the
// records of the batch it returns, with or without an error.
func (r *reader) read(ctx context.Context) (*stages.Batch, error) {
	r.t.Helper()
	var b *stages.Batch
	var err error
	within(r.t, "Read", func() { b, err = r.src.Read(ctx) })
	if b != nil {
		if len(b.Rejects) > 0 {
			r.t.Errorf("Read rejected %d records of the case's input, e.g. %v", len(b.Rejects), b.Rejects[0].Err)
		}
		if b.LineRuns() > 0 {
			r.runs++
			b.SplitRuns()
		}
		r.got = append(r.got, raws(b.Records)...)
		b.Release()
	}
	switch {
	case err == nil:
	case errors.Is(err, stages.ErrEndOfInput):
		r.ended = true
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
	default:
		r.t.Fatalf("Read: %v", err)
	}
	return b, err
}

// readUntil reads with no deadline until n records came or the source
// ended.
func (r *reader) readUntil(n int) {
	r.t.Helper()
	for len(r.got) < n && !r.ended && !r.t.Failed() {
		r.read(context.Background())
	}
}

// end checks what follows the case's records: the end of input for a
// finite source; for a live one, a Read that waits until its ctx is
// cancelled and then returns ctx.Err().
func (r *reader) end(c SourceCase) {
	r.t.Helper()
	if r.t.Failed() {
		return
	}
	if fin, ok := c.Config.(stages.Finiter); ok && fin.Finite() {
		if !r.ended {
			if b, _ := r.read(context.Background()); b != nil && b.Len() > 0 || !r.ended {
				r.t.Errorf("finite source: Read after the case's records did not return ErrEndOfInput")
			}
		}
		return
	}
	if r.ended {
		r.t.Errorf("live source returned ErrEndOfInput")
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	go cancel()
	n := len(r.got)
	if _, err := r.read(ctx); !errors.Is(err, context.Canceled) || len(r.got) != n {
		r.t.Errorf("live source with no more input: Read returned %d records and %v, want none and context.Canceled", len(r.got)-n, err)
	}
}
