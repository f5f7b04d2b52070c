package engine

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// healthSource is a source that never ends and reports the health it is
// told to.
type healthSource struct {
	problem atomic.Pointer[error]
}

func (s *healthSource) Open(context.Context) error { return nil }
func (s *healthSource) Read(ctx context.Context) (*stages.Batch, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (s *healthSource) Close() error { return nil }
func (s *healthSource) Health() error {
	if p := s.problem.Load(); p != nil {
		return *p
	}
	return nil
}

func TestStageHealthShowsInStatus(t *testing.T) {
	src := &healthSource{}
	var meter stages.Meter
	reg := testRegistry()
	if err := reg.Add(stages.Factory{Kind: stages.KindSource, Type: "health_src", Doc: "test source",
		NewConfig: func() any { return &struct{}{} },
		NewSource: func(s stages.Settings, _ any) (stages.Source, error) {
			meter = s.Meter
			s.Counter("etld_test_frames_total", "Frames.").Add(3)
			return src, nil
		}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pipes := loadPipeline(t, dir, "h", `version: 1
sources:
  in: {type: health_src}
sinks:
  out: {type: file, inputs: [in], path: out.jsonl}
`, reg)
	rt, err := New(Options{Logger: nopLogger(), Metrics: NewMetrics(), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Stop()
	if _, err := rt.Apply(context.Background(), pipes); err != nil {
		t.Fatal(err)
	}
	waitFor(t, hangTimeout, "ready", rt.Ready)
	src.problem.Store(ptr(errors.New("journalctl exited: status 1")))
	reason := NotReady(rt.Status())
	if !strings.Contains(reason, `source "in" is unhealthy: journalctl exited: status 1`) {
		t.Fatalf("NotReady = %q", reason)
	}
	st := rt.Status()[0].Stages[0]
	if st.Healthy || st.Problem != "journalctl exited: status 1" {
		t.Fatalf("stage status = %+v", st)
	}
	src.problem.Store(nil)
	if reason := NotReady(rt.Status()); reason != "" {
		t.Fatalf("healthy again, NotReady = %q", reason)
	}
	// The stage's own counter is registered once, labelled, and the same
	// name asked again returns the same series.
	if meter == nil {
		t.Fatal("no Meter in Settings")
	}
	meter.Counter("etld_test_frames_total", "Frames.").Inc()
	if got := counterValue(meter.Counter("etld_test_frames_total", "Frames.")); got != 4 {
		t.Fatalf("counter = %v, want 4", got)
	}
}

func ptr[T any](v T) *T { return &v }
