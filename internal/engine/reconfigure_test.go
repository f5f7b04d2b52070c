package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages/builtin"
)

// TestReconfigureLeavesNothingBehind reconfigures a running pipeline in
// place seven times while a writer appends to the file it follows:
// worker steps and concurrency, a sink added and later removed, a source
// option, a sink option, a worker and its sink added and removed,
// ordered on. After every swap the stage goroutines (source, worker and
// pool, sink, input forwarders, inotify readers) and the open files are
// exactly those of the new graph: replaced and removed stages leave no
// goroutine and no file descriptor behind. At the end every input record
// is in the output exactly once, the behaviour switches at cuts in input
// order, every added sink holds one contiguous run of records, and after
// Stop no stage goroutine is left (the package's goleak TestMain checks
// the whole test binary too).
//
// Not parallel: it counts the goroutines of the whole test binary.
func TestReconfigureLeavesNothingBehind(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.log")
	if err := os.WriteFile(in, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rt, logs := rcRuntime(t, dir, hangTimeout)
	ctx := context.Background()

	steps := []struct {
		what string
		spec rcSpec
		// the fate of the stages in the swap to this spec
		replaced, removed, added []string
	}{
		{what: "start", spec: rcSpec{v: 1, conc: 2}},
		{what: "worker steps and concurrency", spec: rcSpec{v: 2, conc: 3, eval: true},
			replaced: []string{"w"}},
		{what: "sink added", spec: rcSpec{v: 2, conc: 3, eval: true, copy: true},
			added: []string{"copy"}},
		{what: "source option", spec: rcSpec{v: 2, conc: 3, eval: true, copy: true, maxLine: "2MiB"},
			replaced: []string{"in"}},
		{what: "sink removed, sink option", spec: rcSpec{v: 2, conc: 3, eval: true, maxLine: "2MiB", outBuf: "64KiB"},
			replaced: []string{"out"}, removed: []string{"copy"}},
		{what: "worker and sink added", spec: rcSpec{v: 2, conc: 3, eval: true, maxLine: "2MiB", outBuf: "64KiB", side: true},
			added: []string{"side", "w2"}},
		{what: "worker and sink removed, ordered worker", spec: rcSpec{v: 7, conc: 2, ordered: true, maxLine: "2MiB", outBuf: "64KiB"},
			replaced: []string{"w"}, removed: []string{"side", "w2"}},
	}

	w := rcStartWriter(t, in)
	out := &rcTail{t: t, path: filepath.Join(dir, "out", "out.jsonl")}
	copyOut := &rcTail{t: t, path: filepath.Join(dir, "out", "copy.jsonl")}
	side := &rcTail{t: t, path: filepath.Join(dir, "out", "side.jsonl")}
	after := make([]int, len(steps)) // records written from here on are read by step i's graph
	var cfg *config.Pipeline
	for i, st := range steps {
		prev := cfg
		cfg = rcLoad(t, dir, rcConfig(st.spec))
		changes, err := rt.Apply(ctx, []*config.Pipeline{cfg})
		if err != nil {
			t.Fatalf("%s: Apply: %v", st.what, err)
		}
		after[i] = int(w.written.Load())
		want := ActionReconfigured
		if i == 0 {
			want = ActionStarted
		}
		if len(changes) != 1 || changes[0].Action != want {
			t.Fatalf("%s: Apply changes %+v, want one %q", st.what, changes, want)
		}
		if i > 0 {
			rcCheckSwap(t, st.what, logs, st.replaced, st.removed, st.added)
			// What `etld plan` would have shown is what the reload did.
			pl := PlanReload(prev, cfg)
			rcCheckSwap(t, st.what+": the plan", logs, slices.Sorted(slices.Values(ids(pl.Replace))),
				slices.Sorted(slices.Values(ids(pl.Remove))), slices.Sorted(slices.Values(ids(pl.Add))))
		}
		rcCheckResources(t, st.what, cfg, in, 1)
		// Records read by the new graph come out with its behaviour.
		waitFor(t, hangTimeout, st.what+": records read after the swap in out.jsonl", func() bool {
			return out.has(func(r rcRec) bool { return r.Seq >= after[i]+200 && r.V == st.spec.v })
		})
		if st.spec.copy {
			waitFor(t, hangTimeout, st.what+": records read after the swap in copy.jsonl", func() bool {
				return copyOut.has(func(r rcRec) bool { return r.Seq >= after[i]+200 })
			})
		}
		if st.spec.side {
			waitFor(t, hangTimeout, st.what+": records read after the swap in side.jsonl", func() bool {
				return side.has(func(r rcRec) bool { return r.Seq >= after[i]+200 && r.V == 6 })
			})
		}
	}

	total := w.halt()
	waitFor(t, hangTimeout, fmt.Sprintf("%d records in out.jsonl", total), func() bool { return len(out.poll()) >= total })
	if err := rt.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	rcCheckResources(t, "after Stop", nil, in, 0)

	// out.jsonl: every record once, versions moving forward at cuts.
	recs := out.final()
	rcCheckRun(t, "out.jsonl", recs, 0, total-1)
	if t.Failed() {
		t.FailNow()
	}
	slices.SortFunc(recs, func(a, b rcRec) int { return a.Seq - b.Seq })
	prev := 0
	for _, r := range recs {
		if r.V < prev {
			t.Fatalf("out.jsonl: seq %d has v %d after a record with v %d", r.Seq, r.V, prev)
		}
		prev = r.V
		if wantX := r.V == 2; (r.X != nil) != wantX || (wantX && *r.X != 2*r.Seq) {
			t.Fatalf("out.jsonl: seq %d (v %d): x = %v, want 2*seq only with v 2", r.Seq, r.V, r.X)
		}
	}
	for i, st := range steps {
		for _, r := range recs[after[i]:] {
			if r.V < st.spec.v {
				t.Fatalf("out.jsonl: seq %d has v %d, but it was written after the swap to v %d (%s, from seq %d)", r.Seq, r.V, st.spec.v, st.what, after[i])
			}
		}
	}
	// The added sinks: one contiguous run each, from their addition to
	// their removal.
	lo, hi := rcRange(copyOut.final())
	rcCheckRun(t, "copy.jsonl", copyOut.final(), lo, hi)
	if lo > after[2] || hi >= after[4] {
		t.Errorf("copy.jsonl holds seq %d to %d; want from at most %d (its addition) to below %d (its removal)", lo, hi, after[2], after[4])
	}
	lo, hi = rcRange(side.final())
	rcCheckRun(t, "side.jsonl", side.final(), lo, hi)
	if lo > after[5] || hi >= after[6] {
		t.Errorf("side.jsonl holds seq %d to %d; want from at most %d (its addition) to below %d (its removal)", lo, hi, after[5], after[6])
	}
	t.Logf("%d records; swaps after seq %v", total, after[1:])
}

// rcSpec describes one version of the test pipeline.
type rcSpec struct {
	v       int    // the value the worker sets
	conc    int    // its concurrency
	ordered bool   // ordered: true
	eval    bool   // an eval step: x = seq * 2
	copy    bool   // a second sink on w: copy.jsonl
	maxLine string // the source's max_line_bytes ("" = default)
	outBuf  string // out's buffer_size ("" = default)
	side    bool   // a worker w2 (sets v 6) and its sink side.jsonl
}

func rcConfig(s rcSpec) string {
	var b strings.Builder
	b.WriteString("version: 1\ncheckpoint_interval: 50ms\nsources:\n  in: { type: file, path: in.log, follow: true")
	if s.maxLine != "" {
		fmt.Fprintf(&b, ", max_line_bytes: %s", s.maxLine)
	}
	fmt.Fprintf(&b, " }\nworkers:\n  w:\n    inputs: [in]\n    concurrency: %d\n    ordered: %v\n    steps:\n      - parse_json: {}\n      - set: { v: %d }\n", s.conc, s.ordered, s.v)
	if s.eval {
		b.WriteString("      - eval: { x: 'seq * 2' }\n")
	}
	if s.side {
		b.WriteString("  w2:\n    inputs: [in]\n    concurrency: 1\n    steps:\n      - parse_json: {}\n      - set: { v: 6 }\n")
	}
	b.WriteString("sinks:\n  out: { type: file, inputs: [w], path: out/out.jsonl")
	if s.outBuf != "" {
		fmt.Fprintf(&b, ", buffer_size: %s", s.outBuf)
	}
	b.WriteString(" }\n")
	if s.copy {
		b.WriteString("  copy: { type: file, inputs: [w], path: out/copy.jsonl }\n")
	}
	if s.side {
		b.WriteString("  side: { type: file, inputs: [w2], path: out/side.jsonl }\n")
	}
	return b.String()
}

// rcLoad parses src as dir/p.yaml with the built-in stage types.
// rcRuntime starts a Runtime with its state in dir/state, logging to the
// returned rcLog, which the test prints if it fails.
func rcRuntime(t *testing.T, dir string, shutdown time.Duration) (*Runtime, *rcLog) {
	t.Helper()
	logs := &rcLog{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("runtime log:\n%s", logs.String())
		}
	})
	rt, err := New(Options{
		Logger:          zerolog.New(zerolog.SyncWriter(logs)).With().Timestamp().Logger(),
		StateDir:        filepath.Join(dir, "state"),
		ShutdownTimeout: shutdown,
	})
	if err != nil {
		t.Fatal(err)
	}
	return rt, logs
}

func rcLoad(t *testing.T, dir, src string) *config.Pipeline {
	t.Helper()
	p, diags := config.Parse(filepath.Join(dir, "p.yaml"), []byte(src), config.Options{
		Registry: builtin.Registry(), Env: func(string) (string, bool) { return "", false }})
	if diags.HasErrors() || p == nil {
		t.Fatalf("config:\n%s\n%v", src, diags)
	}
	return p
}

// rcCheckSwap checks the newest "pipeline reconfigured in place" log line
// against the stages expected to be replaced, removed and added.
func rcCheckSwap(t *testing.T, what string, logs *rcLog, replaced, removed, added []string) {
	t.Helper()
	var last map[string]any
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, `"message":"pipeline reconfigured in place"`) {
			last = nil
			_ = json.Unmarshal([]byte(line), &last)
		}
	}
	if last == nil {
		t.Fatalf("%s: no \"pipeline reconfigured in place\" log line", what)
	}
	for field, want := range map[string][]string{"replaced": replaced, "removed": removed, "added": added} {
		var got []string
		list, _ := last[field].([]any)
		for _, x := range list {
			got = append(got, fmt.Sprint(x))
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: %s %v, want %v", what, field, got, want)
		}
	}
}

// rcCheckResources waits until the stage goroutines and the open files
// of the test binary are exactly those of cfg (nil: none) plus writerFDs
// descriptors of the input held by the test's writer, and fails when
// they are not within the hang guard (goroutines of stages that went away
// return moments after the swap, so it polls).
func rcCheckResources(t *testing.T, what string, cfg *config.Pipeline, in string, writerFDs int) {
	t.Helper()
	want := rcExpected(cfg, in)
	if writerFDs > 0 {
		want["fd "+in] += writerFDs
	}
	got, stacks := rcResources(in)
	if maps.Equal(got, want) {
		t.Logf("%s: %v", what, got)
		return
	}
	deadline := time.NewTimer(hangTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if got, stacks = rcResources(in); maps.Equal(got, want) {
				t.Logf("%s: %v", what, got)
				return
			}
		case <-deadline.C:
			t.Fatalf("%s: goroutines and files %v, want %v\n%s", what, got, want, stacks)
		}
	}
}

// rcFrames maps a frame (a function name followed by "(") to what a
// goroutine running it is.
var rcFrames = []struct{ frame, what string }{
	{"internal/engine.(*pipeline).launchSource.func1(", "source"},
	{"internal/engine.(*pipeline).launchWorker.func1(", "worker"},
	{"internal/engine.(*workerRunner).runUnordered.func1(", "worker pool"},
	{"internal/engine.(*workerRunner).runOrdered.func1(", "worker pool"},
	{"internal/engine.(*workerRunner).runOrdered.func2(", "ordered emitter"},
	{"internal/engine.(*pipeline).launchSink.func1(", "sink"},
	{"internal/engine.(*aligner).forward(", "input forwarder"},
	{"fsnotify.(*inotify).readEvents(", "inotify reader"},
	{"internal/fswatch.(*paced).read(", "inotify reader"},
}

// rcExpected is what rcResources must find while cfg runs.
func rcExpected(cfg *config.Pipeline, in string) map[string]int {
	m := map[string]int{}
	if cfg == nil {
		return m
	}
	for _, st := range cfg.Stages {
		switch st.Kind {
		case config.Source:
			m["source"]++
			m["inotify reader"]++ // every source is a followed file
			m["fd "+in]++
		case config.Worker:
			m["worker"]++
			m["worker pool"] += st.Worker.Concurrency
			if st.Worker.Ordered {
				m["ordered emitter"]++
			}
			m["input forwarder"] += len(st.Inputs)
		case config.Sink:
			m["sink"]++
			m["input forwarder"] += len(st.Inputs)
			m["fd "+filepath.Base(st.Config.(interface{ OutputPath() string }).OutputPath())]++
		}
	}
	m["fd anon_inode:inotify"] = m["inotify reader"]
	return m
}

// rcResources counts the stage goroutines of the test binary by their
// frames, and its open files: the input, the outputs (by base name) and
// inotify instances. It returns the goroutine dump for a failure message.
func rcResources(in string) (map[string]int, string) {
	m := map[string]int{}
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var ours []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, f := range rcFrames {
			if strings.Contains(g, f.frame) {
				m[f.what]++
				ours = append(ours, g)
				break
			}
		}
	}
	fds, _ := os.ReadDir("/proc/self/fd")
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		switch {
		case err != nil:
		case target == in:
			m["fd "+in]++
		case target == "anon_inode:inotify":
			m["fd anon_inode:inotify"]++
		case strings.HasSuffix(target, ".jsonl"):
			m["fd "+filepath.Base(target)]++
		}
	}
	if len(fds) == 0 { // no /proc: compare goroutines only
		for k := range m {
			if strings.HasPrefix(k, "fd ") {
				delete(m, k)
			}
		}
	}
	return m, strings.Join(ours, "\n\n")
}

// ---------------------------------------------------------------------
// The writer and the outputs.

// rcWriter appends {"seq":N,...} lines to a file at a steady rate.
type rcWriter struct {
	written atomic.Int64
	stop    chan struct{}
	done    chan struct{}
	err     error
}

func rcStartWriter(t *testing.T, path string) *rcWriter {
	t.Helper()
	return rcStartWriterOf(t, path, func(b []byte, seq int) []byte {
		return fmt.Appendf(b, `{"seq":%d,"msg":"record %d, padded to look like a log line"}`+"\n", seq, seq)
	})
}

// rcStartWriterOf starts a writer that appends line(b, seq) for seq 0, 1,
// ..., five lines every 2ms (2500 records/s).
func rcStartWriterOf(t *testing.T, path string, line func(b []byte, seq int) []byte) *rcWriter {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	w := &rcWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer f.Close()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var b []byte
		seq := 0
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			b = b[:0]
			for range 5 {
				b = line(b, seq)
				seq++
			}
			if _, err := f.Write(b); err != nil {
				w.err = err
				return
			}
			w.written.Store(int64(seq))
		}
	}()
	t.Cleanup(func() { w.halt() })
	return w
}

// halt stops the writer and returns how many records it wrote.
func (w *rcWriter) halt() int {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	return int(w.written.Load())
}

// rcRec is an output record.
type rcRec struct {
	Seq int  `json:"seq"`
	V   int  `json:"v"`
	X   *int `json:"x"`
}

// rcTail parses an output file's complete lines as it grows.
type rcTail struct {
	t    *testing.T
	path string
	off  int64
	part []byte
	recs []rcRec
}

func (o *rcTail) poll() []rcRec {
	f, err := os.Open(o.path)
	if err != nil {
		return o.recs
	}
	defer f.Close()
	data, err := io.ReadAll(io.NewSectionReader(f, o.off, 1<<40))
	if err != nil {
		o.t.Errorf("read %s: %v", o.path, err)
	}
	o.off += int64(len(data))
	data = append(o.part, data...)
	i := bytes.LastIndexByte(data, '\n')
	if i < 0 {
		o.part = data
		return o.recs
	}
	o.part = bytes.Clone(data[i+1:])
	for line := range bytes.Lines(data[:i+1]) {
		var r rcRec
		if err := json.Unmarshal(line, &r); err != nil {
			o.t.Errorf("%s: bad line %q: %v", filepath.Base(o.path), line, err)
			continue
		}
		o.recs = append(o.recs, r)
	}
	return o.recs
}

func (o *rcTail) has(cond func(rcRec) bool) bool { return slices.ContainsFunc(o.poll(), cond) }

// final returns every record once the writer (etld) is done: the file
// must end with a newline.
func (o *rcTail) final() []rcRec {
	recs := slices.Clone(o.poll())
	if len(o.part) > 0 {
		o.t.Errorf("%s ends with a partial line %q", filepath.Base(o.path), o.part)
	}
	return recs
}

// rcRange is the lowest and highest seq of recs (0, -1 when empty).
func rcRange(recs []rcRec) (int, int) {
	if len(recs) == 0 {
		return 0, -1
	}
	lo, hi := recs[0].Seq, recs[0].Seq
	for _, r := range recs {
		lo, hi = min(lo, r.Seq), max(hi, r.Seq)
	}
	return lo, hi
}

// rcCheckRun checks that recs hold seq lo..hi, each exactly once.
func rcCheckRun(t *testing.T, what string, recs []rcRec, lo, hi int) {
	t.Helper()
	if hi < lo {
		t.Errorf("%s: no records", what)
		return
	}
	seen := make([]int, hi-lo+1)
	extra := 0
	for _, r := range recs {
		if r.Seq < lo || r.Seq > hi {
			extra++
			continue
		}
		seen[r.Seq-lo]++
	}
	var lost, dup []string
	for i, c := range seen {
		switch {
		case c == 0:
			lost = append(lost, strconv.Itoa(lo+i))
		case c > 1:
			dup = append(dup, fmt.Sprintf("%d x%d", lo+i, c))
		}
	}
	if len(lost) > 0 || len(dup) > 0 || extra > 0 {
		t.Errorf("%s: want seq %d to %d once each: lost %d %v, duplicated %d %v, unexpected %d",
			what, lo, hi, len(lost), lost[:min(8, len(lost))], len(dup), dup[:min(8, len(dup))], extra)
	}
}

// rcLog collects the runtime's log lines.
type rcLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *rcLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *rcLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestReconfigureDeadLetterSinkReplaced changes an option of the
// dead-letter sink (dead_letter itself stays the same) under load: the
// sink is replaced in place like any other stage, and every record
// reaches out.jsonl or rejects.jsonl exactly once. Bad records come only
// before the reload, so that a regression shows as a failed reload
// rather than a panic of the test binary (TestReloadDeadLetterSink in e2e
// has them flowing throughout).
//
// A regression test: reconfigure set a kept emitter's new dead-letter
// edge before removing the old one, and removeOut then found neither, so
// the old dead-letter sink never stopped, the swap gave up after the
// shutdown timeout and the pipeline ended up stopped.
func TestReconfigureDeadLetterSinkReplaced(t *testing.T) {
	const badBefore = 1000 // seq 99, 199, ..., 999 are bad records
	dir := t.TempDir()
	in := filepath.Join(dir, "in.log")
	if err := os.WriteFile(in, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rt, logs := rcRuntime(t, dir, 2*time.Second) // bounds the reload's drain and a failure's restart
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = rt.Stop()
		}
	})
	cfgOf := func(buf string) string {
		return `version: 1
checkpoint_interval: 50ms
dead_letter: rejects
sources:
  in: { type: file, path: in.log, follow: true }
workers:
  w:
    inputs: [in]
    concurrency: 2
    steps:
      - parse_json: {}
sinks:
  out: { type: file, inputs: [w], path: out/out.jsonl }
  rejects: { type: file, path: out/rejects.jsonl, buffer_size: ` + buf + ` }
`
	}
	w := rcStartWriterBad(t, in, badBefore)
	if _, err := rt.Apply(context.Background(), []*config.Pipeline{rcLoad(t, dir, cfgOf("64KiB"))}); err != nil {
		t.Fatal(err)
	}
	rejects := filepath.Join(dir, "out", "rejects.jsonl")
	waitFor(t, hangTimeout, "every bad record in rejects.jsonl", func() bool { return countLines(rejects) >= badBefore/100 })

	start := time.Now()
	changes, err := rt.Apply(context.Background(), []*config.Pipeline{rcLoad(t, dir, cfgOf("128KiB"))})
	if err != nil || len(changes) != 1 || changes[0].Action != "reconfigured" {
		t.Fatalf("Apply with the dead-letter sink's buffer_size changed: %+v, %v (after %v); want reconfigured in place",
			changes, err, time.Since(start).Round(time.Millisecond))
	}
	rcCheckSwap(t, "dead-letter sink option", logs, []string{"rejects"}, nil, nil)
	out := &rcTail{t: t, path: filepath.Join(dir, "out", "out.jsonl")}
	after := int(w.written.Load())
	waitFor(t, hangTimeout, "records read after the reload in out.jsonl", func() bool {
		return out.has(func(r rcRec) bool { return r.Seq >= after+200 })
	})
	total := w.halt()
	waitFor(t, hangTimeout, "every good record in out.jsonl", func() bool { return len(out.poll()) >= total-badBefore/100 })
	stopped = true
	if err := rt.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	good := out.final()
	for _, line := range readLines(t, rejects) {
		var dl struct {
			Record string `json:"record"`
		}
		if err := json.Unmarshal([]byte(line), &dl); err != nil {
			t.Fatalf("rejects.jsonl: %q: %v", line, err)
		}
		seq, err := strconv.Atoi(strings.TrimPrefix(dl.Record, "bad "))
		if err != nil {
			t.Fatalf("rejects.jsonl: record %q", dl.Record)
		}
		good = append(good, rcRec{Seq: seq})
	}
	rcCheckRun(t, "out.jsonl and rejects.jsonl", good, 0, total-1)
}

// TestReconfigureOpenFailureLosesNothing: a reconfiguration whose new
// sink cannot open (its path is under a regular file) is rolled back:
// the previous config runs again from the checkpoint, and no record is
// lost or written twice. Five such reloads in a row, under load.
//
// A regression test: reconfigure used to wake the kept sources before the
// new stages opened; what they read then went into edges towards the new
// stages, which the failure abandoned (closing them under the senders:
// a data race, or a "send on closed channel" panic), while the graceful
// stop that followed committed the sources' positions past those records.
func TestReconfigureOpenFailureLosesNothing(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.log")
	if err := os.WriteFile(in, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "blocker"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rt, _ := rcRuntime(t, dir, hangTimeout)
	cfgOf := func(path string) *config.Pipeline {
		return rcLoad(t, dir, `version: 1
checkpoint_interval: 50ms
sources:
  in: { type: file, path: in.log, follow: true }
workers:
  w:
    inputs: [in]
    concurrency: 2
    steps:
      - parse_json: {}
sinks:
  out: { type: file, inputs: [w], path: `+path+` }
`)
	}
	w := rcStartWriter(t, in)
	if _, err := rt.Apply(context.Background(), []*config.Pipeline{cfgOf("out/out.jsonl")}); err != nil {
		t.Fatal(err)
	}
	out := &rcTail{t: t, path: filepath.Join(dir, "out", "out.jsonl")}
	for i := range 5 {
		after := int(w.written.Load())
		waitFor(t, hangTimeout, "records in out.jsonl", func() bool { return out.has(func(r rcRec) bool { return r.Seq >= after+100 }) })
		changes, err := rt.Apply(context.Background(), []*config.Pipeline{cfgOf("blocker/out.jsonl")})
		if err == nil || len(changes) != 1 || changes[0].Action != "failed" {
			t.Fatalf("reload %d to an output under a regular file: %+v, %v; want failed (rolled back)", i+1, changes, err)
		}
	}
	after := int(w.written.Load())
	waitFor(t, hangTimeout, "records after the failed reloads", func() bool { return out.has(func(r rcRec) bool { return r.Seq >= after+100 }) })
	total := w.halt()
	// Once the source has read everything, Stop writes it out.
	waitFor(t, hangTimeout, "the source has read every record", func() bool {
		return rcSourceRead(rt, "p", "in") >= total
	})
	if err := rt.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	rcCheckRun(t, "out.jsonl", out.final(), 0, total-1)
}

// rcSourceRead is how many records source id of pipeline name has read
// (emitted), from the runtime's status.
func rcSourceRead(rt *Runtime, name, id string) int {
	for _, p := range rt.Status() {
		if p.Name != name {
			continue
		}
		for _, st := range p.Stages {
			if st.ID == id {
				return int(st.Out)
			}
		}
	}
	return -1
}

// rcStartWriterBad is rcStartWriter with the lines of seq 99, 199, ...
// below badBefore written as "bad N" (not JSON: bad records for the
// dead-letter sink).
func rcStartWriterBad(t *testing.T, path string, badBefore int) *rcWriter {
	t.Helper()
	return rcStartWriterOf(t, path, func(b []byte, seq int) []byte {
		if seq%100 == 99 && seq < badBefore {
			return fmt.Appendf(b, "bad %d\n", seq)
		}
		return fmt.Appendf(b, `{"seq":%d}`+"\n", seq)
	})
}
