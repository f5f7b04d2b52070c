package e2e

import (
	"bytes"
	"fmt"
	"math/rand"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The ordered merge of SPEC §5, end to end: sorted finite feeds merge
// exactly like `sort -m`; live feeds are merged with late records counted
// (and written or dead-lettered); and the merge survives kill -9 without
// losing, doubling or misordering a line.

// mergeFiniteConfig is a pipeline merging the finite feeds in/feed-*.jsonl
// by ts into out/merged.jsonl. extra is added at the top level.
func mergeFiniteConfig(extra string) string {
	return `version: 1
` + extra + `sources:
  feeds: { type: file, path: in/feed-*.jsonl, follow: false }
workers:
  parse:
    inputs: [feeds]
    ordered: true
    concurrency: 3
    steps:
      - parse_json: {}
sinks:
  out:
    type: file
    inputs: [parse]
    path: out/merged.jsonl
    merge: { order_by: ts }
`
}

// TestMergeFiniteMatchesSortM: five sorted finite feeds (one file source
// whose glob matches all five) with overlapping time ranges, random gaps
// and pauses, and equal keys within and across feeds, go through an
// ordered worker with three goroutines to a merging file sink. etld
// exits 0 by itself, and the output is byte for byte what the merge rule
// gives (key, then feed, then input order):
//   - rfc3339: keys are fixed-width RFC 3339 strings, and the expected
//     output is `LC_ALL=C sort -m` of the feeds (the line layout makes byte
//     order the merge order; checked against a sort of the test's own);
//   - unix-seconds: keys are numbers of Unix seconds with fractions, and the
//     expected output is a stable sort by key of the feeds in feed order.
//
// parse_json keeps a valid object's bytes, so lines pass through as is.
func TestMergeFiniteMatchesSortM(t *testing.T) {
	t.Parallel()
	seed := crashSeed(t)
	t.Run("rfc3339", func(t *testing.T) {
		t.Parallel()
		rng := rand.New(rand.NewSource(seed))
		dir := t.TempDir()
		feeds := mergeGenFeeds(t, rng, dir, 5, func(i int) int {
			if i == 2 {
				return 50000 // one feed at the top of the range
			}
			return 2000 + rng.Intn(30000)
		}, false)
		want := mergeSortM(t, mergeFeedPaths(dir, feeds))
		if own := mergeOwnSort(feeds); !bytes.Equal(own, want) {
			mergeCheckSame(t, "test oracle: sort -m against a sort by key, feed, input order", want, own)
			t.FailNow()
		}
		cfg := writeConfig(t, dir, "merge.yaml", mergeFiniteConfig(""))
		p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
		p.expectExit(p.wait(), 0, "finite merge")
		mergeCheckSame(t, "merged output against sort -m", readFile(t, filepath.Join(dir, "out", "merged.jsonl")), want)
	})
	t.Run("unix-seconds", func(t *testing.T) {
		t.Parallel()
		rng := rand.New(rand.NewSource(seed + 1))
		dir := t.TempDir()
		feeds := mergeGenFeeds(t, rng, dir, 5, func(int) int { return 2000 + rng.Intn(3000) }, true)
		want := mergeOwnSort(feeds)
		cfg := writeConfig(t, dir, "merge.yaml", mergeFiniteConfig(""))
		p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
		p.expectExit(p.wait(), 0, "finite merge, numeric keys")
		mergeCheckSame(t, "merged output against a sort by key, feed, input order", readFile(t, filepath.Join(dir, "out", "merged.jsonl")), want)
	})
}

// TestMergeLiveLateCounts: four live feeds (followed files matched by one
// glob) are appended by goroutines every 1, 3, 5 and 7ms with the current
// time as key; the 5ms one goes silent after 150 records (it turns idle
// after idle_timeout), and the 3ms one gives every 20th record a key 2s
// older than the newest key already in the output, so that those are
// late whatever the timing. The sink merges with max_lateness 200ms and
// idle_timeout 500ms. Once every record written is out, /metrics is read;
// then SIGTERM, exit 0.
//   - late: emit: the sum of etld_merge_late_records_total over the feeds
//     equals the number of order violations in the output (a line whose
//     key is less than the newest key of the lines before it), every
//     deliberately old record is one, and every record written is in the
//     output exactly once.
//   - late: dead_letter: the output is non-decreasing, the dead-letter
//     file holds as many records as the late counter says, every
//     deliberately old record among them, and output plus dead letters
//     hold every record written exactly once.
//
// In both, every feed's records come out in the order they were written.
func TestMergeLiveLateCounts(t *testing.T) {
	t.Parallel()
	for _, late := range []string{"emit", "dead_letter"} {
		t.Run(late, func(t *testing.T) {
			t.Parallel()
			mergeLiveLate(t, late)
		})
	}
}

func mergeLiveLate(t *testing.T, late string) {
	dir := t.TempDir()
	writers := []*mergeWriter{
		{feed: "live-a", every: time.Millisecond},
		{feed: "live-b", every: 3 * time.Millisecond, old: true},
		{feed: "live-c", every: 7 * time.Millisecond},
		{feed: "live-d", every: 5 * time.Millisecond, limit: 150},
	}
	for _, w := range writers {
		w.path = writeFile(t, dir, filepath.Join("in", w.feed+".jsonl"), nil)
	}
	dl, rejects := "", ""
	if late == "dead_letter" {
		dl = "dead_letter: rejects\n"
		rejects = `
  rejects:
    type: file
    path: out/rejects.jsonl
`
	}
	cfg := writeConfig(t, dir, "live.yaml", `version: 1
`+dl+`sources:
  live: { type: file, path: in/live-*.jsonl, follow: true }
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
    path: out/merged.jsonl
    merge: { order_by: ts, max_lateness: 200ms, idle_timeout: 500ms, late: `+late+` }`+rejects)
	out := &mergeFollower{t: t, path: filepath.Join(dir, "out", "merged.jsonl"), decode: mergeParseRec}
	rej := &mergeFollower{t: t, path: filepath.Join(dir, "out", "rejects.jsonl"), decode: mergeDeadLetterRec}
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"), "--admin", "127.0.0.1:0")...)
	addr := rlAdminAddr(p)

	// Write until the 1ms feed has 2000 records and the 3ms one has
	// written 5 old records (which needs output to be older than).
	var (
		newest atomic.Int64 // the newest key in the output
		wg     sync.WaitGroup
		stop   = make(chan struct{})
	)
	for _, w := range writers {
		wg.Add(1)
		go w.run(stop, &newest, &wg)
	}
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer halt()
	p.eventually(func() string {
		return fmt.Sprintf("writers done: %s has %d records (want 2000), %s %d old ones (want 5); output %d lines",
			writers[0].feed, writers[0].n.Load(), writers[1].feed, writers[1].oldN.Load(), len(out.recs))
	}, func() bool {
		out.poll()
		newest.Store(out.maxTS)
		return writers[0].n.Load() >= 2000 && writers[1].oldN.Load() >= 5
	})
	halt()
	var written []string
	var old []mergeRec
	for _, w := range writers {
		if w.err != nil {
			t.Fatalf("writer %s: %v", w.feed, w.err)
		}
		for _, r := range w.recs {
			written = append(written, r.key())
			if r.old {
				old = append(old, r)
			}
		}
	}
	t.Logf("written: %d records, %d of them old; feeds %s %d, %s %d, %s %d, %s %d", len(written), len(old),
		writers[0].feed, len(writers[0].recs), writers[1].feed, len(writers[1].recs),
		writers[2].feed, len(writers[2].recs), writers[3].feed, len(writers[3].recs))

	// Every record written comes out (in the output or as a dead letter).
	p.eventually(func() string {
		return fmt.Sprintf("%d records written, %d in the output and %d dead letters", len(written), len(out.recs), len(rej.recs))
	}, func() bool {
		out.poll()
		rej.poll()
		return len(out.recs)+len(rej.recs) >= len(written)
	})
	viol := mergeViolations(out.recs)
	lateSum, series := -1.0, 0
	var merr error
	eventually(t, waitTimeout, func() bool {
		lateSum, series, merr = mergeMetricSum(addr, "etld_merge_late_records_total", `pipeline="live"`, `stage="out"`)
		want := len(viol)
		if late == "dead_letter" {
			want = len(rej.recs)
		}
		return merr == nil && lateSum == float64(want)
	}, func() string {
		return fmt.Sprintf("etld_merge_late_records_total{pipeline=\"live\",stage=\"out\"} summed over %d feeds is %v (err %v); the output has %d order violations, the dead-letter file %d records",
			series, lateSum, merr, len(viol), len(rej.recs))
	})
	t.Logf("late records: %v (%d feed series); output %d lines, %d order violations; %d dead letters", lateSum, series, len(out.recs), len(viol), len(rej.recs))

	p.expectExit(p.stop(), 0, "SIGTERM")
	out.poll()
	rej.poll()
	if len(out.partial) > 0 || len(rej.partial) > 0 {
		t.Errorf("partial last line: output %q, dead letters %q", out.partial, rej.partial)
	}
	var got []string
	for _, r := range out.recs {
		got = append(got, r.key())
	}
	for _, r := range rej.recs {
		got = append(got, r.key())
	}
	checkExactlyOnce(t, "output and dead letters", written, got)
	mergeCheckFeedOrder(t, "output", out.recs)
	mergeCheckFeedOrder(t, "dead letters", rej.recs)

	switch late {
	case "emit":
		if len(rej.recs) > 0 {
			t.Errorf("late: emit sent %d records to the dead-letter sink; first %s", len(rej.recs), rej.raw[0])
		}
		isViol := map[string]bool{}
		for _, i := range viol {
			isViol[out.recs[i].key()] = true
		}
		for _, r := range old {
			if !isViol[r.key()] {
				t.Errorf("%s (key 2s before one already in the output when it was written) is not out of order in the output", r.key())
			}
		}
	case "dead_letter":
		if len(viol) > 0 {
			i := viol[0]
			t.Errorf("late: dead_letter: the output has %d order violations; first at line %d: %s after %s", len(viol), i+1, out.raw[i], out.raw[i-1])
		}
		isDL := map[string]bool{}
		for _, r := range rej.recs {
			isDL[r.key()] = true
		}
		for _, r := range old {
			if !isDL[r.key()] {
				t.Errorf("%s (key 2s before one already in the output when it was written) is not a dead letter", r.key())
			}
		}
	}
}

// TestMergeKill9Restart: five sorted finite feeds of 100k lines each are
// merged with checkpoints every 20ms. etld is killed with -9 twice (once
// the output has passed a random size, or the second time possibly right
// at the restart, during recovery) and restarted with the same state dir
// until it exits 0 by itself. The output is then exactly `LC_ALL=C sort -m`
// of the feeds: nothing lost, nothing doubled, in order across restarts,
// and the final checkpoint matches the files.
func TestMergeKill9Restart(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewSource(crashSeed(t)))
	dir := t.TempDir()
	feeds := mergeGenFeeds(t, rng, dir, 5, func(int) int { return 100000 }, false)
	want := mergeSortM(t, mergeFeedPaths(dir, feeds))
	total := int64(len(want))
	cfg := writeConfig(t, dir, "merge.yaml", mergeFiniteConfig("checkpoint_interval: 20ms\n"))
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out", "merged.jsonl")
	mergeKillTwice(t, rng, dir, cfg, state, out, total)
	got := bytes.Join(crashReadOutput(t, out), []byte{'\n'})
	if len(got) > 0 {
		got = append(got, '\n')
	}
	mergeCheckSame(t, "merged output after kill -9 and restarts, against sort -m", got, want)
	crashCheckFinalState(t, filepath.Join(state, "merge.json"), "out", out)
}
