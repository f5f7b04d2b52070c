package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/etld/etld/internal/state"
)

// The pipelines of these tests take no periodic checkpoint: only the
// start-up one (nothing read yet, not announced) and the final one, or
// the one of a reload, can tell the stages their states.
const commitFinalPipeline = `version: 1
checkpoint_interval: 1h
sources:
  in: { type: %s }
workers:
  w: { inputs: [in], concurrency: 2, steps: [ { parse_json: {} } ] }
sinks:
  out: { type: commit, inputs: [w] }
`

// TestCommitFinalCheckpointFiniteSource: a pipeline whose Committer source
// ends by itself saves its final checkpoint, and then the source and the
// sink are told exactly the states it holds, each before its Close.
func TestCommitFinalCheckpointFiniteSource(t *testing.T) {
	const batches, size = 4, 3
	dir := t.TempDir()
	store := &state.Store{Dir: filepath.Join(dir, "state")}
	src, snk := newCommitStages(store, batches)
	feedBatches(src, batches, size)
	close(src.feed)
	pipes := loadPipeline(t, dir, "p", fmt.Sprintf(commitFinalPipeline, "commit_finite"), commitRegistry(t, src, snk))
	done := runAsync(context.Background(), pipes, Options{Logger: nopLogger(), StateDir: store.Dir})
	if err := recvWithin(t, done, hangTimeout, "Run to return"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	src.log.checkFinal(t, batches)
	snk.log.checkFinal(t, batches*size)
}

// TestCommitFinalCheckpointGracefulStop: the same for a running pipeline
// stopped gracefully.
func TestCommitFinalCheckpointGracefulStop(t *testing.T) {
	const batches, size = 4, 3
	dir := t.TempDir()
	store := &state.Store{Dir: filepath.Join(dir, "state")}
	src, snk := newCommitStages(store, batches)
	pipes := loadPipeline(t, dir, "p", fmt.Sprintf(commitFinalPipeline, "commit"), commitRegistry(t, src, snk))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, pipes, Options{Logger: nopLogger(), StateDir: store.Dir})
	feedBatches(src, batches, size)
	waitFor(t, hangTimeout, "every record written", func() bool { return len(snk.Records()) == batches*size })
	cancel()
	if err := recvWithin(t, done, hangTimeout, "Run to return"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	src.log.checkFinal(t, batches)
	snk.log.checkFinal(t, batches*size)
}

// TestCommitFinalCheckpointHardStop: when the shutdown timeout expires
// (a sink stuck in Write), no final checkpoint is saved and nothing that
// was not committed is announced: the source, which stopped reading at
// once and waits for the final checkpoint, and the sink are closed
// without a Committed call.
func TestCommitFinalCheckpointHardStop(t *testing.T) {
	dir := t.TempDir()
	store := &state.Store{Dir: filepath.Join(dir, "state")}
	src, snk := newCommitStages(store, 1)
	snk.block = true // until the hard stop
	pipes := loadPipeline(t, dir, "p", fmt.Sprintf(commitFinalPipeline, "commit"), commitRegistry(t, src, snk))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, pipes, Options{Logger: nopLogger(), StateDir: store.Dir, ShutdownTimeout: 50 * time.Millisecond})
	feedBatches(src, 1, 3)
	recvWithin(t, snk.blocking, hangTimeout, "the sink to block in Write")
	cancel()
	if err := recvWithin(t, done, hangTimeout, "Run to return"); !errors.Is(err, ErrShutdownTimeout) {
		t.Fatalf("Run = %v, want %v", err, ErrShutdownTimeout)
	}
	for _, l := range []*commitLog{src.log, snk.log} {
		if n := l.saved(t); n != 0 {
			t.Errorf("%s %s: the checkpoint holds %d, want the start-up state 0", l.kind, l.id, n)
		}
		if events := l.check(t); !slices.Equal(events, []string{"close"}) {
			t.Errorf("%s %s calls %q, want only a close", l.kind, l.id, events)
		}
	}
}

// TestCommitReloadRemovesCommitter: a reload that removes a Committer
// source tells it the state of the quiescent checkpoint (where it
// stopped) before closing it, and the reload returns only then.
func TestCommitReloadRemovesCommitter(t *testing.T) {
	const batches, size = 3, 2
	dir, store, src, out := newBesideOther(t, batches)
	reg := commitRegistry(t, src, nil)
	rt, err := New(Options{Logger: nopLogger(), StateDir: store.Dir, ShutdownTimeout: hangTimeout})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := rt.Apply(ctx, loadPipeline(t, dir, "p", besideOther(t, "1h", "  in: { type: commit }\n", "in, keep"), reg)); err != nil {
		t.Fatal(err)
	}
	feedBatches(src, batches, size)
	waitFor(t, hangTimeout, "every record written", func() bool { return len(out.Records()) == batches*size })
	changes, err := rt.Apply(ctx, loadPipeline(t, dir, "p", besideOther(t, "1h", "", "keep"), reg))
	if err != nil || len(changes) != 1 || changes[0].Action != ActionReconfigured {
		t.Fatalf("Apply without the source: %+v, %v; want it reconfigured in place", changes, err)
	}
	end := []string{fmt.Sprintf("committed %d", batches), "close"}
	if events := src.log.check(t); !slices.Equal(events, end) {
		t.Errorf("removed source: calls %q when the reload returned, want %q", events, end)
	}
	if err := rt.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

// TestCommitSourceEndsWhilePipelineRuns: a finite Committer source that
// ends while another source keeps the pipeline running is told its final
// state by the next checkpoint, and closed then, not at the pipeline's
// stop.
func TestCommitSourceEndsWhilePipelineRuns(t *testing.T) {
	const batches, size = 3, 2
	dir, store, src, _ := newBesideOther(t, batches)
	pipes := loadPipeline(t, dir, "p", besideOther(t, "5ms", "  in: { type: commit_finite }\n", "in, keep"),
		commitRegistry(t, src, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, pipes, Options{Logger: nopLogger(), StateDir: store.Dir})
	feedBatches(src, batches, size)
	close(src.feed)
	waitFor(t, hangTimeout, "the ended source to be closed", func() bool {
		return slices.Contains(src.log.check(t), "close")
	})
	select {
	case err := <-done:
		t.Fatalf("Run returned %v; the other source still runs", err)
	default:
	}
	src.log.checkFinal(t, batches)
	cancel()
	if err := recvWithin(t, done, hangTimeout, "Run to return"); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// newBesideOther returns a test dir, its state store, a Committer source
// (in), and the fake sink of the pipelines of besideOther, whose fake
// source keep never ends.
func newBesideOther(t *testing.T, buffer int) (string, *state.Store, *commitSource, *fakeSink) {
	dir := t.TempDir()
	store := &state.Store{Dir: filepath.Join(dir, "state")}
	src, _ := newCommitStages(store, buffer)
	out := newFakeSink()
	addFake(t, t.Name()+"-keep", newFakeSource(1))
	addFake(t, t.Name()+"-out", out)
	return dir, store, src, out
}

// besideOther is a pipeline with the given sources, as YAML lines, beside
// a fake source keep, and a worker reading inputs into a fake sink out.
func besideOther(t *testing.T, interval, sources, inputs string) string {
	return fmt.Sprintf(`version: 1
checkpoint_interval: %s
sources:
%s  keep: { type: fake, name: %s-keep }
workers:
  w: { inputs: [%s], concurrency: 2, steps: [ { parse_json: {} } ] }
sinks:
  out: { type: fake, name: %s-out, inputs: [w] }
`, interval, sources, t.Name(), inputs, t.Name())
}
