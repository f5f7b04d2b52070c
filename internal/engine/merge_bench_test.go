package engine

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/etld/etld/internal/stages"
)

// BenchmarkMergeManyFeeds is the merge's own part of MANYFEEDS (bench/
// manyfeeds.go) at 1,000 finite feeds: batches of parsed records of the
// budget's share at 1,000 feeds (batchLimit), keys interleaving like the
// bench's, each feed kept two batches ahead as its source would, taken
// 1,024 at a time as the sink does, and a checkpoint encoded every
// 1,000,000 records. Per op: one record.
func BenchmarkMergeManyFeeds(b *testing.B) {
	const feeds = 1000
	batch, _ := batchLimit(feeds)
	r := newMergeRig(nil, spec(nil), "s")
	paths := make([]string, feeds)
	index := make(map[string]int, feeds)
	for i := range paths {
		paths[i] = fmt.Sprintf("/data/feed-%04d.jsonl", i)
		index[paths[i]] = i
	}
	g := r.source("s", true, paths...)
	rng := rand.New(rand.NewPCG(1, 2))
	next := make([]int64, feeds)
	for i := range next {
		next[i] = int64(i) * 113_000
	}
	start := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	o := make([]*stages.Origin, feeds)
	send := func(i int) {
		bt := &stages.Batch{Records: make([]stages.Record, batch)}
		for k := range bt.Records {
			next[i] += int64(1+rng.IntN(2000)) * 1000
			ts := start.Add(time.Duration(next[i]))
			line := fmt.Appendf(nil, `{"ts":"%s","feed":"feed-%d","seq":%d,"level":"info","user":"u7578","amount":426.01,"msg":"queue retry alpha"}`,
				ts.Format("2006-01-02T15:04:05.000000Z"), i, k)
			bt.Records[k] = stages.Record{Raw: line, Line: line, Parsed: true, Origin: o[i], Offset: int64(k * len(line))}
		}
		r.mg.add(msg{b: bt, t: g.take(paths[i], bt)}, r.now, nil)
	}
	for i := range feeds {
		o[i] = &stages.Origin{Source: "s", Path: paths[i]}
		send(i)
		send(i)
	}
	r.mg.releaseDone()
	b.ReportAllocs()
	b.ResetTimer()
	written, sinceState := 0, 0
	for written < b.N {
		r.mg.take(r.now, false, mergeWriteMax)
		n := len(r.mg.out)
		if n == 0 {
			b.Fatal("the merge wrote nothing")
		}
		clear(r.mg.out)
		r.mg.out = r.mg.out[:0]
		r.mg.releaseDone()
		written += n
		if sinceState += n; sinceState >= 1_000_000 {
			if _, err := r.mg.state(); err != nil {
				b.Fatal(err)
			}
			sinceState = 0
		}
		b.StopTimer()
		for _, f := range r.mg.feeds {
			if len(f.q)-f.head < batch {
				send(index[f.key.path])
			}
		}
		r.mg.releaseDone()
		b.StartTimer()
	}
}
