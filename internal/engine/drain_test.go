package engine

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// drainSource holds records it "received" and gives them out only when
// drained, as a listener's queue would be: Read waits until Drain, then
// returns them and ErrEndOfInput.
type drainSource struct {
	id      string
	held    []string
	mu      sync.Mutex
	drained chan struct{}
	once    sync.Once
	given   bool
}

func (s *drainSource) Open(context.Context) error { return nil }
func (s *drainSource) Close() error               { return nil }
func (s *drainSource) Drain()                     { s.once.Do(func() { close(s.drained) }) }
func (s *drainSource) Read(ctx context.Context) (*stages.Batch, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.drained:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.given {
		return nil, stages.ErrEndOfInput
	}
	s.given = true
	b := &stages.Batch{}
	o := &stages.Origin{Source: s.id, Path: "held"}
	for _, l := range s.held {
		b.Records = append(b.Records, stages.Record{Raw: []byte(l), Origin: o, Offset: -1})
	}
	return b, nil
}

type drainConfig struct {
	Tag string `yaml:"tag"`
}

// drainRegistry is the test registry plus a `held` source whose records
// are tagged with its tag option, each instance recorded in made.
func drainRegistry(t *testing.T, made *[]*drainSource) *stages.Registry {
	reg := testRegistry()
	err := reg.Add(stages.Factory{Kind: stages.KindSource, Type: "held", Doc: "test source",
		NewConfig: func() any { return &drainConfig{} },
		NewSource: func(s stages.Settings, c any) (stages.Source, error) {
			tag := c.(*drainConfig).Tag
			src := &drainSource{id: s.ID, drained: make(chan struct{})}
			for i := range 100 {
				src.held = append(src.held, fmt.Sprintf(`{"tag":%q,"n":%d}`, tag, i))
			}
			*made = append(*made, src)
			return src, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func heldPipeline(tag string) string {
	return `version: 1
sources:
  in: {type: held, tag: ` + tag + `}
sinks:
  out: {type: file, inputs: [in], path: out.jsonl}
`
}

// TestDrainAtGracefulStop: a stages.Drainer's held records reach the sink
// at a graceful stop.
func TestDrainAtGracefulStop(t *testing.T) {
	var made []*drainSource
	reg := drainRegistry(t, &made)
	dir := t.TempDir()
	rt, err := New(Options{Logger: nopLogger(), StateDir: t.TempDir(), ShutdownTimeout: hangTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Apply(context.Background(), loadPipeline(t, dir, "d", heldPipeline("a"), reg)); err != nil {
		t.Fatal(err)
	}
	if err := rt.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := len(readLines(t, filepath.Join(dir, "out.jsonl"))); n != 100 {
		t.Fatalf("wrote %d records, want the 100 the source held", n)
	}
}

// TestDrainAtReloadReplace: a reload that replaces a Drainer source
// drains the old one before its barrier, so its records are written
// (and covered by the reload's checkpoint); the new one runs on.
func TestDrainAtReloadReplace(t *testing.T) {
	var made []*drainSource
	reg := drainRegistry(t, &made)
	dir := t.TempDir()
	rt, err := New(Options{Logger: nopLogger(), StateDir: t.TempDir(), ShutdownTimeout: hangTimeout})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Stop()
	ctx := context.Background()
	if _, err := rt.Apply(ctx, loadPipeline(t, dir, "d", heldPipeline("a"), reg)); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Apply(ctx, loadPipeline(t, dir, "d", heldPipeline("b"), reg)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, hangTimeout, "the old source's records", func() bool { return countLines(filepath.Join(dir, "out.jsonl")) == 100 })
	for _, l := range readLines(t, filepath.Join(dir, "out.jsonl")) {
		if l[:11] != `{"tag":"a",` {
			t.Fatalf("line %s: want only the replaced source's records before the stop", l)
		}
	}
	if len(made) != 2 {
		t.Fatalf("%d sources built, want 2", len(made))
	}
	if err := rt.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := countLines(filepath.Join(dir, "out.jsonl")); n != 200 {
		t.Fatalf("after the stop %d records, want 200 (both sources' held records)", n)
	}
}
