package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/sinks"
	"github.com/etld/etld/internal/stages/sources"
	"github.com/etld/etld/internal/stages/steps"
)

// waitFor polls cond until it holds, failing the test when it still does
// not after timeout. The timeout only turns a hang into a failure; no
// assertion depends on how long anything takes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if cond() {
		return
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if cond() {
				return
			}
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// recvWithin receives one value from ch, failing the test when nothing
// comes within timeout (a hang detector, not a timing assertion).
func recvWithin[T any](t testing.TB, ch <-chan T, timeout time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
		panic("unreachable")
	}
}

// hangTimeout bounds waits that only fail when something hangs.
const hangTimeout = 20 * time.Second

// ---------------------------------------------------------------------
// Records and batches.

// rec makes a record whose Raw is s, from source src at offset off.
func rec(o *stages.Origin, off int64, s string) stages.Record {
	return stages.Record{Raw: []byte(s), Origin: o, Offset: off}
}

// ---------------------------------------------------------------------
// Fake stages, reachable from a pipeline file through a test registry:
// `type: fake` with `name: N` looks N up in the fakes map.

var fakes sync.Map // name -> *fakeSource | *fakeSink | *gateStep

// addFake makes v reachable as name for the duration of the test.
func addFake(t testing.TB, name string, v any) {
	t.Helper()
	if _, dup := fakes.LoadOrStore(name, v); dup {
		t.Fatalf("fake %q registered twice", name)
	}
	t.Cleanup(func() { fakes.Delete(name) })
}

func lookupFake[T any](kind, name string) (T, error) {
	var zero T
	v, ok := fakes.Load(name)
	if !ok {
		return zero, fmt.Errorf("no fake %s %q", kind, name)
	}
	f, ok := v.(T)
	if !ok {
		return zero, fmt.Errorf("fake %q is a %T, not a %s", name, v, kind)
	}
	return f, nil
}

// fakeConfig is the config of every fake stage type.
type fakeConfig struct {
	Name string `yaml:"name"`
}

// fakeFinite is the config of the `fake` source when it ends by itself.
type fakeFiniteConfig struct {
	Name string `yaml:"name"`
}

func (*fakeFiniteConfig) Finite() bool { return true }

// testRegistry returns the built-in stage types plus the fakes: sources
// `fake` and `fake_finite`, step `gate`, sink `fake`.
func testRegistry() *stages.Registry {
	r := stages.NewRegistry()
	for _, list := range [][]stages.Factory{sources.All(), steps.All(), sinks.All()} {
		for _, f := range list {
			if err := r.Add(f); err != nil {
				panic(err)
			}
		}
	}
	extra := []stages.Factory{
		{
			Kind: stages.KindSource, Type: "fake", Doc: "test source",
			NewConfig: func() any { return &fakeConfig{} },
			NewSource: func(_ stages.Settings, c any) (stages.Source, error) {
				return lookupFake[*fakeSource]("source", c.(*fakeConfig).Name)
			},
		},
		{
			Kind: stages.KindSource, Type: "fake_finite", Doc: "test source that ends",
			NewConfig: func() any { return &fakeFiniteConfig{} },
			NewSource: func(_ stages.Settings, c any) (stages.Source, error) {
				return lookupFake[*fakeSource]("source", c.(*fakeFiniteConfig).Name)
			},
		},
		{
			Kind: stages.KindStep, Type: "gate", Doc: "test step",
			NewConfig: func() any { return &fakeConfig{} },
			NewStep: func(_ stages.Settings, c any) (stages.Step, error) {
				return lookupFake[*gateStep]("step", c.(*fakeConfig).Name)
			},
		},
		{
			Kind: stages.KindSink, Type: "fake", Doc: "test sink",
			NewConfig: func() any { return &fakeConfig{} },
			NewSink: func(_ stages.Settings, c any) (stages.Sink, error) {
				return lookupFake[*fakeSink]("sink", c.(*fakeConfig).Name)
			},
		},
	}
	for _, f := range extra {
		if err := r.Add(f); err != nil {
			panic(err)
		}
	}
	return r
}

// fakeSource returns the batches sent on feed; a closed feed is the end
// of its input. Read honours ctx.
type fakeSource struct {
	feed chan *stages.Batch

	mu             sync.Mutex
	opened, closed bool
	read           int // batches returned
}

// fakeState is the checkpoint state of the fakes: batches read by a
// source, records written by a sink.
type fakeState struct {
	N int `json:"n"`
}

func (s *fakeSource) State() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.Marshal(fakeState{s.read})
}

func (s *fakeSource) Restore([]byte) error { return nil }

func newFakeSource(buffer int) *fakeSource {
	return &fakeSource{feed: make(chan *stages.Batch, buffer)}
}

func (s *fakeSource) Open(context.Context) error {
	s.mu.Lock()
	s.opened = true
	s.mu.Unlock()
	return nil
}

func (s *fakeSource) Read(ctx context.Context) (*stages.Batch, error) {
	select {
	case b, ok := <-s.feed:
		if !ok {
			return nil, stages.ErrEndOfInput
		}
		s.mu.Lock()
		s.read++
		s.mu.Unlock()
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *fakeSource) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// gateStep blocks every batch until open is closed, then passes it on
// unchanged. It counts the batches that entered it.
type gateStep struct {
	open    chan struct{}
	mu      sync.Mutex
	entered int
}

func newGate() *gateStep { return &gateStep{open: make(chan struct{})} }

func (g *gateStep) Process(*stages.Batch) {
	g.mu.Lock()
	g.entered++
	g.mu.Unlock()
	<-g.open
}

func (g *gateStep) Entered() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.entered
}

// fakeSink keeps what it is given in memory and logs its calls: "W" per
// record written, "F" per Flush, "C" for Close.
type fakeSink struct {
	mu      sync.Mutex
	records []string
	ops     []string
	opened  bool
	closes  int

	openErr error
	// failWrites makes that many Write calls fail; a failed call takes
	// acceptBeforeFail records first (and trims them off the batch, as
	// the Sink contract asks).
	failWrites       int
	acceptBeforeFail int
	failFlushes      int
	// refuse lists records (by Raw; "*" for all) that Write can never
	// write: it takes
	// the records before one, trims them off and returns a permanent
	// error; blamed counts how often it did so per record.
	refuse map[string]bool
	blamed map[string]int

	// block, when set, makes Write block: it closes blocking (once) and
	// waits until ctx is done, or, with ignoreCtx, until release closes.
	block     bool
	ignoreCtx bool
	blocking  chan struct{}
	release   chan struct{}
	blockOnce sync.Once
}

func newFakeSink() *fakeSink {
	return &fakeSink{blocking: make(chan struct{}), release: make(chan struct{})}
}

func (s *fakeSink) Open(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.openErr != nil {
		return s.openErr
	}
	s.opened = true
	return nil
}

var errFakeWrite = errors.New("fake write failure")

func (s *fakeSink) Write(ctx context.Context, b *stages.Batch) error {
	s.mu.Lock()
	block := s.block
	s.mu.Unlock()
	if block {
		s.blockOnce.Do(func() { close(s.blocking) })
		if s.ignoreCtx {
			<-s.release
		} else {
			<-ctx.Done()
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failWrites > 0 {
		s.failWrites--
		n := min(s.acceptBeforeFail, len(b.Records))
		s.take(b.Records[:n])
		b.Records = b.Records[n:]
		s.ops = append(s.ops, "E")
		return errFakeWrite
	}
	for i, r := range b.Records {
		if s.refuse[string(r.Raw)] || s.refuse["*"] {
			s.take(b.Records[:i])
			b.Records = b.Records[i:]
			if s.blamed == nil {
				s.blamed = map[string]int{}
			}
			s.blamed[string(r.Raw)]++
			s.ops = append(s.ops, "P")
			return stages.Permanent(errFakeRefused)
		}
	}
	s.take(b.Records)
	return nil
}

var errFakeRefused = errors.New("fake sink refuses this record")

// Blamed returns how often Write refused each record.
func (s *fakeSink) Blamed() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.blamed)
}

func (s *fakeSink) take(rs []stages.Record) {
	for _, r := range rs {
		s.records = append(s.records, string(r.Raw))
		s.ops = append(s.ops, "W")
	}
}

func (s *fakeSink) Flush(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failFlushes > 0 {
		s.failFlushes--
		s.ops = append(s.ops, "E")
		return errors.New("fake flush failure")
	}
	s.ops = append(s.ops, "F")
	return nil
}

func (s *fakeSink) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closes++
	s.ops = append(s.ops, "C")
	return nil
}

func (s *fakeSink) State() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.Marshal(fakeState{len(s.records)})
}

func (s *fakeSink) Restore([]byte) error { return nil }

func (s *fakeSink) Records() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.records...)
}

func (s *fakeSink) Ops() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.ops, "")
}

// ---------------------------------------------------------------------
// Pipeline files.

// loadPipeline writes src as dir/name.yaml and loads it with reg (the
// built-in registry when nil).
func loadPipeline(t testing.TB, dir, name, src string, reg *stages.Registry) []*config.Pipeline {
	t.Helper()
	if reg == nil {
		reg = testRegistry()
	}
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	pipes, diags := config.Load(path, config.Options{Registry: reg, Env: func(string) (string, bool) { return "", false }})
	if diags.HasErrors() {
		var msgs []string
		for _, d := range diags {
			msgs = append(msgs, d.String())
		}
		t.Fatalf("config %s:\n%s", name, strings.Join(msgs, "\n"))
	}
	return pipes
}

// runAsync runs Run in a goroutine and returns its result channel.
func runAsync(ctx context.Context, pipes []*config.Pipeline, opts Options) <-chan error {
	done := make(chan error, 1)
	go func() { done <- Run(ctx, pipes, opts) }()
	return done
}

// readLines returns the lines of a file, failing on a missing final
// newline (a torn line).
func readLines(t testing.TB, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) == 0 {
		return nil
	}
	if data[len(data)-1] != '\n' {
		t.Fatalf("%s does not end with a newline: its last line is torn", path)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// countLines counts the newlines of a file; a missing file has none.
func countLines(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(data, []byte{'\n'})
}

// nopLogger is the logger of most tests: the runtime logs a lot at info.
func nopLogger() zerolog.Logger { return zerolog.Nop() }
