package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMergeReloadMaxLateness: hot reload of a merging sink's options
// under load (SPEC §3.2 and §5). A pipeline file in a watched config
// directory follows three live feeds (in/app.log, in/db.log,
// in/proxy.log, one glob source) appended by goroutines every 1, 3 and
// 7ms with the current wall-clock time as ts (fixed-width RFC 3339,
// strictly increasing within a feed) and a per-feed seq (mrotWriter); an
// ordered worker parses them and the sink merges by ts with
// max_lateness 500ms, idle_timeout 5s and late: dead_letter. While the
// writers run the pipeline file is saved four times, alternating an
// editor's rename-save and an in-place write, each changing only the
// merge options:
//
//	start        max_lateness 500ms  idle_timeout 5s
//	1 rename     max_lateness 2s     idle_timeout 5s
//	2 in place   max_lateness 1s     idle_timeout 4s   (proxy silent)
//	3 rename     max_lateness 500ms  idle_timeout 3s
//	4 in place   max_lateness 1s     idle_timeout 5s
//
// Each save is waited for (etld_config_reloads_total{result="success"}
// and the log line "pipeline reconfigured in place") and then until the
// sink writes app records written after it. For save 2 the proxy writer
// is paused first and the save is made once the merge holds at least 200
// records (etld_merge_buffered_records) waiting for proxy;
// the writer resumes only once app records written after the reload are
// out. Once the writers have stopped and output plus dead letters hold
// every record written:
//   - every (feed, seq) written is in the output or the dead-letter file,
//     exactly once, and the output has each record's ts as written;
//   - the output is non-decreasing in ts (late records went to the dead
//     letter, the handed-over buffer was not written early or reordered);
//   - every feed's records come in write order, in the output and in the
//     dead-letter file;
//   - every dead letter is a late record, and their number equals the sum
//     of etld_merge_late_records_total over the feeds;
//   - every proxy record older than an output record already written
//     when the pause ended (the one the paused writer had stamped, as a
//     logger does) is a dead letter;
//   - each reload replaced the sink "out" only, in place: the pipeline
//     never restarted, the process is the one started;
//
// and SIGTERM makes etld exit 0.
func TestMergeReloadMaxLateness(t *testing.T) {
	t.Parallel()
	start := time.Now()
	dir := t.TempDir()
	conf := filepath.Join(dir, "pipelines")
	const name = "timeline"
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
	app, proxy := writers[0], writers[2]
	outPath, rejPath := filepath.Join(dir, "out", "merged.jsonl"), filepath.Join(dir, "out", "rejects.jsonl")
	config := func(maxLateness, idle string) string {
		return fmt.Sprintf(`version: 1
checkpoint_interval: 200ms
dead_letter: rejects
sources:
  live: { type: file, path: %q, follow: true }
workers:
  parse:
    inputs: [live]
    ordered: true
    concurrency: 2
    steps:
      - parse_json: {}
sinks:
  out:
    type: file
    inputs: [parse]
    path: %q
    merge: { order_by: ts, max_lateness: %s, idle_timeout: %s, late: dead_letter }
  rejects:
    type: file
    path: %q
`, filepath.Join(dir, "in", "*.log"), outPath, maxLateness, idle, rejPath)
	}
	cfg := writeConfig(t, conf, name+".yaml", config("500ms", "5s"))

	out := &mergeFollower{t: t, path: outPath, decode: mergeParseRec}
	rej := &mergeFollower{t: t, path: rejPath, decode: mergeDeadLetterRec}
	p := startEtld(t, dir, nil, runArgs(conf, filepath.Join(dir, "state"), "--admin", "127.0.0.1:0")...)
	pid := p.cmd.Process.Pid
	p.eventually("the pipeline has started", func() bool { return rlStarts(p, name) == 1 })
	addr := rlAdminAddr(p)
	metric := func(m string, labels ...string) float64 {
		v, n, err := mergeMetricSum(addr, m, append([]string{`pipeline="` + name + `"`}, labels...)...)
		if err != nil || n == 0 {
			return -1
		}
		return v
	}

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

	// appOut waits until the output has an app record with seq >= seq and
	// returns its ts.
	appOut := func(what string, seq int) int64 {
		t.Helper()
		var ts int64
		p.eventually(func() string {
			return fmt.Sprintf("%s: an app record with seq >= %d in the output (app has written %d; output %d lines, %d dead letters)",
				what, seq, app.n.Load(), len(out.recs), len(rej.recs))
		}, func() bool {
			out.poll()
			rej.poll()
			for i := len(out.recs) - 1; i >= 0 && ts == 0; i-- {
				if r := out.recs[i]; r.feed == "app" && r.seq >= seq {
					ts = r.ts
				}
			}
			return ts != 0
		})
		return ts
	}
	appOut("the merge runs", 300)

	// reload saves content and waits until the reload has been applied:
	// counted as a success and logged as an in-place reconfiguration.
	reloads := 0
	reload := func(what string, save func(t testing.TB, path, content string), content string) {
		t.Helper()
		before := metric("etld_config_reloads_total", `result="success"`)
		if before < 0 {
			t.Fatalf("%s: no etld_config_reloads_total{pipeline=%q,result=\"success\"} in /metrics", what, name)
		}
		save(t, cfg, content)
		reloads++
		var got float64
		p.eventually(func() string {
			return fmt.Sprintf("%s: etld_config_reloads_total{result=\"success\"} %v (was %v), %d in-place reconfigurations logged (want %d)",
				what, got, before, rlCount(p, "pipeline reconfigured in place"), reloads)
		}, func() bool {
			got = metric("etld_config_reloads_total", `result="success"`)
			return got > before && rlCount(p, "pipeline reconfigured in place") >= reloads
		})
	}

	// 1: rename-save, max_lateness 2s.
	reload("save 1 (rename)", rlSaveRename, config("2s", "5s"))
	appOut("after save 1", int(app.n.Load())+200)

	// 2: in-place save, max_lateness 1s, with proxy silent: the merge
	// holds what app and db sent after proxy's last record across the
	// reload. (At first it holds a few batches per feed and the source
	// waits, SPEC §5 flow control; once max_lateness 2s lets those go,
	// the backlog read meanwhile is held: hundreds of records.)
	var (
		pauseOutMax int64           // the newest key in the output when proxy resumed
		outAtResume map[string]bool // the proxy records in the output then
		buffered    float64
	)
	func() {
		proxy.log.mu.Lock()
		defer proxy.log.mu.Unlock() // also on a failure: halt waits for the writer
		p.eventually(func() string {
			return fmt.Sprintf("proxy paused: the merge holds records (etld_merge_buffered_records %v)", buffered)
		}, func() bool {
			buffered = metric("etld_merge_buffered_records", `stage="out"`)
			return buffered >= 200
		})
		reload("save 2 (in place, proxy silent)", rlSaveInPlace, config("1s", "4s"))
		t.Logf("save 2 made with proxy silent and %v records buffered; reloaded with proxy silent", buffered)
		// Records app writes from now on are released by the new
		// max_lateness while proxy stays silent.
		pauseOutMax = appOut("after save 2, proxy silent", int(app.n.Load()))
		out.poll()
		pauseOutMax = max(pauseOutMax, out.maxTS)
		outAtResume = map[string]bool{}
		for _, r := range out.recs {
			if r.feed == "proxy" {
				outAtResume[r.key()] = true
			}
		}
	}()
	appOut("after save 2, proxy back", int(app.n.Load())+200)

	// 3: rename-save, max_lateness 500ms.
	reload("save 3 (rename)", rlSaveRename, config("500ms", "3s"))
	appOut("after save 3", int(app.n.Load())+200)

	// 4: in-place save, max_lateness 1s.
	reload("save 4 (in place)", rlSaveInPlace, config("1s", "5s"))
	appOut("after save 4", int(app.n.Load())+200)

	halt()
	var written []string
	stamp := map[string]int64{}
	for _, w := range writers {
		if w.err != nil {
			t.Fatalf("writer %s: %v", w.feed, w.err)
		}
		for _, r := range w.recs {
			written = append(written, r.key())
			stamp[r.key()] = r.ts
		}
	}
	t.Logf("written: %d records; %s %d, %s %d, %s %d", len(written),
		writers[0].feed, len(writers[0].recs), writers[1].feed, len(writers[1].recs), writers[2].feed, len(writers[2].recs))

	// Every record written comes out, in the output or as a dead letter.
	p.eventually(func() string {
		var got []string
		for _, r := range slices.Concat(out.recs, rej.recs) {
			got = append(got, r.key())
		}
		return fmt.Sprintf("every record written out: %d written, %d in the output, %d dead letters: %s",
			len(written), len(out.recs), len(rej.recs), exactlyOnceDiff(written, got))
	}, func() bool {
		out.poll()
		rej.poll()
		return len(out.recs)+len(rej.recs) >= len(written)
	})
	lateSum, series := -1.0, 0
	var merr error
	eventually(t, waitTimeout, func() bool {
		lateSum, series, merr = mergeMetricSum(addr, "etld_merge_late_records_total", `pipeline="`+name+`"`, `stage="out"`)
		return merr == nil && lateSum == float64(len(rej.recs))
	}, func() string {
		return fmt.Sprintf("etld_merge_late_records_total{pipeline=%q,stage=\"out\"} summed over %d feeds is %v (err %v); the dead-letter file has %d records",
			name, series, lateSum, merr, len(rej.recs))
	})
	success := metric("etld_config_reloads_total", `result="success"`)
	failure := metric("etld_config_reloads_total", `result="failure"`)
	t.Logf("late records: %v (%d feed series); output %d lines, %d dead letters; reloads: %v success, %v failure",
		lateSum, series, len(out.recs), len(rej.recs), success, failure)

	rlStillRunning(t, p, pid, "after the reloads")
	p.expectExit(p.stop(), 0, "SIGTERM after the reloads")
	out.poll()
	rej.poll()
	if len(out.partial) > 0 || len(rej.partial) > 0 {
		t.Errorf("partial last line: output %q, dead letters %q", out.partial, rej.partial)
	}

	// Exactly once, across output and dead letters, with the ts written.
	var got []string
	for _, r := range slices.Concat(out.recs, rej.recs) {
		got = append(got, r.key())
		if ts, ok := stamp[r.key()]; ok && ts != r.ts {
			t.Errorf("%s has ts %s, written with %s", r.key(), time.Unix(0, r.ts).UTC().Format(mergeTSLayout), time.Unix(0, ts).UTC().Format(mergeTSLayout))
		}
	}
	checkExactlyOnce(t, "output and dead letters", written, got)

	// Sorted output; each feed in write order.
	if viol := mergeViolations(out.recs); len(viol) > 0 {
		i := viol[0]
		t.Errorf("late: dead_letter across reloads: the output has %d order violations; first at line %d: %s after %s", len(viol), i+1, out.raw[i], out.raw[i-1])
	}
	mergeCheckFeedOrder(t, "output", out.recs)
	mergeCheckFeedOrder(t, "dead letters", rej.recs)

	// Every dead letter is a late record.
	for i, l := range rej.raw {
		var v struct {
			Error string `json:"error"`
		}
		if err := json.Unmarshal(l, &v); err != nil || !strings.HasPrefix(v.Error, "late record") {
			t.Errorf("dead letter %d is not a late record: %.300s", i+1, l)
		}
	}

	// The proxy records that were older than the output when proxy
	// resumed, and not written yet, are late.
	isDL := map[string]bool{}
	for _, r := range rej.recs {
		isDL[r.key()] = true
	}
	stale := 0
	for _, r := range proxy.recs {
		if r.ts < pauseOutMax && !outAtResume[r.key()] {
			stale++
			if !isDL[r.key()] {
				t.Errorf("%s (ts %s) is not a dead letter, but it reached etld after a newer record (%s) had been written",
					r.key(), time.Unix(0, r.ts).UTC().Format(mergeTSLayout), time.Unix(0, pauseOutMax).UTC().Format(mergeTSLayout))
			}
		}
	}
	var dlKeys []string
	for _, r := range rej.recs[:min(len(rej.recs), 10)] {
		dlKeys = append(dlKeys, r.key())
	}
	t.Logf("proxy records older than the output when proxy resumed: %d; dead letters %v", stale, dlKeys)

	// Each save replaced the sink only, in place.
	if success != float64(reloads) {
		t.Errorf("etld_config_reloads_total{result=\"success\"} is %v after %d saves, want %d", success, reloads, reloads)
	}
	inPlace := rlLogged(p, "pipeline reconfigured in place")
	if len(inPlace) != reloads {
		t.Errorf(`logged "pipeline reconfigured in place" %d times, want %d`, len(inPlace), reloads)
	}
	for i, v := range inPlace {
		if rep, kept := rlStrs(v, "replaced"), rlStrs(v, "kept"); !slices.Equal(rep, []string{"out"}) || !slices.Equal(kept, []string{"live", "parse", "rejects"}) {
			t.Errorf("reconfiguration %d: replaced %v, kept %v; want [out] and [live parse rejects]", i+1, rep, kept)
		}
	}
	if n := rlStarts(p, name); n != 1 {
		t.Errorf("the pipeline started %d times, want 1", n)
	}
	if n := rlCount(p, "pipeline replaced"); n != 0 {
		t.Errorf(`logged "pipeline replaced" %d times, want 0: merge options are applied in place`, n)
	}
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}
