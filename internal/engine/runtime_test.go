package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
)

// seqOf returns the "seq" field of a JSON line.
func seqOf(t *testing.T, line string) int {
	t.Helper()
	var v struct {
		Seq *int `json:"seq"`
	}
	if err := json.Unmarshal([]byte(line), &v); err != nil || v.Seq == nil {
		t.Fatalf("line %q: not a JSON object with a seq (%v)", line, err)
	}
	return *v.Seq
}

// checkSeqs checks that lines hold seq 0..n-1, each exactly once.
func checkSeqs(t *testing.T, lines []string, n int) {
	t.Helper()
	seen := make([]int, n)
	for _, l := range lines {
		s := seqOf(t, l)
		if s < 0 || s >= n {
			t.Fatalf("unexpected seq %d", s)
		}
		seen[s]++
	}
	lost, dup := 0, 0
	for _, c := range seen {
		switch {
		case c == 0:
			lost++
		case c > 1:
			dup += c - 1
		}
	}
	if lost != 0 || dup != 0 || len(lines) != n {
		t.Errorf("%d lines for %d records: %d lost, %d duplicated", len(lines), n, lost, dup)
	}
}

func TestRunGenerateToFile(t *testing.T) {
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("ordered=%v", ordered), func(t *testing.T) {
			t.Parallel()
			const n = 20000
			dir := t.TempDir()
			pipes := loadPipeline(t, dir, "gen", fmt.Sprintf(`version: 1
sources:
  gen: { type: generate, count: %d }
workers:
  parse:
    inputs: [gen]
    concurrency: 3
    ordered: %v
    steps:
      - parse_json: {}
      - set: { pipeline: gen }
sinks:
  out: { type: file, inputs: [parse], path: out/out.jsonl }
`, n, ordered), nil)
			mx := NewMetrics()
			if err := Run(context.Background(), pipes, Options{Logger: nopLogger(), Metrics: mx}); err != nil {
				t.Fatalf("Run = %v", err)
			}
			lines := readLines(t, filepath.Join(dir, "out", "out.jsonl"))
			checkSeqs(t, lines, n)
			if ordered {
				for i, l := range lines {
					if seqOf(t, l) != i {
						t.Fatalf("ordered worker: line %d has seq %d", i, seqOf(t, l))
					}
				}
			}
			if !strings.Contains(lines[0], `"pipeline":"gen"`) {
				t.Errorf("line %q lacks the field set by the worker", lines[0])
			}
			checkCounter(t, "sink records out", mx.recordsOut.WithLabelValues("gen", "out"), n)
			checkCounter(t, "source records in", mx.recordsIn.WithLabelValues("gen", "gen"), n)
		})
	}
}

// TestRunFanOutFanIn: a source read by two workers, both feeding one sink
// and one feeding a second sink: every sink gets every record of each of
// its inputs.
func TestRunFanOutFanIn(t *testing.T) {
	t.Parallel()
	const n = 5000
	dir := t.TempDir()
	pipes := loadPipeline(t, dir, "fan", fmt.Sprintf(`version: 1
sources:
  gen: { type: generate, count: %d }
workers:
  a: { inputs: [gen], concurrency: 2, steps: [ { parse_json: {} }, { set: { via: a } } ] }
  b: { inputs: [gen], concurrency: 2, steps: [ { parse_json: {} }, { set: { via: b } } ] }
sinks:
  both: { type: file, inputs: [a, b], path: both.jsonl }
  raw:  { type: file, inputs: [gen], path: raw.jsonl }
`, n), nil)
	if err := Run(context.Background(), pipes, Options{Logger: nopLogger()}); err != nil {
		t.Fatalf("Run = %v", err)
	}
	raw := readLines(t, filepath.Join(dir, "raw.jsonl"))
	checkSeqs(t, raw, n)
	var viaA, viaB []string
	for _, l := range readLines(t, filepath.Join(dir, "both.jsonl")) {
		switch {
		case strings.Contains(l, `"via":"a"`):
			viaA = append(viaA, l)
		case strings.Contains(l, `"via":"b"`):
			viaB = append(viaB, l)
		default:
			t.Fatalf("line %q came through neither worker", l)
		}
	}
	checkSeqs(t, viaA, n)
	checkSeqs(t, viaB, n)
}

// TestRunDeadLetter: bad records from a real parse_json step, and an
// over-long line from the file source, reach the dead-letter sink as
// SPEC §2 lines; good records reach the output.
func TestRunDeadLetter(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.jsonl")
	long := strings.Repeat("x", 100)
	content := `{"seq":0}` + "\n" + `{"seq":` + "\n" + "\n" + long + "\n" + "\xff\xfe\n" + `{"seq":1,"level":"debug"}` + "\n" + `{"seq":2}` + "\n"
	if err := os.WriteFile(in, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	pipes := loadPipeline(t, dir, "dl", `version: 1
dead_letter: rejects
sources:
  app: { type: file, path: in.jsonl, follow: false, max_line_bytes: 64 }
workers:
  parse:
    inputs: [app]
    concurrency: 2
    steps:
      - parse_json: {}
      - filter: 'level != "debug"'
sinks:
  out: { type: file, inputs: [parse], path: out.jsonl }
  rejects: { type: file, path: rejects.jsonl }
`, nil)
	mx := NewMetrics()
	if err := Run(context.Background(), pipes, Options{Logger: nopLogger(), Metrics: mx}); err != nil {
		t.Fatalf("Run = %v", err)
	}
	out := readLines(t, filepath.Join(dir, "out.jsonl"))
	if len(out) != 2 || seqOf(t, out[0])+seqOf(t, out[1]) != 2 {
		t.Errorf("output %q, want seq 0 and 2", out)
	}
	rejects := readLines(t, filepath.Join(dir, "rejects.jsonl"))
	byOrigin := map[string]map[string]any{}
	for _, l := range rejects {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("dead-letter line %q: %v", l, err)
		}
		for _, k := range []string{"error", "stage", "source", "origin"} {
			if _, ok := m[k]; !ok {
				t.Errorf("dead-letter line %s lacks %q", l, k)
			}
		}
		if m["source"] != "app" {
			t.Errorf("dead-letter line %s: source is not app", l)
		}
		o, _ := m["origin"].(string)
		byOrigin[strings.TrimPrefix(o, in+":")] = m
	}
	if len(rejects) != 4 {
		t.Fatalf("%d dead-letter lines, want 4 (bad JSON, empty line, over-long line, invalid UTF-8):\n%s", len(rejects), strings.Join(rejects, "\n"))
	}
	// Offsets: {"seq":0}\n is 10 bytes, {"seq":\n 8, \n 1, the long line 101.
	if m := byOrigin["10"]; m == nil || m["record"] != `{"seq":` || m["stage"] != "parse" {
		t.Errorf("bad JSON line: %v", m)
	}
	if m := byOrigin["18"]; m == nil || m["record"] != "" || m["stage"] != "parse" {
		t.Errorf("empty line: %v", m)
	}
	if m := byOrigin["19"]; m == nil || m["record"] != long[:64] || m["length"] != float64(100) || m["stage"] != "app" {
		t.Errorf("over-long line: %v", m)
	}
	if m := byOrigin["120"]; m == nil || m["record_base64"] != "//4=" || m["stage"] != "parse" {
		t.Errorf("invalid UTF-8 line: %v", m)
	}
	checkCounter(t, "worker dead-lettered", mx.deadLettered.WithLabelValues("dl", "parse"), 3)
	checkCounter(t, "source dead-lettered", mx.deadLettered.WithLabelValues("dl", "app"), 1)
	checkCounter(t, "filtered", mx.dropped.WithLabelValues("dl", "parse", reasonFiltered), 1)
}

// TestRunSinkCannotOpen: a sink whose path is a directory makes Run fail
// to start, naming the pipeline and the stage.
func TestRunSinkCannotOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "out", "taken"), 0o755); err != nil {
		t.Fatal(err)
	}
	pipes := loadPipeline(t, dir, "broken", `version: 1
sources:
  gen: { type: generate, count: 10 }
sinks:
  out: { type: file, inputs: [gen], path: out/taken }
`, nil)
	err := Run(context.Background(), pipes, Options{Logger: nopLogger()})
	var se *StartError
	if !errors.As(err, &se) {
		t.Fatalf("Run = %v (%T), want a *StartError", err, err)
	}
	for _, want := range []string{`pipeline "broken"`, `stage "out"`, "taken"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// TestRunStartFailureClosesOthers: when one pipeline cannot open, the
// stages that other pipelines already opened are closed again, and none
// of them ran.
func TestRunStartFailureClosesOthers(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "taken"), 0o755); err != nil {
		t.Fatal(err)
	}
	src, sink := newFakeSource(1), newFakeSink()
	name := strings.ReplaceAll(t.Name(), "/", "_")
	addFake(t, name+"-src", src)
	addFake(t, name+"-sink", sink)
	pipes := loadPipeline(t, dir, "a", fmt.Sprintf(`version: 1
sources:
  in: { type: fake, name: %s-src }
sinks:
  out: { type: fake, inputs: [in], name: %s-sink }
`, name, name), nil)
	pipes = append(pipes, loadPipeline(t, dir, "b", `version: 1
sources:
  gen: { type: generate, count: 10 }
sinks:
  out: { type: file, inputs: [gen], path: taken }
`, nil)...)
	err := Run(context.Background(), pipes, Options{Logger: nopLogger()})
	var se *StartError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), `pipeline "b"`) {
		t.Fatalf("Run = %v, want a *StartError for pipeline b", err)
	}
	src.mu.Lock()
	srcState := fmt.Sprintf("opened=%v closed=%v", src.opened, src.closed)
	src.mu.Unlock()
	if srcState != "opened=true closed=true" {
		t.Errorf("source of pipeline a: %s, want opened and closed again", srcState)
	}
	if ops := sink.Ops(); !strings.Contains(ops, "C") || strings.Contains(ops, "W") {
		t.Errorf("sink of pipeline a: calls %q, want a Close and no Write", ops)
	}
}

// TestRunCancelInfiniteSource: cancelling Run's ctx stops an endless
// source gracefully: Run returns nil, every record generated is written,
// and no line is torn.
func TestRunCancelInfiniteSource(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pipes := loadPipeline(t, dir, "forever", `version: 1
checkpoint_interval: 20ms
sources:
  gen: { type: generate, count: 0 }
workers:
  parse: { inputs: [gen], concurrency: 4, steps: [ { parse_json: {} } ] }
sinks:
  out: { type: file, inputs: [parse], path: out.jsonl }
`, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mx := NewMetrics()
	done := runAsync(ctx, pipes, Options{Logger: nopLogger(), Metrics: mx})
	out := filepath.Join(dir, "out.jsonl")
	waitFor(t, hangTimeout, "some output", func() bool { return countLines(out) >= 1000 })
	cancel()
	if err := recvWithin(t, done, hangTimeout, "Run to return"); err != nil {
		t.Fatalf("Run = %v, want nil after a graceful stop", err)
	}
	lines := readLines(t, out)
	checkSeqs(t, lines, len(lines))
	checkCounter(t, "records read = records written", mx.recordsIn.WithLabelValues("forever", "gen"), len(lines))
}

// TestRunShutdownTimeout: a sink that never finishes its write makes a
// graceful stop time out: Run returns ErrShutdownTimeout after the hard
// stop, and the sink is released (Close).
func TestRunShutdownTimeout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sink := newFakeSink()
	sink.block = true
	name := strings.ReplaceAll(t.Name(), "/", "_")
	addFake(t, name, sink)
	pipes := loadPipeline(t, dir, "stuck", fmt.Sprintf(`version: 1
sources:
  gen: { type: generate, count: 0 }
workers:
  parse: { inputs: [gen], concurrency: 2, steps: [ { parse_json: {} } ] }
sinks:
  out: { type: fake, inputs: [parse], name: %s }
`, name), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, pipes, Options{Logger: nopLogger(), ShutdownTimeout: 50 * time.Millisecond})
	recvWithin(t, sink.blocking, hangTimeout, "the sink to block")
	cancel()
	err := recvWithin(t, done, hangTimeout, "Run to return")
	if !errors.Is(err, ErrShutdownTimeout) {
		t.Fatalf("Run = %v, want ErrShutdownTimeout", err)
	}
	if ops := sink.Ops(); !strings.HasSuffix(ops, "C") {
		t.Errorf("sink calls %q: want it closed after the hard stop", ops)
	}
}

// TestRunShutdownTimeoutStuckWrite: the shutdown timeout bounds the stop
// even when a sink's Write ignores ctx (a write(2) to a pipe nobody reads,
// a hung NFS server): Run must return ErrShutdownTimeout (etld exits 1,
// SPEC §2) rather than wait for the stuck goroutine.
func TestRunShutdownTimeoutStuckWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sink := newFakeSink()
	sink.block, sink.ignoreCtx = true, true
	name := strings.ReplaceAll(t.Name(), "/", "_")
	addFake(t, name, sink)
	pipes := loadPipeline(t, dir, "stuck", fmt.Sprintf(`version: 1
sources:
  gen: { type: generate, count: 0 }
sinks:
  out: { type: fake, inputs: [gen], name: %s }
`, name), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, pipes, Options{Logger: nopLogger(), ShutdownTimeout: 50 * time.Millisecond})
	recvWithin(t, sink.blocking, hangTimeout, "the sink to block")
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, ErrShutdownTimeout) {
			t.Errorf("Run = %v, want ErrShutdownTimeout", err)
		}
		close(sink.release)
		// Let the abandoned sink goroutine end before goleak looks.
		waitFor(t, hangTimeout, "the sink to be closed", func() bool { return strings.HasSuffix(sink.Ops(), "C") })
	case <-time.After(5 * time.Second):
		t.Errorf("Run has not returned 5s after a 50ms shutdown timeout: it waits for the stuck sink")
		close(sink.release)
		<-done
	}
}

// TestRunBackpressuredSource reproduces the conditions under which a
// source used to skip checkpoint epochs: source x is blocked in emit
// (its worker is stuck) over two checkpoint ticks, while source y, idle,
// injects both barriers; the sink's aligner then sees wx's barrier 2
// before wy's barrier 1. The pipeline must neither lose nor duplicate
// records nor hang. Runs in a synctest bubble, so the checkpoint ticker
// runs on the bubble's fake clock (time.Sleep below advances it; it does
// not synchronise with real time).
func TestRunBackpressuredSource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		name := strings.ReplaceAll(t.Name(), "/", "_")
		x, y := newFakeSource(32), newFakeSource(32)
		gx, gy := newGate(), newGate()
		sink := newFakeSink()
		addFake(t, name+"-x", x)
		addFake(t, name+"-y", y)
		addFake(t, name+"-gx", gx)
		addFake(t, name+"-gy", gy)
		addFake(t, name+"-sink", sink)
		pipes := loadPipeline(t, t.TempDir(), "bp", fmt.Sprintf(`version: 1
checkpoint_interval: 1s
sources:
  x: { type: fake, name: %[1]s-x }
  y: { type: fake, name: %[1]s-y }
workers:
  wx: { inputs: [x], concurrency: 1, steps: [ { gate: { name: %[1]s-gx } } ] }
  wy: { inputs: [y], concurrency: 1, steps: [ { gate: { name: %[1]s-gy } } ] }
sinks:
  out: { type: fake, inputs: [wx, wy], name: %[1]s-sink }
`, name), nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := runAsync(ctx, pipes, Options{Logger: nopLogger(), ShutdownTimeout: 5 * time.Second})

		var want []string
		feed := func(s *fakeSource, src string, n int) {
			for i := range n {
				r := fmt.Sprintf("%s-%d", src, i)
				want = append(want, r)
				s.feed <- &stages.Batch{Records: []stages.Record{{Raw: []byte(r)}}}
			}
		}
		feed(x, "x", 12) // more than the edges between x and wx's step hold
		feed(y, "y", 2)
		synctest.Wait()                     // x blocked in emit; y idle in Read
		time.Sleep(2500 * time.Millisecond) // ticks 1 and 2
		synctest.Wait()
		close(gx.open) // x unblocks: its next barriers reach the sink first
		synctest.Wait()
		close(gy.open) // then wy delivers its barriers 1 and 2
		synctest.Wait()
		close(x.feed)
		close(y.feed)

		var err error
		select {
		case err = <-done:
		case <-time.After(time.Minute): // bubble time
			t.Errorf("the pipeline did not finish after its sources ended: stuck aligning barriers; stopping it")
			cancel()
			err = <-done
		}
		if err != nil {
			t.Errorf("Run = %v", err)
		}
		got := sink.Records()
		if strings.Join(sorted(got), " ") != strings.Join(sorted(want), " ") {
			t.Errorf("sink got %d records %v, want %v", len(got), got, want)
		}
	})
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

// TestStopSeveralStuck (issue 12, bug 2): Stop is bounded by one deadline
// however many pipelines are stuck in a Write that ignores every
// cancellation: it returns ErrShutdownTimeout once the shutdown timeout
// and the hard stop's grace have passed, rather than wait for the second
// stuck pipeline on a grace timer that has already fired.
func TestStopSeveralStuck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rt, err := New(Options{Logger: nopLogger(), ShutdownTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var pipes []*config.Pipeline
	var stuck []*fakeSink
	for _, p := range []string{"a", "b", "c"} {
		sink := newFakeSink()
		sink.block, sink.ignoreCtx = true, true
		name := strings.ReplaceAll(t.Name(), "/", "_") + "_" + p
		addFake(t, name, sink)
		stuck = append(stuck, sink)
		pipes = append(pipes, loadPipeline(t, dir, p, fmt.Sprintf(`version: 1
sources:
  gen: { type: generate, count: 0 }
sinks:
  out: { type: fake, inputs: [gen], name: %s }
`, name), nil)...)
	}
	if _, err := rt.Apply(context.Background(), pipes); err != nil {
		t.Fatal(err)
	}
	for _, s := range stuck {
		recvWithin(t, s.blocking, hangTimeout, "every sink to block")
	}
	done := make(chan error, 1)
	go func() { done <- rt.Stop() }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrShutdownTimeout) {
			t.Errorf("Stop = %v, want ErrShutdownTimeout", err)
		}
	case <-time.After(hangTimeout):
		t.Errorf("Stop has not returned %v after a 50ms shutdown timeout with three stuck pipelines", hangTimeout)
		defer func() { <-done }() // once the sinks are released below
	}
	for _, s := range stuck {
		close(s.release)
	}
	// Let the abandoned sink goroutines end before goleak looks.
	for _, s := range stuck {
		waitFor(t, hangTimeout, "the sink to be closed", func() bool { return strings.HasSuffix(s.Ops(), "C") })
	}
}

// TestIdleWatchDoesNotPileUp (issue 12): starting and stopping a pipeline
// next to one that keeps running, many times, leaves no goroutine behind
// (the idle watch used to start one per start, each waiting for every
// pipeline, the long-running one included); Idle still closes once the
// last pipeline stops. Not parallel: it counts the process's goroutines.
func TestIdleWatchDoesNotPileUp(t *testing.T) {
	dir := t.TempDir()
	rt, err := New(Options{Logger: nopLogger()})
	if err != nil {
		t.Fatal(err)
	}
	gen := func(name string) []*config.Pipeline {
		return loadPipeline(t, dir, name, fmt.Sprintf(`version: 1
sources:
  gen: { type: generate, count: 0, interval: 1ms }
sinks:
  out: { type: file, inputs: [gen], path: %s.jsonl }
`, name), nil)
	}
	a, b := gen("a"), gen("b")
	ctx := context.Background()
	if _, err := rt.Apply(ctx, a); err != nil {
		t.Fatal(err)
	}
	// One cycle first, so that the baseline counts everything a cycle
	// leaves running by design.
	cycle := func() {
		t.Helper()
		for _, want := range [][]*config.Pipeline{append(slices.Clone(a), b...), a} {
			if _, err := rt.Apply(ctx, want); err != nil {
				t.Fatal(err)
			}
		}
	}
	cycle()
	baseline := runtime.NumGoroutine()
	const cycles = 20
	for range cycles {
		cycle()
	}
	waitFor(t, hangTimeout, fmt.Sprintf("the goroutines to return to %d after %d more cycles", baseline, cycles), func() bool {
		return runtime.NumGoroutine() <= baseline
	})
	select {
	case <-rt.Idle():
		t.Fatal("Idle is closed while pipeline a runs")
	default:
	}
	if err := rt.Stop(); err != nil {
		t.Fatal(err)
	}
	recvWithin(t, rt.Idle(), hangTimeout, "Idle to close after Stop")
}
