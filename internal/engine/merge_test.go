package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/state"
)

func TestOrderKey(t *testing.T) {
	for _, tt := range []struct {
		rec  string
		want int64
		err  string
	}{
		{`{"ts":"1970-01-01T00:00:01Z"}`, 1e9, ""},
		{`{"ts":"1970-01-01T00:00:01.5+00:00"}`, 1.5e9, ""},
		{`{"ts":"1970-01-01T01:00:00+01:00"}`, 0, ""},
		{`{"ts":"2026-11-27T10:00:00.123456789Z"}`, time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC).UnixNano(), ""},
		{`{"a":1,"ts":"1970-01-01T00:00:0\u0032Z"}`, 2e9, ""},
		{`{"ts":1}`, 1e9, ""},
		{`{"ts":1764237600.123456789}`, 1764237600123456789, ""},
		{`{"ts":1.5}`, 1.5e9, ""},
		{`{"ts":1.1234567891}`, 1123456789, ""}, // beyond ns: truncated
		{`{"ts":-1.5}`, -1.5e9, ""},
		{`{"ts":1.5e3}`, 1500e9, ""},
		{`{"ts":0}`, 0, ""},
		{`{"t":1}`, 0, "missing"},
		{`{"ts":"yesterday"}`, 0, "not an RFC 3339 time"},
		{`{"ts":"2026-11-27"}`, 0, "not an RFC 3339 time"},
		{`{"ts":true}`, 0, "neither"},
		{`{"ts":null}`, 0, "neither"},
		{`{"ts":99999999999}`, 0, "in range"},
		{`{"ts":"3000-01-01T00:00:00Z"}`, 0, "out of range"},
		{`not json`, 0, "not a JSON object"},
	} {
		got, err := orderKey([]byte(tt.rec), "ts")
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%s: %v", tt.rec, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: error %v, want one with %q", tt.rec, err, tt.err)
		case tt.err == "" && got != tt.want:
			t.Errorf("%s: %d, want %d", tt.rec, got, tt.want)
		}
	}
}

// mergeRig is a merger over a board with hand-driven gates.
type mergeRig struct {
	t     *testing.T
	board *feedBoard
	mg    *merger
	gates map[string]*sourceGate
	now   time.Time
}

func newMergeRig(t *testing.T, spec config.MergeSpec, sources ...string) *mergeRig {
	r := &mergeRig{t: t, board: newFeedBoard(), gates: map[string]*sourceGate{}, now: time.Unix(1000, 0)}
	r.mg = newMerger(spec, r.board, sources, NewMetrics(), "p", "sink")
	return r
}

// source registers a source's feeds (finite or live).
func (r *mergeRig) source(id string, finite bool, paths ...string) *sourceGate {
	g := r.board.gate(id, finite)
	r.gates[id] = g
	for _, p := range paths {
		g.Register(p)
	}
	return g
}

// send delivers a batch of feed source/path with the given keys (Unix
// seconds) and tags, as a gated source would.
func (r *mergeRig) send(source, path string, keys ...int) {
	b := &stages.Batch{}
	o := &stages.Origin{Source: source, Path: path}
	for _, k := range keys {
		b.Records = append(b.Records, stages.Record{Raw: fmt.Appendf(nil, `{"ts":%d,"f":"%s%s"}`, k, source, path), Parsed: true, Origin: o})
	}
	if bad := r.mg.add(msg{b: b, t: r.gates[source].take(path, b)}, r.now, nil); len(bad) > 0 {
		r.t.Fatalf("bad records: %v", bad[0].Err)
	}
	r.mg.releaseDone()
}

// take runs one merge step at the rig's time and returns what it wrote,
// as "key/feed" strings, and when to look again.
func (r *mergeRig) take(final bool) ([]string, time.Time) {
	wake := r.mg.take(r.now, final, 1<<20)
	var out []string
	for _, rec := range r.mg.out {
		var v struct {
			TS int
			F  string
		}
		if err := json.Unmarshal(rec.Raw, &v); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d/%s", v.TS, v.F))
	}
	r.mg.out = r.mg.out[:0]
	r.mg.rejects = r.mg.rejects[:0]
	r.mg.releaseDone()
	return out, wake
}

func (r *mergeRig) expect(final bool, want ...string) time.Time {
	r.t.Helper()
	got, wake := r.take(final)
	if !slices.Equal(got, want) {
		r.t.Fatalf("wrote %q, want %q", got, want)
	}
	return wake
}

func spec(mod func(*config.MergeSpec)) config.MergeSpec {
	s := config.MergeSpec{OrderBy: "ts", MaxLateness: time.Second, IdleTimeout: 30 * time.Second, Late: "emit"}
	if mod != nil {
		mod(&s)
	}
	return s
}

// TestMergerFiniteFeedsHold: a finite feed holds the merge until it has
// shown a later record or ended, whatever max_lateness says.
func TestMergerFiniteFeedsHold(t *testing.T) {
	r := newMergeRig(t, spec(nil), "s")
	g := r.source("s", true, "a", "b")
	r.send("s", "a", 1, 3, 5)
	r.expect(false) // b sent nothing yet
	r.now = r.now.Add(time.Hour)
	r.expect(false) // still: finite feeds hold regardless of time
	r.send("s", "b", 2, 4)
	r.expect(false, "1/sa", "2/sb", "3/sa", "4/sb") // 5 waits for b's next
	g.End("b")
	r.expect(false, "5/sa")
	g.End("a")
	r.expect(false)
	if r.mg.buffered != 0 || len(r.mg.feeds) != 0 {
		t.Errorf("buffered %d, feeds %d after both ended", r.mg.buffered, len(r.mg.feeds))
	}
}

// TestMergerTies: equal keys go in feed order (sources in file order,
// then path), then input order.
func TestMergerTies(t *testing.T) {
	r := newMergeRig(t, spec(nil), "second", "first") // file order
	r.source("first", true, "z")
	r.source("second", true, "a", "b")
	r.send("second", "b", 1, 1)
	r.send("second", "a", 1, 2)
	r.send("first", "z", 1, 2)
	for _, g := range r.gates {
		for _, p := range []string{"a", "b", "z"} {
			g.End(p)
		}
	}
	r.expect(false, "1/seconda", "1/secondb", "1/secondb", "1/firstz", "2/seconda", "2/firstz")
}

// TestMergerLiveLateness: a record waiting only for live feeds is written
// after max_lateness; a silent live feed stops holding after idle_timeout;
// a record older than one written is late, handled per policy.
func TestMergerLiveLateness(t *testing.T) {
	for _, policy := range []string{"emit", "drop", "dead_letter"} {
		t.Run(policy, func(t *testing.T) {
			r := newMergeRig(t, spec(func(s *config.MergeSpec) { s.Late = policy; s.IdleTimeout = 10 * time.Second }), "s")
			r.source("s", false, "a", "b")
			r.send("s", "a", 10)
			wake := r.expect(false)
			if want := r.now.Add(time.Second); !wake.Equal(want) {
				t.Fatalf("wake at %v, want %v (max_lateness)", wake, want)
			}
			r.now = wake
			r.expect(false, "10/sa")
			r.send("s", "b", 5, 12) // 5 is late
			r.send("s", "a", 11)
			late := r.mg.feeds[feedKey{"s", "b"}].late
			switch policy {
			case "emit":
				r.expect(false, "5/sb", "11/sa")
			default:
				r.expect(false, "11/sa")
			}
			checkCounter(t, "late", late, 1)
			// a is silent now: 12 waits for it until a is idle (10s after
			// its last record) or max_lateness, whichever comes first.
			r.mg.spec.MaxLateness = time.Minute
			wake = r.expect(false)
			if want := r.now.Add(10 * time.Second); !wake.Equal(want) {
				t.Fatalf("wake at %v, want %v (idle_timeout)", wake, want)
			}
			r.now = wake
			r.expect(false, "12/sb")
		})
	}
}

// TestMergerStateRoundTrip: the queued records and the newest key written
// survive a checkpoint; after a restore, order continues.
func TestMergerStateRoundTrip(t *testing.T) {
	r := newMergeRig(t, spec(nil), "s")
	r.source("s", true, "a", "b")
	r.send("s", "a", 1, 4, 6)
	r.send("s", "b", 2)
	r.expect(false, "1/sa", "2/sb")
	st, err := r.mg.state()
	if err != nil {
		t.Fatal(err)
	}

	r2 := newMergeRig(t, spec(nil), "s")
	g := r2.source("s", true, "a", "b")
	if bad, err := r2.mg.restore(st, r2.now); err != nil || len(bad) > 0 {
		t.Fatalf("restore: %v %v", bad, err)
	}
	r2.send("s", "b", 3, 5) // b resumes after what it sent before
	g.End("a")
	g.End("b")
	r2.expect(false, "3/sb", "4/sa", "5/sb", "6/sa")

	// The newest key written is restored: an older record is late.
	r3 := newMergeRig(t, spec(nil), "s")
	r3.source("s", true, "c")
	if _, err := r3.mg.restore(st, r3.now); err != nil {
		t.Fatal(err)
	}
	r3.gates["s"].End("a")
	r3.gates["s"].End("b")
	r3.expect(true, "4/sa", "6/sa")
	r3.send("s", "c", 1)
	r3.expect(true, "1/sc")
	checkCounter(t, "late after restore", r3.mg.feeds[feedKey{"s", "c"}].late, 1)
}

// TestMergePipelineSortedAndBounded runs a pipeline: three finite files,
// each sorted, merged into one sorted file; the feed read first is far
// ahead of the others, and the merge holds a bounded number of records.
func TestMergePipelineSortedAndBounded(t *testing.T) {
	dir := t.TempDir()
	rnd := rand.New(rand.NewPCG(1, 2))
	var want []string
	const perFeed = 20000
	for f := range 3 {
		var sb strings.Builder
		ts := int64(0)
		if f == 0 {
			ts = 1e9 // every record of feed 0 comes after all the others
		}
		for i := range perFeed {
			ts += int64(rnd.IntN(3))
			line := fmt.Sprintf(`{"ts":%d,"feed":%d,"seq":%d}`, ts, f, i)
			sb.WriteString(line + "\n")
			want = append(want, line)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("feed-%d.jsonl", f)), []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	slices.SortStableFunc(want, func(a, b string) int {
		var x, y struct{ TS, Feed, Seq int64 }
		_ = json.Unmarshal([]byte(a), &x)
		_ = json.Unmarshal([]byte(b), &y)
		if x.TS != y.TS {
			return int(x.TS - y.TS)
		}
		if x.Feed != y.Feed {
			return int(x.Feed - y.Feed)
		}
		return int(x.Seq - y.Seq)
	})
	pipes := loadPipeline(t, dir, "m", `version: 1
sources:
  feeds: { type: file, path: "feed-*.jsonl", follow: false }
workers:
  parse:
    inputs: [feeds]
    concurrency: 3
    ordered: true
    steps: [ parse_json: {} ]
sinks:
  out:
    type: file
    inputs: [parse]
    path: out.jsonl
    merge: { order_by: ts }
`, nil)
	mx := NewMetrics()
	rt, err := New(Options{Logger: nopLogger(), Metrics: mx})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Apply(context.Background(), pipes); err != nil {
		t.Fatal(err)
	}
	rt.mu.Lock()
	mg := rt.pipes["m"].sinkList()[0].merge
	rt.mu.Unlock()
	<-rt.Idle()
	var ms *MergeStatus
	for _, s := range rt.Status()[0].Stages {
		if s.ID == "out" {
			ms = s.Merge
		}
	}
	if err := rt.Stop(); err != nil {
		t.Fatal(err)
	}
	if ms == nil || ms.OrderBy != "ts" || ms.Buffered != 0 || ms.Newest == "" {
		t.Errorf("merge status after the end = %+v, want order_by ts, nothing buffered, a newest key", ms)
	}
	got := readLines(t, filepath.Join(dir, "out.jsonl"))
	if !slices.Equal(got, want) {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("line %d: %s, want %s (%d lines, want %d)", i, got[i], want[i], len(got), len(want))
			}
		}
		t.Fatalf("%d lines, want %d", len(got), len(want))
	}
	// Bound: per feed, the credit plus one batch (at most 1024 records)
	// that went past it.
	if bound := 3 * (feedCreditRecords + 1024); mg.peak > bound {
		t.Errorf("the merge held %d records at once, above the bound %d", mg.peak, bound)
	}
	if mg.peak == 0 {
		t.Errorf("peak not tracked")
	}
}

// TestMergePipelineUngatedSource: a source without files (generate) is one
// feed, held back by the runtime when it runs out of credit, and merged
// with a file feed exactly.
func TestMergePipelineUngatedSource(t *testing.T) {
	dir := t.TempDir()
	const n = 30000
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, `{"ts":%d.5,"src":"file","seq":%d}`+"\n", i, i)
	}
	if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	pipes := loadPipeline(t, dir, "m", fmt.Sprintf(`version: 1
sources:
  gen: { type: generate, count: %d, message: '{"ts":{{seq}},"src":"gen","seq":{{seq}}}' }
  file: { type: file, path: in.jsonl, follow: false }
workers:
  parse:
    inputs: [gen, file]
    concurrency: 2
    ordered: true
    steps: [ parse_json: {} ]
sinks:
  out:
    type: file
    inputs: [parse]
    path: out.jsonl
    merge: { order_by: ts }
`, n), nil)
	mx := NewMetrics()
	if err := Run(context.Background(), pipes, Options{Logger: nopLogger(), Metrics: mx}); err != nil {
		t.Fatal(err)
	}
	got := readLines(t, filepath.Join(dir, "out.jsonl"))
	if len(got) != 2*n {
		t.Fatalf("%d lines, want %d", len(got), 2*n)
	}
	for i, l := range got {
		src := "gen"
		if i%2 == 1 {
			src = "file"
		}
		var v struct {
			Src string
			Seq int
		}
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.Src != src || v.Seq != i/2 {
			t.Fatalf("line %d = %s, want %s seq %d", i, l, src, i/2)
		}
	}
}

// TestReconfigureMergeKeepsBuffer: changing max_lateness replaces the
// merging sink; the new one takes the old one's buffer over, so records
// that were waiting for a slower feed keep waiting and nothing is written
// out of order or lost. The records of a.log are queued before the
// reload and b.log's, all interleaved with them, come after it.
func TestReconfigureMergeKeepsBuffer(t *testing.T) {
	dir := t.TempDir()
	rt, mx, cfg := startMergeReload(t, dir, "50ms")
	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	ctx := context.Background()
	if _, err := rt.Apply(ctx, []*config.Pipeline{cfg("1h")}); err != nil {
		t.Fatal(err)
	}
	const n = 500
	var sa, sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sa, `{"ts":%d,"f":"a"}`+"\n", 2*i+1)
		fmt.Fprintf(&sb, `{"ts":%d,"f":"b"}`+"\n", 2*i)
	}
	appendTo(t, a, sa.String())
	buffered := mx.mergeBuffered.WithLabelValues("p", "out")
	waitFor(t, hangTimeout, "a.log queued by the merge", func() bool { return metricValue(t, buffered) == n })

	ch, err := rt.Apply(ctx, []*config.Pipeline{cfg("2h")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ch) != 1 || !strings.Contains(fmt.Sprint(ch[0]), "out") {
		t.Logf("changes: %+v", ch)
	}
	if got := metricValue(t, buffered); got != n {
		t.Fatalf("after the reload the merge holds %v records, want %d (handed over)", got, n)
	}
	appendTo(t, b, sb.String())
	waitFor(t, hangTimeout, "b.log merged", func() bool { return countLines(filepath.Join(dir, "out.jsonl")) >= 2*n-1 })
	if err := rt.Stop(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, filepath.Join(dir, "out.jsonl"))
	if len(lines) != 2*n {
		t.Fatalf("%d lines, want %d", len(lines), 2*n)
	}
	for i, l := range lines {
		var v struct{ TS int }
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.TS != i {
			t.Fatalf("line %d = %s, want ts %d", i, l, i)
		}
	}
}

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// TestReconfigureSourceStartsFeedingMerge: a source whose own config is
// unchanged but which feeds a merge after a reload is replaced, so that
// it gets its flow control (and resumes at its position: nothing lost or
// read twice).
func TestReconfigureSourceStartsFeedingMerge(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.log")
	var sb strings.Builder
	for i := range 100 {
		fmt.Fprintf(&sb, `{"ts":%d}`+"\n", i)
	}
	if err := os.WriteFile(in, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := func(merge string) string {
		return `version: 1
sources:
  in: { type: file, path: in.log }
workers:
  w: { inputs: [in], ordered: true, steps: [ parse_json: {} ] }
sinks:
  out: { type: file, inputs: [w], path: out.jsonl` + merge + ` }
`
	}
	rt, err := New(Options{Logger: nopLogger(), StateDir: filepath.Join(dir, "state"), ShutdownTimeout: hangTimeout})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := rt.Apply(ctx, []*config.Pipeline{rcLoad(t, dir, cfg(""))}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.jsonl")
	waitFor(t, hangTimeout, "the first 100 records", func() bool { return countLines(out) == 100 })
	gate := func() *sourceGate {
		rt.mu.Lock()
		defer rt.mu.Unlock()
		return rt.pipes["p"].sourceList()[0].gate
	}
	if gate() != nil {
		t.Fatal("a source feeding no merge has a gate")
	}
	if _, err := rt.Apply(ctx, []*config.Pipeline{rcLoad(t, dir, cfg(", merge: { order_by: ts }"))}); err != nil {
		t.Fatal(err)
	}
	if gate() == nil {
		t.Fatal("the source now feeds a merge but was kept without flow control")
	}
	appendTo(t, in, `{"ts":100}`+"\n")
	waitFor(t, hangTimeout, "the record appended after the reload", func() bool { return countLines(out) >= 101 })
	if err := rt.Stop(); err != nil {
		t.Fatal(err)
	}
	lines := readLines(t, out)
	if len(lines) != 101 || lines[100] != `{"ts":100}` {
		t.Fatalf("%d lines, last %q; want 101 ending with ts 100", len(lines), lines[len(lines)-1])
	}
}

// TestFeedCreditCountsRecords: a feed's room is counted in records and
// bytes, so a live feed read a few lines at a time is not held back after
// a handful of batches; releasing a batch gives its room back.
func TestFeedCreditCountsRecords(t *testing.T) {
	g := newFeedBoard().gate("s", false)
	g.Register("f")
	small := &stages.Batch{Records: []stages.Record{{Raw: []byte(`{}`)}}}
	var tickets []*ticket
	for g.Allow("f") {
		tickets = append(tickets, g.take("f", small))
	}
	if len(tickets) != feedCreditRecords {
		t.Fatalf("room for %d one-record batches, want %d", len(tickets), feedCreditRecords)
	}
	msg{b: &stages.Batch{}, t: tickets[0]}.release()
	if !g.Allow("f") {
		t.Fatal("no room after a batch was released")
	}
	big := &stages.Batch{Records: []stages.Record{{Raw: make([]byte, feedCreditBytes)}}}
	g2 := newFeedBoard().gate("s", false)
	g2.take("f", big)
	if g2.Allow("f") {
		t.Fatal("room after a batch of feedCreditBytes bytes")
	}
}

// TestReconfigureMergeQuiescent: while a reload swaps stages, a merge
// writes nothing, even when max_lateness passes meanwhile. Otherwise the
// checkpoint committed by the reload would pair the merge buffer of the
// pause barrier with an output that already holds some of it, and a
// crash right after would write those records twice.
//
// It runs in a synctest bubble with fake sources (a file source waits on
// inotify, which the bubble's clock cannot see past): the records are
// queued at bubble time 0 and the reload pauses at once, so they are
// surely still queued at the pause barrier; the reload then holds the
// graph quiescent for a second of bubble time, past the 300ms after which
// the merge would write them.
func TestReconfigureMergeQuiescent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		name := strings.ReplaceAll(t.Name(), "/", "_")
		const n = 200
		a, b := newFakeSource(1), newFakeSource(1)
		addFake(t, name+"-a", a)
		addFake(t, name+"-b", b)
		cfg := func(lateness string) *config.Pipeline {
			return loadPipeline(t, dir, "p", fmt.Sprintf(`version: 1
checkpoint_interval: 1h
sources:
  a: { type: fake, name: %[1]s-a }
  b: { type: fake, name: %[1]s-b }
workers:
  w: { inputs: [a, b], ordered: true, concurrency: 2, steps: [ parse_json: {} ] }
sinks:
  out:
    type: file
    inputs: [w]
    path: out.jsonl
    merge: { order_by: ts, max_lateness: %[2]s, idle_timeout: 1h }
`, name, lateness), nil)[0]
		}
		mx := NewMetrics()
		rt, err := New(Options{Logger: nopLogger(), Metrics: mx, StateDir: filepath.Join(dir, "state"), ShutdownTimeout: hangTimeout,
			onQuiesced: func() { time.Sleep(time.Second) }}) // a slow swap, on synctest's clock
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if _, err := rt.Apply(ctx, []*config.Pipeline{cfg("300ms")}); err != nil {
			t.Fatal(err)
		}
		batch := &stages.Batch{}
		for i := range n {
			batch.Records = append(batch.Records, stages.Record{Raw: fmt.Appendf(nil, `{"ts":%d}`, 1000+i)})
		}
		a.feed <- batch
		synctest.Wait() // b is silent: a's records wait in the merge for 300ms
		if q := metricValue(t, mx.mergeBuffered.WithLabelValues("p", "out")); q != n {
			t.Fatalf("%v records queued by the merge, want %d", q, n)
		}
		if _, err := rt.Apply(ctx, []*config.Pipeline{cfg("400ms")}); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(dir, "state", "p.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := rt.Stop(); err != nil {
			t.Fatal(err)
		}
		var cp struct {
			Sinks map[string]struct{ Size int64 }
			Merge map[string]mergeState
		}
		if err := json.Unmarshal(raw, &cp); err != nil {
			t.Fatal(err)
		}
		out, err := os.ReadFile(filepath.Join(dir, "out.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(string(out), "\n"); got != n {
			t.Errorf("%d lines written by the end, want %d", got, n)
		}
		written := strings.Count(string(out[:cp.Sinks["out"].Size]), "\n")
		queued := 0
		for _, f := range cp.Merge["out"].Feeds {
			queued += len(f.Records)
		}
		if written+queued != n {
			t.Fatalf("the reload's checkpoint: %d lines written + %d queued = %d, want %d", written, queued, written+queued, n)
		}
		if queued != n {
			t.Errorf("%d records queued in the reload's checkpoint, want all %d (nothing written while quiescent)", queued, n)
		}
	})
}

// TestOrphanMergeStateIsWritten: records a merge held at the last
// checkpoint (a crash) are not lost when the sink no longer merges at the
// restart: they are written first, in order, and the merge state leaves
// the checkpoint.
func TestOrphanMergeStateIsWritten(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "in.log"), []byte(`{"ts":9}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	merge := `{"order_by":"ts","feeds":[{"source":"in","path":"b","records":[{"json":{"ts":3},"offset":0}]},` +
		`{"source":"in","path":"a","records":[{"json":{"ts":1},"offset":0},{"json":{"ts":5},"offset":9}]}]}`
	cp := &state.Checkpoint{Pipeline: "p", Epoch: 7, Merge: map[string]json.RawMessage{"out": json.RawMessage(merge)}}
	if err := st.Save(cp); err != nil {
		t.Fatal(err)
	}
	pipes := []*config.Pipeline{rcLoad(t, dir, `version: 1
sources:
  in: { type: file, path: in.log, follow: false }
sinks:
  out: { type: file, inputs: [in], path: out.jsonl }
`)}
	if err := Run(context.Background(), pipes, Options{Logger: nopLogger(), StateDir: filepath.Join(dir, "state")}); err != nil {
		t.Fatal(err)
	}
	want := []string{`{"ts":1}`, `{"ts":3}`, `{"ts":5}`, `{"ts":9}`}
	if got := readLines(t, filepath.Join(dir, "out.jsonl")); !slices.Equal(got, want) {
		t.Fatalf("output %q, want %q (the merge's records first, in order)", got, want)
	}
	after, err := st.Load("p")
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Merge) != 0 {
		t.Errorf("the checkpoint still holds merge state %s", after.Merge)
	}
}

// TestMergerUsesWorkerKeys: keys computed by the worker for the merge's
// field are used as they are; keys for another field (the worker was kept
// across a reload that changed order_by) and unusable ones are not.
func TestMergerUsesWorkerKeys(t *testing.T) {
	for _, tt := range []struct {
		keysOf string
		want   []string
	}{
		{"ts", []string{"2/sb", "1/sa"}}, // a's key says 30
		{"other", []string{"1/sa", "2/sb"}},
	} {
		r := newMergeRig(t, spec(nil), "s")
		g := r.source("s", true, "a", "b")
		b := &stages.Batch{}
		o := &stages.Origin{Source: "s", Path: "a"}
		b.Records = []stages.Record{
			{Raw: []byte(`{"ts":1,"f":"sa"}`), Parsed: true, Origin: o},
			{Raw: []byte(`{"f":"sa"}`), Parsed: true, Origin: o}, // noKey: read again, and it has none
		}
		bad := r.mg.add(msg{b: b, t: g.take("a", b), keysOf: tt.keysOf, keys: []int64{30e9, noKey}}, r.now, nil)
		if len(bad) != 1 || !strings.Contains(bad[0].Err.Error(), "missing") {
			t.Fatalf("rejects %v, want the record without ts", bad)
		}
		r.mg.releaseDone()
		r.send("s", "b", 2)
		g.End("a")
		g.End("b")
		r.expect(false, tt.want...)
	}
}

// TestRenamedPipelineKeepsCheckpoint: a pipeline file renamed without a
// change in content continues from its checkpoint under the new name, so
// its output is not written again.
func TestRenamedPipelineKeepsCheckpoint(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in.log")
	if err := os.WriteFile(in, []byte("a\nb\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const src = `version: 1
sources:
  in: { type: file, path: in.log }
sinks:
  out: { type: file, inputs: [in], path: out.log, fsync: batch }
`
	load := func(name string) *config.Pipeline {
		t.Helper()
		p, diags := config.Parse(filepath.Join(dir, name+".yaml"), []byte(src), config.Options{
			Registry: testRegistry(), Env: func(string) (string, bool) { return "", false }})
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		return p
	}
	rt, err := New(Options{Logger: nopLogger(), StateDir: filepath.Join(dir, "state"), ShutdownTimeout: hangTimeout})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := rt.Apply(ctx, []*config.Pipeline{load("old")}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.log")
	waitFor(t, hangTimeout, "a and b written", func() bool { return countLines(out) == 2 })
	if _, err := rt.Apply(ctx, []*config.Pipeline{load("new")}); err != nil {
		t.Fatal(err)
	}
	appendTo(t, in, "c\n")
	waitFor(t, hangTimeout, "c written", func() bool { return countLines(out) >= 3 })
	if err := rt.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := readLines(t, out); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("output %q, want a b c once each", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "state", "old.json")); !os.IsNotExist(err) {
		t.Errorf("old.json still there (%v)", err)
	}
}

// startMergeReload makes two empty live feeds, dir/a.log and dir/b.log,
// and a runtime with a state dir; cfg(lateness) is pipeline p, which
// merges them by ts into out.jsonl with that max_lateness (idle_timeout
// 1h) and the given checkpoint interval.
func startMergeReload(t *testing.T, dir, interval string) (*Runtime, *Metrics, func(lateness string) *config.Pipeline) {
	t.Helper()
	for _, f := range []string{"a.log", "b.log"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := func(lateness string) *config.Pipeline {
		return rcLoad(t, dir, `version: 1
checkpoint_interval: `+interval+`
sources:
  in: { type: file, path: "*.log" }
workers:
  w: { inputs: [in], ordered: true, concurrency: 2, steps: [ parse_json: {} ] }
sinks:
  out:
    type: file
    inputs: [w]
    path: out.jsonl
    merge: { order_by: ts, max_lateness: `+lateness+`, idle_timeout: 1h }
`)
	}
	mx := NewMetrics()
	rt, err := New(Options{Logger: nopLogger(), Metrics: mx, StateDir: filepath.Join(dir, "state"), ShutdownTimeout: hangTimeout})
	if err != nil {
		t.Fatal(err)
	}
	return rt, mx, cfg
}

// TestMergerStateKeepsLine: a queued parsed record's original line
// survives a checkpoint, so {{_line}} and dead-letter lines read the same
// after a restart.
func TestMergerStateKeepsLine(t *testing.T) {
	r := newMergeRig(t, spec(nil), "s")
	g := r.source("s", true, "a")
	o := &stages.Origin{Source: "s", Path: "a"}
	b := &stages.Batch{Records: []stages.Record{rec(o, 0, "ts=1"), rec(o, 5, `{"ts":2}`)}}
	b.Records[0].SetParsed([]byte(`{"ts":1}`))
	b.Records[1].SetParsed(b.Records[1].Raw) // parse_json: Line is the line itself
	b.Records[1].Line = nil                  // as restored from a state without lines
	if bad := r.mg.add(msg{b: b, t: g.take("a", b)}, r.now, nil); len(bad) > 0 {
		t.Fatal(bad[0].Err)
	}
	st, err := r.mg.state()
	if err != nil {
		t.Fatal(err)
	}

	r2 := newMergeRig(t, spec(nil), "s")
	r2.source("s", true, "a")
	if bad, err := r2.mg.restore(st, r2.now); err != nil || len(bad) > 0 {
		t.Fatalf("restore: %v %v", bad, err)
	}
	r2.gates["s"].End("a")
	r2.mg.take(r2.now, true, 10)
	if len(r2.mg.out) != 2 {
		t.Fatalf("%d records out, want 2", len(r2.mg.out))
	}
	if out := &r2.mg.out[0]; string(out.Line) != "ts=1" || string(out.Raw) != `{"ts":1}` {
		t.Errorf("record with its line: Line %q, Raw %q", out.Line, out.Raw)
	}
	if out := &r2.mg.out[1]; out.Line != nil || string(out.Original()) != `{"ts":2}` {
		t.Errorf("record without a line: Line %q, Original %q", out.Line, out.Original())
	}
}

// TestMergerReleasesBatchesInOrder: a batch is released (its flow-control
// ticket dropped) when its last record is written, not before, also when
// its feed's queue moved to the front under it to make room for the next
// batch.
func TestMergerReleasesBatchesInOrder(t *testing.T) {
	r := newMergeRig(t, spec(nil), "s")
	r.source("s", true, "a", "b")
	outstanding := func(path string) int {
		t.Helper()
		v, ok := r.board.status(feedKey{"s", path})
		if !ok {
			t.Fatalf("feed %s is not on the board", path)
		}
		return v.outstanding
	}
	r.send("s", "a", 1, 2, 3, 4)
	r.send("s", "b", 3)
	r.expect(false, "1/sa", "2/sa", "3/sa", "3/sb") // 4 waits for b's next
	a := r.mg.feeds[feedKey{"s", "a"}]
	if a.head == 0 {
		t.Fatal("a's queue is at its front: the test would not move it")
	}
	room := cap(a.q) - len(a.q)
	keys := make([]int, room+1) // one more than fits: the queue moves to the front
	for i := range keys {
		keys[i] = 5 + i
	}
	r.send("s", "a", keys...)
	if a.head != 0 {
		t.Fatalf("a's queue did not move (head %d)", a.head)
	}
	if n := outstanding("a"); n != 2 {
		t.Fatalf("a has %d batches outstanding, want 2", n)
	}
	r.send("s", "b", 4)
	r.expect(false, "4/sa", "4/sb") // a's first batch is written
	if n := outstanding("a"); n != 1 {
		t.Fatalf("after its first batch: a has %d batches outstanding, want 1", n)
	}
	r.send("s", "b", 100)
	var want []string
	for _, k := range keys {
		want = append(want, fmt.Sprintf("%d/sa", k))
	}
	r.expect(false, want...)
	if n := outstanding("a"); n != 0 {
		t.Fatalf("after its second batch: a has %d batches outstanding, want 0", n)
	}
}
