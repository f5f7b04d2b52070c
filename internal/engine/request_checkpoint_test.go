package engine

import (
	"context"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// askingSource is a fakeSource that asks for a checkpoint after every
// batch it returns (Settings.RequestCheckpoint), like a source whose
// clients wait for their records to be committed, and records the
// states it is told are committed.
type askingSource struct {
	*fakeSource
	ask func()

	mu        sync.Mutex
	committed int
}

func (s *askingSource) Read(ctx context.Context) (*stages.Batch, error) {
	b, err := s.fakeSource.Read(ctx)
	if b != nil && err == nil {
		s.ask()
	}
	return b, err
}

func (s *askingSource) Committed(_ context.Context, st []byte) error {
	var fs fakeState
	if err := json.Unmarshal(st, &fs); err != nil {
		return err
	}
	s.mu.Lock()
	s.committed = fs.N
	s.mu.Unlock()
	return nil
}

func (s *askingSource) committedN() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.committed
}

// TestRequestCheckpoint: with checkpoint_interval 1h, every batch the
// source asked a checkpoint for is committed and announced anyway, one
// at a time and in a burst (requests made while a checkpoint is on its
// way are served by one more checkpoint after it).
func TestRequestCheckpoint(t *testing.T) {
	dir := t.TempDir()
	src := &askingSource{fakeSource: newFakeSource(64)}
	reg := testRegistry()
	if err := reg.Add(stages.Factory{
		Kind: stages.KindSource, Type: "asking", NewConfig: func() any { return &fakeConfig{} },
		NewSource: func(s stages.Settings, _ any) (stages.Source, error) {
			src.ask = s.RequestCheckpoint
			return src, nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	pipes := loadPipeline(t, dir, "p", `version: 1
checkpoint_interval: 1h
sources:
  in: {type: asking}
sinks:
  out: {type: file, inputs: [in], path: out.jsonl}
`, reg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, pipes, Options{Logger: nopLogger(), StateDir: filepath.Join(dir, "state")})
	o := &stages.Origin{Source: "in"}
	n := 0
	send := func() {
		n++
		src.feed <- &stages.Batch{Records: []stages.Record{rec(o, int64(n), `{"n":1}`)}}
	}
	for range 3 {
		send()
		waitFor(t, hangTimeout, "the batch committed and announced", func() bool { return src.committedN() == n })
	}
	for range 50 {
		send()
	}
	waitFor(t, hangTimeout, "the burst committed and announced", func() bool { return src.committedN() == n })
	cancel()
	if err := recvWithin(t, done, hangTimeout, "Run to return"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := len(readLines(t, filepath.Join(dir, "out.jsonl"))); got != n {
		t.Errorf("output has %d lines, want %d", got, n)
	}
}
