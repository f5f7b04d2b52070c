package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/state"
)

// goid returns the id of the calling goroutine (test-only: it tells
// whether two calls ran on the same goroutine).
func goid() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	f := strings.Fields(string(buf[:n]))
	id, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		panic("goroutine id: " + string(buf[:n]))
	}
	return id
}

// commitLog checks the stages.Committer contract for one fake stage: its
// states are fakeState counts that only grow; Committed must run on the
// goroutine of the stage's other calls, never during one of them, in
// order, at most once per state, only with states State returned and the
// saved checkpoint already covers.
type commitLog struct {
	kind, id string       // where its state is in a checkpoint
	store    *state.Store // where the checkpoint is saved
	failNext bool         // the next Committed fails

	mu       sync.Mutex
	g        uint64 // the goroutine of its Read or Write calls
	busy     bool   // in Read or Write
	returned map[string]bool
	got      []int // committed states received, in order
	problems []string
}

func (l *commitLog) enter() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onGoroutine("Read/Write")
	l.busy = true
}

func (l *commitLog) leave() {
	l.mu.Lock()
	l.busy = false
	l.mu.Unlock()
}

// onGoroutine records the stage's goroutine, or a problem when what runs
// on another one. Called with mu held.
func (l *commitLog) onGoroutine(what string) {
	g := goid()
	if l.g == 0 {
		l.g = g
	} else if g != l.g {
		l.problems = append(l.problems, fmt.Sprintf("%s on goroutine %d, the stage runs on %d", what, g, l.g))
	}
}

func (l *commitLog) state(n int) ([]byte, error) {
	st, err := json.Marshal(fakeState{n})
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.returned == nil {
		l.returned = map[string]bool{}
	}
	l.returned[string(st)] = true
	return st, err
}

func (l *commitLog) committed(_ context.Context, st []byte) error {
	var fs fakeState
	if err := json.Unmarshal(st, &fs); err != nil {
		return err
	}
	cp, err := l.store.Load("p")
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onGoroutine("Committed")
	if l.busy {
		l.problems = append(l.problems, "Committed during Read/Write")
	}
	if !l.returned[string(st)] {
		l.problems = append(l.problems, fmt.Sprintf("Committed(%s): State never returned it", st))
	}
	if n := len(l.got); n > 0 && fs.N <= l.got[n-1] {
		l.problems = append(l.problems, fmt.Sprintf("Committed(%d) after Committed(%d): out of order or twice", fs.N, l.got[n-1]))
	}
	var saved fakeState
	if err == nil && cp != nil {
		states := cp.Sources
		if l.kind == "sink" {
			states = cp.Sinks
		}
		err = json.Unmarshal(states[l.id], &saved)
	}
	if err != nil || cp == nil || saved.N < fs.N {
		l.problems = append(l.problems, fmt.Sprintf("Committed(%d) before a checkpoint holding it was saved (saved: %d, %v)", fs.N, saved.N, err))
	}
	l.got = append(l.got, fs.N)
	if l.failNext {
		l.failNext = false
		return errors.New("ack failed")
	}
	return nil
}

func (l *commitLog) last() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.got) == 0 {
		return 0
	}
	return l.got[len(l.got)-1]
}

// commitSource is a fakeSource that is a stages.Committer.
type commitSource struct {
	*fakeSource
	log *commitLog
}

func (s *commitSource) Read(ctx context.Context) (*stages.Batch, error) {
	s.log.enter()
	defer s.log.leave()
	return s.fakeSource.Read(ctx)
}

func (s *commitSource) State() ([]byte, error) {
	s.mu.Lock()
	n := s.read
	s.mu.Unlock()
	return s.log.state(n)
}

func (s *commitSource) Committed(ctx context.Context, st []byte) error {
	return s.log.committed(ctx, st)
}

// commitSink is a fakeSink that is a stages.Committer.
type commitSink struct {
	*fakeSink
	log *commitLog
}

func (s *commitSink) Write(ctx context.Context, b *stages.Batch) error {
	s.log.enter()
	defer s.log.leave()
	return s.fakeSink.Write(ctx, b)
}

func (s *commitSink) State() ([]byte, error) { return s.log.state(len(s.Records())) }

func (s *commitSink) Committed(ctx context.Context, st []byte) error { return s.log.committed(ctx, st) }

var (
	_ stages.Committer = (*commitSource)(nil)
	_ stages.Committer = (*commitSink)(nil)
)

// TestCommitNotification runs a pipeline whose source and sink are
// Committers through the engine: each learns, on its own goroutine and
// never during a Read or Write, the states that saved checkpoints hold for
// it, in order, and only those; a failed notification is counted and the
// pipeline goes on.
func TestCommitNotification(t *testing.T) {
	dir := t.TempDir()
	store := &state.Store{Dir: filepath.Join(dir, "state")}
	src := &commitSource{newFakeSource(1), &commitLog{kind: "source", id: "in", store: store, failNext: true}}
	snk := &commitSink{newFakeSink(), &commitLog{kind: "sink", id: "out", store: store}}
	reg := testRegistry()
	for _, f := range []stages.Factory{
		{Kind: stages.KindSource, Type: "commit", Doc: "test Committer source",
			NewConfig: func() any { return &fakeConfig{} },
			NewSource: func(stages.Settings, any) (stages.Source, error) { return src, nil }},
		{Kind: stages.KindSink, Type: "commit", Doc: "test Committer sink",
			NewConfig: func() any { return &fakeConfig{} },
			NewSink:   func(stages.Settings, any) (stages.Sink, error) { return snk, nil }},
	} {
		if err := reg.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	pipes := loadPipeline(t, dir, "p", `version: 1
checkpoint_interval: 5ms
sources:
  in: { type: commit }
workers:
  w: { inputs: [in], concurrency: 2, steps: [ { parse_json: {} } ] }
sinks:
  out: { type: commit, inputs: [w] }
`, reg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mx := NewMetrics()
	done := runAsync(ctx, pipes, Options{Logger: nopLogger(), Metrics: mx, StateDir: store.Dir})
	o := &stages.Origin{Source: "in"}
	const batches, size = 10, 5
	for i := range batches {
		b := &stages.Batch{}
		for j := range size {
			b.Records = append(b.Records, rec(o, int64(i*size+j), `{"i":1}`))
		}
		src.feed <- b
		// Each state reaches its stage before the next batch comes, so
		// the stages get many notifications, mostly while idle (a Read
		// waiting for input is interrupted for it).
		waitFor(t, hangTimeout, fmt.Sprintf("the commit of batch %d", i), func() bool {
			return src.log.last() == i+1 && snk.log.last() == (i+1)*size
		})
	}
	cancel()
	if err := recvWithin(t, done, hangTimeout, "Run to return"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	for _, l := range []*commitLog{src.log, snk.log} {
		l.mu.Lock()
		if len(l.problems) > 0 {
			t.Errorf("%s %s:\n%s", l.kind, l.id, strings.Join(l.problems, "\n"))
		}
		if len(l.got) < batches {
			t.Errorf("%s %s got %v, want at least one notification per batch", l.kind, l.id, l.got)
		}
		l.mu.Unlock()
	}
	checkCounter(t, "source errors (the failed notification)", mx.errors.WithLabelValues("p", "in"), 1)
	checkCounter(t, "sink errors", mx.errors.WithLabelValues("p", "out"), 0)
}

// TestCommitBox: a commit box delivers the newest saved state only,
// skips older checkpoints and unchanged states, and delivers nothing it
// was not given.
func TestCommitBox(t *testing.T) {
	var got []string
	c := &fakeCommitter{got: &got}
	b := &commitBox{stage: c, ready: make(chan struct{}, 1), latest: []byte("r")}
	m := NewMetrics().stage("p", "s")
	deliver := func() { b.deliver(context.Background(), m, nopLogger()) }
	steps := []struct {
		seq     uint64
		st      string
		pending bool
	}{
		{1, "r", false}, // the state it started from: not news
		{2, "a", true},
		{3, "b", true},  // coalesced with a: b covers it
		{2, "x", false}, // an older checkpoint saved late
		{4, "b", false}, // unchanged
	}
	for _, s := range steps {
		if p := b.post(s.seq, []byte(s.st)); p != s.pending {
			t.Errorf("post(%d, %s) = %v, want %v", s.seq, s.st, p, s.pending)
		}
	}
	deliver()
	deliver()
	if b.post(5, []byte("c")) {
		deliver()
	}
	if strings.Join(got, ",") != "b,c" {
		t.Errorf("delivered %v, want [b c]", got)
	}
}

type fakeCommitter struct{ got *[]string }

func (f *fakeCommitter) Committed(_ context.Context, st []byte) error {
	*f.got = append(*f.got, string(st))
	return nil
}
