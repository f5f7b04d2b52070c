package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
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
	got      []int    // committed states received, in order
	events   []string // "committed N" and "close", in order
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
	if len(l.events) > 0 && l.events[len(l.events)-1] == "close" {
		l.problems = append(l.problems, fmt.Sprintf("Committed(%d) after Close", fs.N))
	}
	l.got = append(l.got, fs.N)
	l.events = append(l.events, fmt.Sprintf("committed %d", fs.N))
	if l.failNext {
		l.failNext = false
		return errors.New("ack failed")
	}
	return nil
}

// closed records a Close, which must run on the stage's goroutine too.
func (l *commitLog) closed() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.onGoroutine("Close")
	l.events = append(l.events, "close")
}

// check reports the contract problems seen and returns the calls, in
// order.
func (l *commitLog) check(t *testing.T) []string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.problems) > 0 {
		t.Errorf("%s %s:\n%s", l.kind, l.id, strings.Join(l.problems, "\n"))
	}
	return slices.Clone(l.events)
}

// saved is the stage's state in the saved checkpoint.
func (l *commitLog) saved(t *testing.T) int {
	t.Helper()
	cp, err := l.store.Load("p")
	if err != nil || cp == nil {
		t.Fatalf("load the checkpoint: %v, %v", cp, err)
	}
	states := cp.Sources
	if l.kind == "sink" {
		states = cp.Sinks
	}
	var fs fakeState
	if err := json.Unmarshal(states[l.id], &fs); err != nil {
		t.Fatalf("%s %s state in the checkpoint %s: %v", l.kind, l.id, states[l.id], err)
	}
	return fs.N
}

// checkFinal checks that the stage was told, last and before its Close,
// the state the saved (final) checkpoint holds for it, which is want.
func (l *commitLog) checkFinal(t *testing.T, want int) {
	t.Helper()
	if n := l.saved(t); n != want {
		t.Errorf("%s %s: the checkpoint holds %d, want %d", l.kind, l.id, n, want)
	}
	events := l.check(t)
	end := []string{fmt.Sprintf("committed %d", want), "close"}
	if len(events) < 2 || !slices.Equal(events[len(events)-2:], end) {
		t.Errorf("%s %s calls %q, want them to end with %q", l.kind, l.id, events, end)
	}
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

func (s *commitSource) Close() error {
	s.log.closed()
	return s.fakeSource.Close()
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

func (s *commitSink) Close(ctx context.Context) error {
	s.log.closed()
	return s.fakeSink.Close(ctx)
}

// newCommitStages returns a Committer source and sink saving their
// checkpoints in store (pipeline "p", ids "in" and "out").
func newCommitStages(store *state.Store, buffer int) (*commitSource, *commitSink) {
	return &commitSource{newFakeSource(buffer), &commitLog{kind: "source", id: "in", store: store}},
		&commitSink{newFakeSink(), &commitLog{kind: "sink", id: "out", store: store}}
}

// commitRegistry is testRegistry plus source types commit and
// commit_finite (src) and sink type commit (snk).
func commitRegistry(t *testing.T, src *commitSource, snk *commitSink) *stages.Registry {
	t.Helper()
	reg := testRegistry()
	for _, f := range []stages.Factory{
		{Kind: stages.KindSource, Type: "commit", Doc: "test Committer source",
			NewConfig: func() any { return &fakeConfig{} },
			NewSource: func(stages.Settings, any) (stages.Source, error) { return src, nil }},
		{Kind: stages.KindSource, Type: "commit_finite", Doc: "test Committer source that ends",
			NewConfig: func() any { return &fakeFiniteConfig{} },
			NewSource: func(stages.Settings, any) (stages.Source, error) { return src, nil }},
		{Kind: stages.KindSink, Type: "commit", Doc: "test Committer sink",
			NewConfig: func() any { return &fakeConfig{} },
			NewSink:   func(stages.Settings, any) (stages.Sink, error) { return snk, nil }},
	} {
		if err := reg.Add(f); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// feedBatches sends n batches of size records to src.
func feedBatches(src *commitSource, n, size int) {
	o := &stages.Origin{Source: "in"}
	for i := range n {
		b := &stages.Batch{}
		for j := range size {
			b.Records = append(b.Records, rec(o, int64(i*size+j), `{"i":1}`))
		}
		src.feed <- b
	}
}

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
	src, snk := newCommitStages(store, 1)
	src.log.failNext = true
	reg := commitRegistry(t, src, snk)
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
