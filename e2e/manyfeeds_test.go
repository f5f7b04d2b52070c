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

// Many feeds in one ordered merge (issue 17): hundreds of feeds share the
// merge's memory budget, so the merge holds a small batch of each rather
// than the whole input, and must stay exact through kill -9; and a few
// silent feeds among many live ones must not hold the merge back beyond
// idle_timeout.

// TestManyFeedsKill9Restart: 300 sorted finite feeds (one glob), more
// records in all than the merge's budget lets it hold, merged by ts with
// checkpoints every 20ms; etld is killed with -9 twice and restarted
// until it exits 0 by itself. The output is then exactly `LC_ALL=C sort
// -m` of the feeds: every record once, in order across the restarts.
func TestManyFeedsKill9Restart(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewSource(crashSeed(t)))
	dir := t.TempDir()
	// 300 x 500 = 150,000 records: past the board's 64 Ki-record budget.
	feeds := mergeGenFeeds(t, rng, dir, 300, func(int) int { return 450 + rng.Intn(101) }, false)
	want := mergeSortM(t, mergeFeedPaths(dir, feeds))
	cfg := writeConfig(t, dir, "merge.yaml", mergeFiniteConfig("checkpoint_interval: 20ms\n"))
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out", "merged.jsonl")
	mergeKillTwice(t, rng, dir, cfg, state, out, int64(len(want)))
	got := bytes.Join(crashReadOutput(t, out), []byte{'\n'})
	if len(got) > 0 {
		got = append(got, '\n')
	}
	mergeCheckSame(t, "300 feeds merged after kill -9 and restarts, against sort -m", got, want)
	crashCheckFinalState(t, filepath.Join(state, "merge.json"), "out", out)
}

// TestManyFeedsSilentLive: 100 followed feeds, 90 written every 20ms and
// 10 silent after one record each, merged with max_lateness 1h and
// idle_timeout 1s. Only idle_timeout can let records newer than a silent
// feed's one record out (max_lateness never runs out in the test), so the
// output flowing while the silent feeds stay silent shows they stopped
// holding the merge back. After the writers stop and a graceful stop,
// every record is in the output exactly once, each feed in its order.
func TestManyFeedsSilentLive(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const active, silent = 90, 10
	var writers []*mergeWriter
	for i := range active {
		w := &mergeWriter{feed: fmt.Sprintf("live-%03d", i), every: 20 * time.Millisecond}
		w.path = writeFile(t, dir, filepath.Join("in", w.feed+".jsonl"), nil)
		writers = append(writers, w)
	}
	var want []string
	for i := range silent {
		name := fmt.Sprintf("silent-%02d", i)
		us := time.Now().Add(-time.Second).UTC().UnixMicro()
		writeFile(t, dir, filepath.Join("in", name+".jsonl"), mergeAppendLine(nil, us, false, name, 0))
		want = append(want, key(name, 0))
	}
	cfg := writeConfig(t, dir, "live.yaml", `version: 1
sources:
  feeds: { type: file, path: in/*.jsonl }
workers:
  parse:
    inputs: [feeds]
    ordered: true
    steps: [ { parse_json: {} } ]
sinks:
  out:
    type: file
    inputs: [parse]
    path: out/merged.jsonl
    merge: { order_by: ts, max_lateness: 1h, idle_timeout: 1s }
`)
	out := &mergeFollower{t: t, path: filepath.Join(dir, "out", "merged.jsonl"), decode: mergeParseRec}
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var newest atomic.Int64
	for _, w := range writers {
		wg.Add(1)
		go w.run(stop, &newest, &wg)
	}
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWriters()
	// The output flows: every live feed gets 25 records (half a second of
	// its writing) out, although the silent feeds sent nothing newer.
	perFeed := map[string]int{}
	p.eventually("25 records of every live feed in the output", func() bool {
		n := len(out.recs)
		out.poll()
		for _, r := range out.recs[n:] {
			perFeed[r.feed]++
		}
		for _, w := range writers {
			if perFeed[w.feed] < 25 {
				return false
			}
		}
		return true
	})
	stopWriters()
	total := len(want)
	for _, w := range writers {
		if w.err != nil {
			t.Fatalf("writer %s: %v", w.feed, w.err)
		}
		for _, r := range w.recs {
			want = append(want, key(r.feed, r.seq))
		}
		total += len(w.recs)
	}
	// Every record written is out once the feeds go idle; then stop.
	p.eventually(fmt.Sprintf("all %d records in the output", total), func() bool {
		out.poll()
		return len(out.recs) >= total
	})
	p.expectExit(p.stop(), 0, "graceful stop")
	out.poll()
	got := make([]string, len(out.recs))
	for i, r := range out.recs {
		got[i] = key(r.feed, r.seq)
	}
	checkExactlyOnce(t, "merged output of 100 feeds, 10 silent", want, got)
	mergeCheckFeedOrder(t, "merged output", out.recs)
	// Feeds written side by side every 20ms stay within the hour of
	// lateness: out of order only if a writer stalled for idle_timeout.
	if v := mergeViolations(out.recs); len(v) > 0 {
		t.Logf("%d records out of ts order (a writer stalled past idle_timeout on a loaded machine)", len(v))
	}
}
