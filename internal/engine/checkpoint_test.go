package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/state"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func committed(c *checkpointer) state.Checkpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.committed
}

func TestCheckpointerCompletesAtLastAck(t *testing.T) {
	c := newTestCheckpointer(NewMetrics(), 2)
	c.sourceBarrier("s", 1, []byte(`1`), nil)
	c.sinkAck("a", 1, []byte(`"a1"`), nil, nil)
	if e := committed(c).Epoch; e != 0 {
		t.Fatalf("epoch %d committed after one of two sinks acked", e)
	}
	c.sinkAck("b", 1, []byte(`"b1"`), nil, nil)
	cp := committed(c)
	if cp.Epoch != 1 || string(cp.Sources["s"]) != "1" || string(cp.Sinks["a"]) != `"a1"` || string(cp.Sinks["b"]) != `"b1"` {
		t.Fatalf("committed %+v, want epoch 1 with s, a and b", cp)
	}
	// A late ack of an old epoch changes nothing.
	c.sinkAck("b", 1, []byte(`"stale"`), nil, nil)
	if string(committed(c).Sinks["b"]) != `"b1"` {
		t.Error("a stale ack changed the committed checkpoint")
	}
	// A stage that cannot tell its state voids its epoch.
	c.sourceBarrier("s", 2, nil, fmt.Errorf("lost track"))
	c.sinkAck("a", 2, []byte(`"a2"`), nil, nil)
	c.sinkAck("b", 2, []byte(`"b2"`), nil, nil)
	if e := committed(c).Epoch; e != 1 {
		t.Errorf("broken epoch 2 committed (epoch now %d)", e)
	}
	c.sourceBarrier("s", 3, []byte(`3`), nil)
	c.sinkAck("a", 3, []byte(`"a3"`), nil, nil)
	c.sinkAck("b", 3, []byte(`"b3"`), nil, nil)
	if cp := committed(c); cp.Epoch != 3 || string(cp.Sources["s"]) != "3" {
		t.Errorf("committed %+v, want epoch 3", cp)
	}
	// After a sink failure nothing is committed anymore.
	c.freeze()
	c.sourceBarrier("s", 4, []byte(`4`), nil)
	c.sinkAck("a", 4, nil, nil, nil)
	c.sinkAck("b", 4, nil, nil, nil)
	if e := committed(c).Epoch; e != 3 {
		t.Errorf("epoch %d committed after freeze", e)
	}
}

// TestCheckpointerWaitsForEverySink: sink a acked epoch 1, then its input
// ended and it closed; sink b has not acked epoch 1 yet. Epoch 1 must not
// be committed before b acks it: source s2 (b's input) reported its
// position at barrier 1, and b has not written what s2 read before it.
// (A checkpointer that counts acks against the number of live sinks gets
// this wrong: a's own ack, compared with the one sink left, completes the
// cut without b, and a crash then loses what b had not written.)
func TestCheckpointerWaitsForEverySink(t *testing.T) {
	c := newTestCheckpointer(NewMetrics(), 2)
	c.sourceBarrier("s1", 1, []byte(`"s1@1"`), nil)
	c.sourceBarrier("s2", 1, []byte(`"s2@1"`), nil)
	c.sinkAck("a", 1, []byte(`"a@1"`), nil, nil)
	c.sourceEnded("s1", []byte(`"s1@end"`))
	c.sinkEnded("a", []byte(`"a@end"`), nil)
	if cp := committed(c); cp.Epoch != 0 {
		t.Errorf("epoch %d committed before sink b acked it: sources %s, sinks %s",
			cp.Epoch, rawMap(cp.Sources), rawMap(cp.Sinks))
	}
	c.sinkAck("b", 1, []byte(`"b@1"`), nil, nil)
	cp := committed(c)
	if cp.Epoch != 1 || string(cp.Sinks["b"]) != `"b@1"` || string(cp.Sources["s2"]) != `"s2@1"` {
		t.Errorf("after b's ack: epoch %d, sources %s, sinks %s; want epoch 1 with b@1 and s2@1",
			cp.Epoch, rawMap(cp.Sources), rawMap(cp.Sinks))
	}
}

func rawMap(m map[string]json.RawMessage) string {
	b, _ := json.Marshal(m)
	return string(b)
}

// TestRunCheckpointWaitsForEverySink is TestCheckpointerWaitsForEverySink
// in a running pipeline: sink a's source ends right after barrier 1,
// while sink b is held up by its worker. The checkpoint saved must not
// claim that b's source read a record that b has not written.
func TestRunCheckpointWaitsForEverySink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		name := strings.ReplaceAll(t.Name(), "/", "_")
		fa, fb := newFakeSource(8), newFakeSource(8)
		gb := newGate()
		sa, sb := newFakeSink(), newFakeSink()
		addFake(t, name+"-fa", fa)
		addFake(t, name+"-fb", fb)
		addFake(t, name+"-gb", gb)
		addFake(t, name+"-sa", sa)
		addFake(t, name+"-sb", sb)
		dir := t.TempDir()
		pipes := loadPipeline(t, dir, "two", fmt.Sprintf(`version: 1
checkpoint_interval: 1s
sources:
  fa: { type: fake_finite, name: %[1]s-fa }
  fb: { type: fake, name: %[1]s-fb }
workers:
  wb: { inputs: [fb], concurrency: 1, steps: [ { gate: { name: %[1]s-gb } } ] }
sinks:
  a: { type: fake, inputs: [fa], name: %[1]s-sa }
  b: { type: fake, inputs: [wb], name: %[1]s-sb }
`, name), nil)
		stateDir := filepath.Join(dir, "state")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := runAsync(ctx, pipes, Options{Logger: nopLogger(), StateDir: stateDir})

		fb.feed <- &stages.Batch{Records: []stages.Record{{Raw: []byte("b-0")}}}
		synctest.Wait()                     // b-0 is held in wb's step
		time.Sleep(1500 * time.Millisecond) // bubble time: checkpoint tick 1
		synctest.Wait()                     // a acked 1; b waits for b-0
		close(fa.feed)                      // a's input ends: a closes
		synctest.Wait()

		if cp, err := (&state.Store{Dir: stateDir}).Load("two"); err != nil {
			t.Fatal(err)
		} else if cp != nil {
			var read, written fakeState
			_ = json.Unmarshal(cp.Sources["fb"], &read)
			if b, ok := cp.Sinks["b"]; ok {
				_ = json.Unmarshal(b, &written)
			}
			if read.N > 0 && written.N < 1 {
				t.Errorf("checkpoint epoch %d commits source fb after %d batch(es) read but sink b with %d record(s) written: a crash now loses b-0 (sources %s, sinks %s)",
					cp.Epoch, read.N, written.N, rawMap(cp.Sources), rawMap(cp.Sinks))
			}
		}

		close(gb.open)
		close(fb.feed)
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
		if got := sb.Records(); len(got) != 1 {
			t.Errorf("sink b wrote %v, want b-0", got)
		}
	})
}

// twoFeeds writes n JSON lines to each of in/a.jsonl and in/b.jsonl,
// numbered from `from`, and returns every line's key.
func twoFeeds(t *testing.T, dir string, from, n int) []string {
	t.Helper()
	var keys []string
	for _, f := range []string{"a", "b"} {
		var buf bytes.Buffer
		for i := from; i < from+n; i++ {
			fmt.Fprintf(&buf, `{"feed":%q,"i":%d,"msg":"record %d of feed %s"}`+"\n", f, i, i, f)
			keys = append(keys, fmt.Sprintf("%s/%d", f, i))
		}
		path := filepath.Join(dir, "in", f+".jsonl")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		fh, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fh.Write(buf.Bytes()); err != nil {
			t.Fatal(err)
		}
		if err := fh.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// checkKeys compares the output lines with the expected keys: every key
// exactly once.
func checkKeys(t *testing.T, lines, want []string) {
	t.Helper()
	count := map[string]int{}
	for _, l := range lines {
		var v struct {
			Feed string `json:"feed"`
			I    *int   `json:"i"`
		}
		if err := json.Unmarshal([]byte(l), &v); err != nil || v.I == nil {
			t.Fatalf("output line %q is not a record (%v)", l, err)
		}
		count[fmt.Sprintf("%s/%d", v.Feed, *v.I)]++
	}
	lost, dup := 0, 0
	for _, k := range want {
		switch c := count[k]; {
		case c == 0:
			lost++
		case c > 1:
			dup += c - 1
		}
		delete(count, k)
	}
	if lost != 0 || dup != 0 || len(count) != 0 {
		t.Errorf("output: %d lines for %d records: lost=%d dup=%d unexpected=%d", len(lines), len(want), lost, dup, len(count))
	}
}

func filePipeline(follow bool) string {
	return fmt.Sprintf(`version: 1
checkpoint_interval: 20ms
sources:
  a: { type: file, path: in/a.jsonl, follow: %[1]v }
  b: { type: file, path: in/b.jsonl, follow: %[1]v }
workers:
  parse:
    inputs: [a, b]
    concurrency: 3
    steps:
      - parse_json: {}
sinks:
  out: { type: file, inputs: [parse], path: out/out.jsonl }
`, follow)
}

// TestRunCheckpointResume: with a state dir, running a finished finite
// pipeline again writes nothing; new input is picked up where the last
// run stopped.
func TestRunCheckpointResume(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	want := twoFeeds(t, dir, 0, 3000)
	pipes := loadPipeline(t, dir, "resume", filePipeline(false), nil)
	opts := Options{Logger: nopLogger(), StateDir: stateDir}
	out := filepath.Join(dir, "out", "out.jsonl")

	if err := Run(context.Background(), pipes, opts); err != nil {
		t.Fatalf("first Run = %v", err)
	}
	checkKeys(t, readLines(t, out), want)
	first, _ := os.ReadFile(out)

	cp, err := (&state.Store{Dir: stateDir}).Load("resume")
	if err != nil || cp == nil {
		t.Fatalf("no checkpoint after the first run (%v)", err)
	}
	for _, id := range []string{"a", "b"} {
		if len(cp.Sources[id]) == 0 || !bytes.Contains(cp.Sources[id], []byte("offset")) {
			t.Errorf("checkpoint lacks the position of source %s: %s", id, rawMap(cp.Sources))
		}
	}
	if len(cp.Sinks["out"]) == 0 || !bytes.Contains(cp.Sinks["out"], []byte(fmt.Sprintf(`"size":%d`, len(first)))) {
		t.Errorf("checkpoint lacks the size of sink out (%d bytes): %s", len(first), rawMap(cp.Sinks))
	}

	if err := Run(context.Background(), pipes, opts); err != nil {
		t.Fatalf("second Run = %v", err)
	}
	if second, _ := os.ReadFile(out); !bytes.Equal(first, second) {
		t.Errorf("second run changed the output: %d bytes, then %d", len(first), len(second))
	}

	want = append(want, twoFeeds(t, dir, 3000, 500)...)
	if err := Run(context.Background(), pipes, opts); err != nil {
		t.Fatalf("third Run = %v", err)
	}
	checkKeys(t, readLines(t, out), want)
}

// TestRunCheckpointRestoreOlder simulates a crash: the output holds more
// than the last checkpoint says (lines written after it, then a torn
// line), as after kill -9. Restarted from that checkpoint, the sink cuts
// its file back to the committed size and the sources resume from the
// matching offsets: every input line ends up in the output exactly once.
func TestRunCheckpointRestoreOlder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	stateFile := filepath.Join(stateDir, "crash.json")
	out := filepath.Join(dir, "out", "out.jsonl")
	want := twoFeeds(t, dir, 0, 20000)
	pipes := loadPipeline(t, dir, "crash", filePipeline(true), nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runAsync(ctx, pipes, Options{Logger: nopLogger(), StateDir: stateDir})
	// Keep the first checkpoint that commits something.
	var old []byte
	waitFor(t, hangTimeout, "a checkpoint with output", func() bool {
		cp, err := (&state.Store{Dir: stateDir}).Load("crash")
		if err != nil || cp == nil || cp.Epoch == 0 || len(cp.Sinks["out"]) == 0 {
			return false
		}
		old, err = os.ReadFile(stateFile)
		return err == nil
	})
	want = append(want, twoFeeds(t, dir, 20000, 5000)...)
	waitFor(t, hangTimeout, "every line in the output", func() bool { return countLines(out) >= len(want) })
	cancel()
	if err := recvWithin(t, done, hangTimeout, "Run to stop"); err != nil {
		t.Fatalf("Run = %v", err)
	}
	checkKeys(t, readLines(t, out), want)

	// The crash: back to the old checkpoint, with a torn line at the end.
	if err := os.WriteFile(stateFile, old, 0o644); err != nil {
		t.Fatal(err)
	}
	fh, err := os.OpenFile(out, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString(`{"feed":"a","i":`); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	var oldCP state.Checkpoint
	if err := json.Unmarshal(old, &oldCP); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarting from epoch %d: sink %s", oldCP.Epoch, oldCP.Sinks["out"])

	pipes = loadPipeline(t, dir, "crash", filePipeline(false), nil)
	if err := Run(context.Background(), pipes, Options{Logger: nopLogger(), StateDir: stateDir}); err != nil {
		t.Fatalf("Run after the crash = %v", err)
	}
	checkKeys(t, readLines(t, out), want)
}

// TestCheckpointAgeGrowsWhileStuck: while a barrier does not settle (a
// sink retrying on a full disk), no new one is requested, but the age
// gauge keeps growing so that the alert on it fires; once the barrier is
// overdue (10 intervals, at least 1s), a newer one is requested. Runs in
// a synctest bubble: the loop's ticker and time.Sleep below run on the
// bubble's fake clock, so the ticks seen are exactly the ones slept over.
func TestCheckpointAgeGrowsWhileStuck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mx := NewMetrics()
		c := &checkpointer{pipeline: "p", interval: 5 * time.Millisecond, log: nopLogger(),
			age: mx.checkpointAge.WithLabelValues("p"), failures: mx.checkpointFailures.WithLabelValues("p")}
		c.pending, c.liveSinks = map[uint64]*cut{}, map[string]bool{"never-acks": true}
		c.sourceFinal, c.sinkFinal, c.mergeFinal = map[string][]byte{}, map[string][]byte{}, map[string][]byte{}
		c.wake = make(chan struct{}, 1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); c.loop(ctx, func() []*sourceRunner { return nil }) }()
		defer func() { cancel(); <-done }()
		requested := func() uint64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			return c.requested
		}

		time.Sleep(20*c.interval + c.interval/2) // 20 ticks; the first requests epoch 1
		synctest.Wait()
		if age := metricValue(t, c.age); age < 20*c.interval.Seconds() {
			t.Errorf("checkpoint age %vs after 20 intervals of %v stuck, want at least %vs", age, c.interval, 20*c.interval.Seconds())
		}
		if r := requested(); r != 1 {
			t.Errorf("requested epoch %d after 20 intervals, want 1 (one barrier in flight)", r)
		}

		time.Sleep(time.Second) // past the 1s after which a stuck barrier is overdue
		synctest.Wait()
		if r := requested(); r != 2 {
			t.Errorf("requested epoch %d once barrier 1 was overdue, want 2 (a newer one supersedes it)", r)
		}
		if age := metricValue(t, c.age); age < 1 {
			t.Errorf("checkpoint age %vs after more than 1s stuck", age)
		}
	})
}

// TestSavesNeverGoBack: saveQueued runs on several goroutines (the
// checkpoint loop, commitNow, the final checkpoint). Each caller completes
// a newer cut and saves; once its saveQueued returns, the file holds that
// cut or a newer one, never an older one written after it.
func TestSavesNeverGoBack(t *testing.T) {
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mx := NewMetrics()
	c := &checkpointer{pipeline: "p", log: nopLogger(), store: store,
		age: mx.checkpointAge.WithLabelValues("p"), failures: mx.checkpointFailures.WithLabelValues("p")}
	c.pending, c.liveSinks = map[uint64]*cut{}, map[string]bool{}
	c.sourceFinal, c.sinkFinal, c.mergeFinal = map[string][]byte{}, map[string][]byte{}, map[string][]byte{}
	c.committed = state.Checkpoint{Pipeline: "p", Sources: map[string]json.RawMessage{}, Sinks: map[string]json.RawMessage{}}
	var epoch uint64
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for range 25 {
				c.mu.Lock()
				epoch++
				mine := epoch
				c.complete(mine, &cut{sources: map[string][]byte{"s": []byte(fmt.Sprint(mine))}})
				c.mu.Unlock()
				if err := c.saveQueued(); err != nil {
					errs <- err
					return
				}
				cp, err := store.Load("p")
				if err != nil {
					errs <- err
					return
				}
				if cp == nil || cp.Epoch < mine {
					errs <- fmt.Errorf("after saving epoch %d the file holds %+v", mine, cp)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if cp, err := store.Load("p"); err != nil || cp == nil || cp.Epoch != epoch {
		t.Errorf("final checkpoint %+v (%v), want epoch %d", cp, err, epoch)
	}
}

// TestIdleCheckpointNotRewritten: a cut whose stage states equal those on
// disk (an idle pipeline) does not rewrite the state file, also right
// after a restart loaded it; the checkpoint still counts as completed,
// and a changed state is written again.
func TestIdleCheckpointNotRewritten(t *testing.T) {
	store, err := state.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mx := NewMetrics()
	newC := func() *checkpointer {
		c := &checkpointer{}
		c.init(&pipeline{cfg: &config.Pipeline{Name: "p"}, log: nopLogger()}, mx, store)
		if _, err := c.load(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	file := filepath.Join(store.Dir, "p.json")
	save := func(c *checkpointer, st string) uint64 {
		t.Helper()
		epoch, waited := c.pause() // a waiter for the next epoch
		c.mu.Lock()
		c.complete(epoch, &cut{sources: map[string][]byte{"s": []byte(st)}, sinks: map[string][]byte{"out": []byte(`"o` + st + `"`)}})
		c.mu.Unlock()
		if err := c.saveQueued(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-waited:
		default:
			t.Fatalf("epoch %d saved but its waiters not released", epoch)
		}
		return epoch
	}
	stat := func() os.FileInfo {
		t.Helper()
		fi, err := os.Stat(file)
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	epochOnDisk := func() uint64 {
		t.Helper()
		cp, err := store.Load("p")
		if err != nil || cp == nil {
			t.Fatalf("load: %v %v", cp, err)
		}
		return cp.Epoch
	}

	c := newC()
	e1 := save(c, "1")
	first := stat()
	save(c, "1")
	e3 := save(c, "1")
	if !os.SameFile(first, stat()) || epochOnDisk() != e1 {
		t.Fatalf("idle cuts rewrote the state file (epoch on disk %d, want %d)", epochOnDisk(), e1)
	}
	if e := committed(c).Epoch; e != e3 {
		t.Errorf("committed epoch %d, want %d", e, e3)
	}
	if n := testutil.ToFloat64(mx.checkpoints.WithLabelValues("p")); n != 3 {
		t.Errorf("etld_checkpoints_total %v, want 3: the unwritten ones count too", n)
	}

	c = newC() // a restart: the loaded file stands for equal cuts too
	save(c, "1")
	if !os.SameFile(first, stat()) {
		t.Fatal("an idle cut after a restart rewrote the state file")
	}
	e5 := save(c, "2")
	if os.SameFile(first, stat()) || epochOnDisk() != e5 {
		t.Fatalf("a changed state was not saved (epoch on disk %d, want %d)", epochOnDisk(), e5)
	}
}
