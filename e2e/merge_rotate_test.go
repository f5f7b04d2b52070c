package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestMergeFollowRotation: three live feeds (in/app.log, in/db.log,
// in/proxy.log, followed) are appended by goroutines every 1, 3 and 7ms
// with records whose ts is the current wall-clock time (fixed-width RFC
// 3339, strictly increasing within a feed) and a per-feed seq. app.log is
// rotated five times by rename and create, like logrotate without
// copytruncate (app.log -> app.log.N, new app.log; the logger reopens at
// once): rotations 2 and 4 once etld has written every app record so far,
// the others while it lags behind. The sink merges by ts with
// max_lateness 300ms, idle_timeout 2s and late: emit. Once the writers
// have stopped and every record is out:
//   - every (feed, seq) written is in the output exactly once: nothing is
//     lost or doubled across the rotations;
//   - every feed's records come out in the order they were written: a
//     rotated file and its successor are one feed, read in order;
//   - the number of order violations in the output (a line whose key is
//     less than the newest key before it) equals the sum of
//     etld_merge_late_records_total over the feeds. (A writer stamps a
//     record before it waits for a paused rotation, as a logger does, so
//     the first app record after rotations 2 and 4 is usually late: the
//     count is rarely zero.)
//
// Then SIGTERM, exit 0. Two layouts of the same feeds:
//   - "glob": one file source with path in/*.log (a rotated name,
//     app.log.N, does not match it);
//   - "file sources": one file source per feed.
func TestMergeFollowRotation(t *testing.T) {
	t.Parallel()
	for _, glob := range []bool{true, false} {
		name := "file sources"
		if glob {
			name = "glob"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			mrotRun(t, glob)
		})
	}
}

// mrotWriter appends records of one live feed every `every` through an
// appLog (follow_test.go), whose rotate renames the file and reopens a
// new one with the writer paused.
type mrotWriter struct {
	feed  string
	every time.Duration
	log   *appLog

	n    atomic.Int64 // records written
	recs []mergeRec   // read after the writer is done
	err  error
}

func (w *mrotWriter) run(stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	var line []byte
	var lastUS int64
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		// Strictly increasing within the feed, whatever the clock does.
		// Stamped before the write, as a logger does: a record that
		// waits for a paused rotation keeps its stamp, so it may be late
		// when the other feeds went on meanwhile.
		us := max(time.Now().UnixMicro(), lastUS+1)
		lastUS = us
		line = mergeAppendLine(line[:0], us, false, w.feed, seq)
		w.log.mu.Lock()
		_, err := w.log.f.Write(line)
		w.log.mu.Unlock()
		if err != nil {
			w.err = err
			return
		}
		w.recs = append(w.recs, mergeRec{feed: w.feed, seq: seq, ts: us * 1000})
		w.n.Add(1)
	}
}

// mrotCount returns how many records of feed the output has so far.
func mrotCount(out *mergeFollower, feed string) int {
	n := 0
	for _, r := range out.recs {
		if r.feed == feed {
			n++
		}
	}
	return n
}

func mrotRun(t *testing.T, glob bool) {
	const (
		rotations = 5
		segment   = 400 // app records between two rotations (about)
	)
	start := time.Now()
	dir := t.TempDir()
	writers := []*mrotWriter{
		{feed: "app", every: time.Millisecond},
		{feed: "db", every: 3 * time.Millisecond},
		{feed: "proxy", every: 7 * time.Millisecond},
	}
	for _, w := range writers {
		path := writeFile(t, dir, filepath.Join("in", w.feed+".log"), nil)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		w.log = &appLog{path: path, f: f}
	}
	app := writers[0]
	sources, inputs := "  live: { type: file, path: in/*.log, follow: true }\n", "[live]"
	if !glob {
		sources, inputs = "", "[app, db, proxy]"
		for _, w := range writers {
			sources += fmt.Sprintf("  %s: { type: file, path: in/%s.log, follow: true }\n", w.feed, w.feed)
		}
	}
	cfg := writeConfig(t, dir, "rot.yaml", `version: 1
sources:
`+sources+`workers:
  parse:
    inputs: `+inputs+`
    ordered: true
    concurrency: 2
    steps:
      - parse_json: {}
sinks:
  out:
    type: file
    inputs: [parse]
    path: out/merged.jsonl
    merge: { order_by: ts, max_lateness: 300ms, idle_timeout: 2s, late: emit }
`)
	out := &mergeFollower{t: t, path: filepath.Join(dir, "out", "merged.jsonl"), decode: mergeParseRec}
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"), "--admin", "127.0.0.1:0")...)
	addr := rlAdminAddr(p)

	var (
		wg   sync.WaitGroup
		stop = make(chan struct{})
	)
	for _, w := range writers {
		wg.Add(1)
		go w.run(stop, &wg)
	}
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
			for _, w := range writers {
				if err := w.log.f.Close(); err != nil && w.err == nil {
					w.err = err
				}
			}
		}
	}
	defer halt()

	// A file rotated away before etld has opened it is not its to read:
	// the first rotation waits for an app record in the output.
	p.eventually(func() string {
		return fmt.Sprintf("a first app record in the output (%d app records written, output %d lines)", app.n.Load(), len(out.recs))
	}, func() bool {
		out.poll()
		return mrotCount(out, "app") > 0
	})
	threshold := 0
	for r := 1; r <= rotations; r++ {
		threshold += segment
		p.eventually(func() string {
			return fmt.Sprintf("the app writer reaches record %d (has %d)", threshold, app.n.Load())
		}, func() bool {
			out.poll()
			return app.n.Load() >= int64(threshold)
		})
		if r%2 == 0 {
			// Once etld has written every app record so far, with the
			// writer paused (then it is idle, tailing app.log).
			func() {
				app.log.mu.Lock()
				defer app.log.mu.Unlock() // also on a failure: halt waits for the writer
				n := int(app.n.Load())
				p.eventually(func() string {
					return fmt.Sprintf("before rotation %d: the output has %d of the %d app records written", r, mrotCount(out, "app"), n)
				}, func() bool {
					out.poll()
					return mrotCount(out, "app") >= n
				})
			}()
		}
		if err := app.log.rotate(fmt.Sprintf("%s.%d", app.log.path, r)); err != nil {
			t.Fatalf("rotation %d: %v", r, err)
		}
		threshold = int(app.n.Load())
		t.Logf("rotation %d after about %d app records (%s)", r, threshold, map[bool]string{true: "etld caught up", false: "etld lagging"}[r%2 == 0])
	}
	threshold += segment
	p.eventually(func() string {
		return fmt.Sprintf("the app writer reaches record %d (has %d)", threshold, app.n.Load())
	}, func() bool {
		out.poll()
		return app.n.Load() >= int64(threshold)
	})
	halt()
	var written []string
	for _, w := range writers {
		if w.err != nil {
			t.Fatalf("writer %s: %v", w.feed, w.err)
		}
		for _, r := range w.recs {
			written = append(written, r.key())
		}
	}
	// Test setup: app's records are spread over app.log.1..N and app.log,
	// none of them empty.
	segs, inSegs := make([]int, 0, rotations+1), 0
	for r := 1; r <= rotations+1; r++ {
		path := fmt.Sprintf("%s.%d", app.log.path, r)
		if r > rotations {
			path = app.log.path
		}
		n := (&lineCounter{path: path}).count()
		segs = append(segs, n)
		inSegs += n
		if n == 0 {
			t.Fatalf("test setup: %s has no record", path)
		}
	}
	if inSegs != len(app.recs) {
		t.Fatalf("test setup: app's files hold %d lines (%v), the writer wrote %d records", inSegs, segs, len(app.recs))
	}
	t.Logf("written: %d records; %s %d in files of %v lines (rotated ones first), %s %d, %s %d", len(written),
		app.feed, len(app.recs), segs, writers[1].feed, len(writers[1].recs), writers[2].feed, len(writers[2].recs))

	p.eventually(func() string {
		var got []string
		for _, r := range out.recs {
			got = append(got, r.key())
		}
		return fmt.Sprintf("every record written in the output: %d written, %d out: %s", len(written), len(out.recs), exactlyOnceDiff(written, got))
	}, func() bool {
		out.poll()
		return len(out.recs) >= len(written)
	})
	viol := mergeViolations(out.recs)
	lateSum, series := -1.0, 0
	var merr error
	eventually(t, waitTimeout, func() bool {
		lateSum, series, merr = mergeMetricSum(addr, "etld_merge_late_records_total", `pipeline="rot"`, `stage="out"`)
		return merr == nil && lateSum == float64(len(viol))
	}, func() string {
		return fmt.Sprintf("etld_merge_late_records_total{pipeline=\"rot\",stage=\"out\"} summed over %d feeds is %v (err %v); the output has %d order violations",
			series, lateSum, merr, len(viol))
	})
	t.Logf("late records: %v (%d feed series); output %d lines, %d order violations", lateSum, series, len(out.recs), len(viol))

	p.expectExit(p.stop(), 0, "SIGTERM")
	out.poll()
	if len(out.partial) > 0 {
		t.Errorf("partial last line in the output: %q", out.partial)
	}
	var got []string
	for _, r := range out.recs {
		got = append(got, r.key())
	}
	checkExactlyOnce(t, "output", written, got)
	mergeCheckFeedOrder(t, "output", out.recs)
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}
