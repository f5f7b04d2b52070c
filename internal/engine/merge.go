package engine

import (
	"bytes"
	"container/heap"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/timekey"
	"github.com/prometheus/client_golang/prometheus"
)

// merger is the state of a sink's ordered merge (SPEC §5): one FIFO queue
// per feed of the records that reached the sink and are not written yet,
// and a heap of the feeds by their head record.
//
// A record r may be written when no feed that could still send a record
// ordered before r is holding the merge back. A feed holds when its queue
// is empty and it is not finished (its source ended it and none of its
// batches is still in flight): a finite feed always, a live feed until it
// has been silent for idle_timeout. It holds r back only while its
// watermark (the newest key it sent) is before r (equal keys: feed order).
// Records waiting only for live feeds are written once they have waited
// max_lateness. So individually sorted finite feeds merge exactly, like
// sort -m, and live feeds are merged within max_lateness.
//
// All methods run on the sink's goroutine, except setUpstream.
type merger struct {
	spec  config.MergeSpec
	board *feedBoard

	// upstream maps the ids of the sources that feed the sink to their
	// order in the pipeline file (the first tie-breaker of equal keys).
	upstream    map[string]int
	upstreamSet chan map[string]int // new upstream after a reconfiguration

	feeds map[feedKey]*mfeed
	ready feedHeap // feeds with queued records, by head

	// The feeds holding the merge (queue empty, not finished), kept up to
	// date as feeds change rather than found by looking at every feed: a
	// merge of a thousand feeds would otherwise look at all of them for
	// every batch. finiteHold and liveHold are by hold mark (holdLess),
	// idleQ the live ones by when they turn idle.
	finiteHold, liveHold feedQueue
	idleQ                feedQueue
	rescan               bool       // look at every feed on the board again (start, reconfiguration)
	unsettled            []*mfeed   // feeds whose queue emptied outside take (all records bad)
	views                []feedView // drain's buffer

	newest   int64 // newest key written, valid when written is set
	written  bool
	buffered int // records queued
	peak     int // most records ever queued (tests check the bound)

	mx      *mergeMetrics
	status  atomic.Pointer[MergeStatus] // for /api/pipelines, see publish
	out     []stages.Record             // the batch being written
	picks   []*item                     // take's records to copy into out
	done    []*heldBatch                // batches all of whose records were taken
	rejects []stages.Reject             // late records for the dead-letter sink
}

// mfeed is one feed as the merge sees it.
type mfeed struct {
	key  feedKey
	rank int // order of its source in the pipeline file
	q    []item
	keys []int64 // keys[i] is q[i]'s merge key
	head int     // of q and keys
	// ends are the batches with records in q, in order, each with the
	// index in q of its last record (from ehead on).
	ends  []batchEnd
	ehead int
	wm    int64 // newest key received
	seen  bool  // wm is valid
	last  time.Time

	hold   *feedQueue // the hold heap it is in, or nil
	hindex int        // its index there
	dindex int        // in idleQ; -1 when not there
	done   int        // its batches in merger.done (taken, not released)

	late           prometheus.Counter
	watermark, lag prometheus.Gauge
}

// item is one queued record: a copy of the record (it points into its
// batch's buffers). At a thousand feeds a record is taken long after it
// was queued, so every memory access of take to it is a cache miss:
// reading it through its batch cost three of them (the batch, its
// slice, the record). The keys are in an array of their own
// (mfeed.keys), eight to a cache line, and the batches in another
// (mfeed.ends), so that take decides what to write without touching the
// records, and then copies them all at once (see take).
type item struct {
	rec stages.Record
	// valid: rec is parsed and its Raw one valid JSON object (a step
	// indexed it, see msg.keysIndexed): state copies it without
	// validating it again when it is compact.
	valid bool
}

// batchEnd is a batch with records queued, and the index of its last
// one in its feed's queue: taking that one releases the batch.
type batchEnd struct {
	hb  *heldBatch
	end int
}

// heldBatch is a batch whose records are queued; it is released once all
// of them are written (which frees its feed's flow-control credit).
type heldBatch struct {
	b       *stages.Batch
	t       *ticket // its feed's flow control, or nil
	f       *mfeed  // the feed it was queued for
	arrived time.Time
}

// mergeMetrics are a merging sink's merge series.
type mergeMetrics struct {
	pipeline, stage string
	mx              *Metrics
	buffered        prometheus.Gauge
	lateDropped     prometheus.Counter
}

func newMerger(spec config.MergeSpec, board *feedBoard, upstream []string, mx *Metrics, pipeline, stage string) *merger {
	mg := &merger{spec: spec, board: board, feeds: map[feedKey]*mfeed{}, upstreamSet: make(chan map[string]int, 1), rescan: true,
		mx: &mergeMetrics{pipeline: pipeline, stage: stage, mx: mx,
			buffered:    mx.mergeBuffered.WithLabelValues(pipeline, stage),
			lateDropped: mx.dropped.WithLabelValues(pipeline, stage, reasonLate)}}
	mg.upstream = rankOf(upstream)
	mg.finiteHold, mg.liveHold = holdQueue(), holdQueue()
	mg.idleQ = feedQueue{less: idleLess, pos: func(f *mfeed) *int { return &f.dindex }}
	return mg
}

func rankOf(ids []string) map[string]int {
	m := make(map[string]int, len(ids))
	for i, id := range ids {
		m[id] = i
	}
	return m
}

// setUpstream changes the sources that feed the merge (reconfigure); the
// sink's goroutine picks it up at its next step.
func (mg *merger) setUpstream(ids []string) {
	select {
	case <-mg.upstreamSet:
	default:
	}
	mg.upstreamSet <- rankOf(ids)
}

// retune takes the options of a new config of the same merge (a new
// idle_timeout may make idle feeds hold again: look at all of them).
func (mg *merger) retune(spec config.MergeSpec) { mg.spec, mg.rescan = spec, true }

// feedLabel is a feed's value of the `feed` label: its file, or its
// source id for a source without files.
func feedLabel(k feedKey) string {
	if k.path == "" {
		return k.source
	}
	return k.path
}

func (mg *merger) feed(k feedKey, now time.Time) *mfeed {
	f := mg.feeds[k]
	if f != nil {
		return f
	}
	rank, ok := mg.upstream[k.source]
	if !ok {
		rank = math.MaxInt32
	}
	lbl := feedLabel(k)
	f = &mfeed{key: k, rank: rank, last: now, dindex: -1,
		late:      mg.mx.mx.mergeLate.WithLabelValues(mg.mx.pipeline, mg.mx.stage, lbl),
		watermark: mg.mx.mx.mergeWatermark.WithLabelValues(mg.mx.pipeline, mg.mx.stage, lbl),
		lag:       mg.mx.mx.mergeLag.WithLabelValues(mg.mx.pipeline, mg.mx.stage, lbl)}
	mg.feeds[k] = f
	return f
}

// feedOfMsg is the feed a batch belongs to: its ticket's, else its first
// record's origin.
func feedOfMsg(m msg) feedKey {
	if m.t != nil {
		return m.t.feed
	}
	if b := m.b; len(b.Records) > 0 && b.Records[0].Origin != nil {
		o := b.Records[0].Origin
		return feedKey{o.Source, o.Path}
	}
	return feedKey{}
}

// add queues the records of m's batch, which arrived at now. Records
// without a usable key are returned as rejects (they point into the
// batch, which stays held until the caller has dealt with them and calls
// releaseDone).
func (mg *merger) add(m msg, now time.Time, bad []stages.Reject) []stages.Reject {
	mg.add1(feedOfMsg(m), m, now, &bad)
	return bad
}

func (mg *merger) add1(k feedKey, m msg, now time.Time, bad *[]stages.Reject) {
	b := m.b
	f := mg.feed(k, now)
	mg.unhold(f) // its last and maybe its watermark change
	hb := &heldBatch{b: b, t: m.t, f: f, arrived: now}
	wasEmpty := f.head == len(f.q)
	if f.head > 0 && len(f.q)+len(b.Records) > cap(f.q) {
		// Move the queue to the front rather than grow it: its capacity
		// stays within twice the most it held, which a merge of many
		// feeds multiplies by the feeds.
		n := copy(f.q, f.q[f.head:])
		clear(f.q[n:])
		copy(f.keys, f.keys[f.head:])
		m := copy(f.ends, f.ends[f.ehead:])
		clear(f.ends[m:])
		for i := range m {
			f.ends[i].end -= f.head
		}
		f.q, f.keys, f.ends, f.head, f.ehead = f.q[:n], f.keys[:n], f.ends[:m], 0, 0
	}
	queued := 0
	keys := m.keys
	if m.keysOf != mg.spec.OrderBy || len(keys) != len(b.Records) {
		keys = nil // computed for another field (a reload), or not at all
	}
	valid := keys != nil && m.keysIndexed
	for i := range b.Records {
		r := &b.Records[i]
		var key int64
		var err error
		if keys != nil && keys[i] != noKey {
			key = keys[i]
		} else {
			key, err = orderKey(r.Raw, mg.spec.OrderBy)
		}
		if err != nil {
			*bad = append(*bad, stages.Reject{Record: *r, Err: fmt.Errorf("merge: order_by %q: %w", mg.spec.OrderBy, err)})
			continue
		}
		f.q = append(f.q, item{rec: *r, valid: valid && r.Parsed})
		f.keys = append(f.keys, key)
		queued++
		if !f.seen || key > f.wm {
			f.wm, f.seen = key, true
		}
	}
	if keys != nil {
		putKeys(keys)
	}
	f.last = now
	mg.buffered += queued
	mg.peak = max(mg.peak, mg.buffered)
	if queued == 0 {
		mg.addDone(hb)
	} else {
		f.ends = append(f.ends, batchEnd{hb, len(f.q) - 1})
	}
	if f.head == len(f.q) {
		mg.unsettled = append(mg.unsettled, f) // holds again, from now on
	}
	if f.seen {
		f.watermark.Set(float64(f.wm) / 1e9)
		f.lag.Set(max(0, now.Sub(time.Unix(0, f.wm)).Seconds()))
	}
	if wasEmpty && f.head < len(f.q) {
		mg.ready.push(f, f.keys[f.head])
	}
}

// publish makes a snapshot for /api/pipelines and `etld status` (at
// every checkpoint barrier: cheap enough, and fresh enough).
func (mg *merger) publish() {
	st := &MergeStatus{OrderBy: mg.spec.OrderBy, Buffered: mg.buffered}
	if mg.written {
		st.Newest = fmtKey(mg.newest)
	}
	for _, f := range mg.feeds {
		fs := FeedStatus{Feed: feedLabel(f.key), Buffered: len(f.q) - f.head, Late: counterValue(f.late)}
		if f.seen {
			fs.Watermark = fmtKey(f.wm)
		}
		st.Late += fs.Late
		st.Feeds = append(st.Feeds, fs)
	}
	slices.SortFunc(st.Feeds, func(a, b FeedStatus) int { return strings.Compare(a.Feed, b.Feed) })
	mg.status.Store(st)
}

// forget drops a finished feed with nothing queued, and its series.
func (mg *merger) forget(f *mfeed) {
	if !mg.board.forget(f.key) {
		return // registered again meanwhile
	}
	mg.unhold(f)
	delete(mg.feeds, f.key)
	lbl := feedLabel(f.key)
	mg.mx.mx.mergeLate.DeleteLabelValues(mg.mx.pipeline, mg.mx.stage, lbl)
	mg.mx.mx.mergeWatermark.DeleteLabelValues(mg.mx.pipeline, mg.mx.stage, lbl)
	mg.mx.mx.mergeLag.DeleteLabelValues(mg.mx.pipeline, mg.mx.stage, lbl)
}

// releaseDone releases the batches all of whose records were taken.
func (mg *merger) releaseDone() {
	for i, hb := range mg.done {
		if hb.t != nil {
			hb.f.done--
		}
		hb.b.Release()
		hb.t.drop()
		mg.done[i] = nil
	}
	mg.done = mg.done[:0]
}

// holdMark is the least (watermark, feed) of the feeds holding the merge.
type holdMark struct {
	set  bool
	seen bool
	wm   int64
	f    *mfeed
}

// blocks reports whether a holding feed at h may still send a record
// ordered before key of feed f.
func (h *holdMark) blocks(key int64, f *mfeed) bool {
	if !h.set {
		return false
	}
	if !h.seen || h.wm < key {
		return true
	}
	return h.wm == key && feedLess(h.f, f)
}

// holders returns the marks of the finite and the live feeds holding the
// merge at now, and the earliest time a live one turns idle. It looks at
// the feeds that changed since it last looked only (and at every feed
// after a reconfiguration).
func (mg *merger) holders(now time.Time) (finite, live holdMark, idleAt time.Time) {
	select {
	case u := <-mg.upstreamSet:
		mg.upstream = u
		for _, f := range mg.feeds {
			if r, ok := u[f.key.source]; ok {
				f.rank = r
			}
		}
		mg.ready.init()
		mg.rescan = true
	default:
	}
	if mg.rescan {
		// Ranks or idle_timeout changed: the heaps' orders may have.
		for _, h := range []*feedQueue{&mg.finiteHold, &mg.liveHold} {
			for _, f := range h.fs {
				f.hold = nil
			}
			h.clear()
		}
		mg.idleQ.clear()
	}
	mg.views = mg.board.drain(mg.upstream, mg.rescan, mg.views[:0])
	mg.rescan = false
	for _, v := range mg.views {
		// A registered feed that sent nothing yet holds too.
		mg.settle(mg.feed(v.key, now), v.feedInfo, true, now)
	}
	clear(mg.views)
	for _, f := range mg.unsettled {
		if mg.feeds[f.key] == f {
			v, ok := mg.board.status(f.key)
			mg.settle(f, v, ok, now)
		}
	}
	clear(mg.unsettled)
	mg.unsettled = mg.unsettled[:0]
	for mg.idleQ.Len() > 0 && !now.Before(mg.idleAt(mg.idleQ.fs[0])) {
		mg.unhold(mg.idleQ.fs[0]) // idle: holds nothing back
	}
	if mg.idleQ.Len() > 0 {
		idleAt = mg.idleAt(mg.idleQ.fs[0])
	}
	return mg.finiteHold.mark(), mg.liveHold.mark(), idleAt
}

func (mg *merger) idleAt(f *mfeed) time.Time { return f.last.Add(mg.spec.IdleTimeout) }

// settle puts f where it belongs now that its board state is v (ok:
// it is on the board): in a hold heap if its queue is empty and it may
// still send a record, else in none. A finished feed with nothing in
// flight is forgotten.
func (mg *merger) settle(f *mfeed, v feedInfo, ok bool, now time.Time) {
	mg.unhold(f)
	switch {
	case f.head < len(f.q) || !ok:
		// Has records (not holding), or not a feed of the board.
	case mg.finished(f, v):
		if v.outstanding == 0 {
			mg.forget(f) // finished for good: keep no state for it
		}
	case v.finite:
		f.hold = &mg.finiteHold
		heap.Push(f.hold, f)
	case now.Before(mg.idleAt(f)):
		f.hold = &mg.liveHold
		heap.Push(f.hold, f)
		heap.Push(&mg.idleQ, f)
	}
}

// unhold takes f out of the hold heaps.
func (mg *merger) unhold(f *mfeed) {
	if f.hold != nil {
		heap.Remove(f.hold, f.hindex)
		f.hold = nil
	}
	if f.dindex >= 0 {
		heap.Remove(&mg.idleQ, f.dindex)
	}
}

// take moves the records that may be written at now into mg.out (and late
// ones to mg.rejects or nowhere, per policy), at most limit of them; all
// of them when final (a graceful stop, or the end of every input). It
// returns when the merge must look again at the latest: zero when it
// waits for input only.
//
// It decides first, from the keys, which records go out, and copies
// them afterwards: at a thousand feeds each record is a cache miss, and
// misses whose addresses are all known overlap, where one per step of
// the merge waited for each other.
func (mg *merger) take(now time.Time, final bool, limit int) (wake time.Time) {
	defer func() { mg.mx.buffered.Set(float64(mg.buffered)) }()
	picks := mg.picks[:0]
	defer func() {
		for _, it := range picks {
			mg.out = append(mg.out, it.rec)
			*it = item{}
		}
		clear(picks)
		mg.picks = picks[:0]
	}()
	var finite, live holdMark
	var idleAt time.Time
	if !final {
		finite, live, idleAt = mg.holders(now)
	}
	for len(mg.ready) > 0 && len(mg.out)+len(picks)+len(mg.rejects) < limit {
		f, key := mg.ready[0].f, mg.ready[0].hk
		if !final {
			if finite.blocks(key, f) {
				return time.Time{} // only input can unblock it
			}
			if live.blocks(key, f) {
				due := f.ends[f.ehead].hb.arrived.Add(mg.spec.MaxLateness)
				if now.Before(due) {
					if !idleAt.IsZero() && idleAt.Before(due) {
						return idleAt
					}
					return due
				}
			}
		}
		it := &f.q[f.head] // (not read here)
		late := mg.written && key < mg.newest
		if e := &f.ends[f.ehead]; e.end == f.head {
			mg.addDone(e.hb)
			*e = batchEnd{}
			f.ehead++
		}
		f.head++
		mg.buffered--
		if f.head == len(f.q) {
			f.q, f.keys, f.head = f.q[:0], f.keys[:0], 0
			f.ends, f.ehead = f.ends[:0], 0
			mg.ready.popTop()
			// f holds from now on, at its watermark, unless it is
			// finished.
			v, ok := mg.board.status(f.key)
			mg.settle(f, v, ok, now)
			if !final {
				finite, live = mg.finiteHold.mark(), mg.liveHold.mark()
				if mg.idleQ.Len() > 0 {
					idleAt = mg.idleAt(mg.idleQ.fs[0])
				}
			}
		} else {
			mg.ready.fixTop(f.keys[f.head])
		}
		if late {
			f.late.Inc()
			switch mg.spec.Late {
			case "dead_letter":
				mg.rejects = append(mg.rejects, stages.Reject{Record: it.rec,
					Err: fmt.Errorf("late record: %s %s is before %s, already written", mg.spec.OrderBy, fmtKey(key), fmtKey(mg.newest))})
				*it = item{}
			case "drop":
				mg.mx.lateDropped.Inc()
				*it = item{}
			default:
				picks = append(picks, it)
			}
			continue
		}
		picks = append(picks, it)
		if !mg.written || key > mg.newest {
			mg.newest, mg.written = key, true
		}
	}
	if len(mg.ready) > 0 && len(mg.out)+len(picks)+len(mg.rejects) >= limit {
		return now // more to take at once
	}
	return time.Time{}
}

// finished reports whether a feed with an empty queue, whose state on the
// board is v, will send nothing more: it ended, and every batch of it
// still unreleased is one the merge holds.
func (mg *merger) finished(f *mfeed, v feedInfo) bool {
	return v.ended && v.outstanding <= mg.heldOf(f)
}

// heldOf counts the batches of f the merge still holds (taken, not yet
// released).
func (mg *merger) heldOf(f *mfeed) int { return f.done }

// addDone queues hb, a batch all of whose records were taken, for
// releaseDone; its feed counts it (heldOf) until then when it has a
// ticket (outstanding counts tickets).
func (mg *merger) addDone(hb *heldBatch) {
	mg.done = append(mg.done, hb)
	if hb.t != nil {
		hb.f.done++
	}
}

func fmtKey(k int64) string {
	return time.Unix(0, k).UTC().Format(time.RFC3339Nano)
}

// feedLess orders feeds with equal keys: sources in file order, then
// file path.
func feedLess(a, b *mfeed) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	if a.key.source != b.key.source {
		return a.key.source < b.key.source
	}
	return a.key.path < b.key.path
}

// feedHeap is the heap of the feeds with queued records, by their head
// record's key, then feedLess. It is on the path of every record, and a
// merge of a thousand feeds sifts through ten levels of it per record:
// each entry carries its feed's head key, so that the comparisons read
// the heap's own array rather than every feed's state (a cache miss per
// feed at a thousand feeds), and the sifting is written out so that they
// inline (container/heap calls Less and Swap through an interface).
type feedHeap []readyEnt

// readyEnt is a feed in the ready heap and the key of its head record.
type readyEnt struct {
	hk int64
	f  *mfeed
}

func readyLess(a, b *readyEnt) bool {
	if a.hk != b.hk {
		return a.hk < b.hk
	}
	return feedLess(a.f, b.f)
}

// push adds f, whose head record's key is hk.
func (h *feedHeap) push(f *mfeed, hk int64) {
	*h = append(*h, readyEnt{hk, f})
	s := *h
	i := len(s) - 1
	e := s[i]
	for i > 0 {
		p := (i - 1) / 2
		if !readyLess(&e, &s[p]) {
			break
		}
		s[i] = s[p]
		i = p
	}
	s[i] = e
}

// fixTop sets the key of the top feed to hk and restores the order.
func (h feedHeap) fixTop(hk int64) {
	h[0].hk = hk
	h.down(0)
}

// popTop removes the top feed.
func (h *feedHeap) popTop() {
	s := *h
	n := len(s) - 1
	s[0] = s[n]
	s[n] = readyEnt{}
	*h = s[:n]
	if n > 0 {
		(*h).down(0)
	}
}

// init restores the order after the feeds' ranks changed.
func (h feedHeap) init() {
	for i := len(h)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h feedHeap) down(i int) {
	n := len(h)
	e := h[i]
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && readyLess(&h[r], &h[c]) {
			c = r
		}
		if !readyLess(&h[c], &e) {
			break
		}
		h[i] = h[c]
		i = c
	}
	h[i] = e
}

// holdLess orders holding feeds by hold mark: a feed that sent nothing
// first (it may send anything), then by watermark, then feedLess.
func holdLess(a, b *mfeed) bool {
	if a.seen != b.seen {
		return !a.seen
	}
	if a.wm != b.wm {
		return a.wm < b.wm
	}
	return feedLess(a, b)
}

// idleLess orders live holding feeds by when they turn idle (their last
// record; idle_timeout is the same for all).
func idleLess(a, b *mfeed) bool { return a.last.Before(b.last) }

// feedQueue is a heap of feeds by less, which keeps each feed's index in
// the field pos returns (-1 once it is out). The hold heaps and idleQ
// use it; the ready heap, on the path of every record, has its own
// (feedHeap).
type feedQueue struct {
	fs   []*mfeed
	less func(a, b *mfeed) bool
	pos  func(f *mfeed) *int
}

func holdQueue() feedQueue {
	return feedQueue{less: holdLess, pos: func(f *mfeed) *int { return &f.hindex }}
}

// mark is the least hold mark of a hold heap's feeds.
func (h *feedQueue) mark() holdMark {
	if len(h.fs) == 0 {
		return holdMark{}
	}
	f := h.fs[0]
	return holdMark{set: true, seen: f.seen, wm: f.wm, f: f}
}

func (h *feedQueue) Len() int           { return len(h.fs) }
func (h *feedQueue) Less(i, j int) bool { return h.less(h.fs[i], h.fs[j]) }
func (h *feedQueue) Swap(i, j int) {
	h.fs[i], h.fs[j] = h.fs[j], h.fs[i]
	*h.pos(h.fs[i]), *h.pos(h.fs[j]) = i, j
}
func (h *feedQueue) Push(x any) {
	f := x.(*mfeed)
	*h.pos(f) = len(h.fs)
	h.fs = append(h.fs, f)
}
func (h *feedQueue) Pop() any {
	n := len(h.fs) - 1
	f := h.fs[n]
	h.fs[n] = nil
	h.fs = h.fs[:n]
	*h.pos(f) = -1
	return f
}

// clear empties the heap.
func (h *feedQueue) clear() {
	for _, f := range h.fs {
		*h.pos(f) = -1
	}
	clear(h.fs)
	h.fs = h.fs[:0]
}

// setKeys computes the merge keys of m's records for field (see
// msg.keys), finding the field with the batch's field index when the
// steps left one (stages.Batch.Fields); the merge reads unusable ones
// again for the error.
func setKeys(m *msg, field string) {
	b := m.b
	if len(b.Records) == 0 {
		return
	}
	keys := newKeys(len(b.Records))
	indexed := true
	for i := range b.Records {
		var k int64
		var err error
		m, found, ok := b.Field(i, field)
		indexed = indexed && ok
		if ok {
			err = errMissing
			if found {
				k, err = memberKey(b.Records[i].Raw, &m)
			}
		} else {
			k, err = orderKey(b.Records[i].Raw, field)
		}
		if err != nil {
			k = noKey
		}
		keys[i] = k
	}
	m.keys, m.keysOf, m.keysIndexed = keys, field, indexed
}

var errMissing = errors.New("missing")

// keyPool recycles the key slices of msg.keys: the merge is done with
// them once add1 has queued the batch (copies of a msg have their own).
var keyPool sync.Pool // of *[]int64

func newKeys(n int) []int64 {
	if p, _ := keyPool.Get().(*[]int64); p != nil && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]int64, n, max(n, 1024))
}

func putKeys(keys []int64) {
	if cap(keys) >= 1024 && cap(keys) <= 4096 {
		keyPool.Put(&keys)
	}
}

// orderKey reads the order_by field of a JSON object: an RFC 3339 time or
// a number of Unix seconds (fractions allowed), as Unix nanoseconds.
func orderKey(obj []byte, field string) (int64, error) {
	m, found, err := jsonrec.Find(obj, field)
	if err != nil {
		return 0, fmt.Errorf("record is not a JSON object: %w", err)
	}
	if !found {
		return 0, errMissing
	}
	return memberKey(obj, &m)
}

// memberKey reads member m of obj as orderKey does.
func memberKey(obj []byte, m *jsonrec.Member) (int64, error) {
	v := obj[m.Val:m.End]
	switch c := v[0]; {
	case c == '"':
		s := v[1 : len(v)-1]
		if m.ValEscaped {
			dec, err := m.Value(obj, false)
			if err != nil {
				return 0, err
			}
			str, _ := dec.(string)
			s = []byte(str)
		}
		return timekey.RFC3339(s)
	case c == '-' || (c >= '0' && c <= '9'):
		return timekey.Seconds(v)
	default:
		return 0, fmt.Errorf("%s is neither an RFC 3339 time nor a number", v)
	}
}

// mergeState is a merge's part of a checkpoint: the records it held at
// the barrier (read before it, not written yet) and the newest key
// written. A restart queues the records again, so they are neither lost
// nor read twice (the sources resume after them).
type mergeState struct {
	OrderBy string           `json:"order_by"`         // the field Newest was read from
	Newest  *int64           `json:"newest,omitempty"` // Unix ns
	Feeds   []mergeFeedState `json:"feeds,omitempty"`
}

type mergeFeedState struct {
	Source  string        `json:"source"`
	Path    string        `json:"path,omitempty"` // feed path ("" for a source without files)
	Origin  string        `json:"origin,omitempty"`
	Records []mergeRecord `json:"records"`
}

type mergeRecord struct {
	JSON   json.RawMessage `json:"json,omitempty"` // a parsed record (always, behind a merge)
	Line   []byte          `json:"line,omitempty"` // else the bytes (base64)
	Offset int64           `json:"offset"`         // in its file, for dead-letter lines
	Raw    bool            `json:"unparsed,omitempty"`
	// Orig is a parsed record's original line (base64), kept so that a
	// text sink's {{_line}} and a dead-letter line of a restored record
	// read as they would have without the restart. A state written before
	// it existed has none: such records fall back to their JSON, as
	// Record.Original does.
	Orig []byte `json:"orig,omitempty"`
}

// state encodes the merge state (see mergeState) as encoding/json would
// encode it (a parsed record's JSON compacted, lines in base64), with
// one allocation of the right size: a checkpoint every second of a merge
// holding thousands of records made encoding/json's intermediate copies
// a good part of W3's peak memory.
func (mg *merger) state() ([]byte, error) {
	size := 64 + len(mg.spec.OrderBy)*6
	var held []*mfeed
	for _, f := range mg.feeds {
		if f.head == len(f.q) {
			continue
		}
		held = append(held, f)
		size += 64 + (len(f.key.source)+len(f.key.path))*6
		for i := f.head; i < len(f.q); i++ {
			r := &f.q[i].rec
			if r.Origin != nil {
				size += len(r.Origin.Path) * 6 // at most once per feed; an upper bound
			}
			size += 64 + recordSize(r, f.q[i].valid)
		}
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	buf.WriteString(`{"order_by":`)
	buf.Write(jsonrec.AppendString(buf.AvailableBuffer(), mg.spec.OrderBy))
	if mg.written {
		buf.WriteString(`,"newest":`)
		buf.Write(strconv.AppendInt(buf.AvailableBuffer(), mg.newest, 10))
	}
	if len(held) > 0 {
		buf.WriteString(`,"feeds":[`)
	}
	for n, f := range held {
		if n > 0 {
			buf.WriteByte(',')
		}
		origin := ""
		for i := f.head; i < len(f.q); i++ {
			if o := f.q[i].rec.Origin; o != nil {
				origin = o.Path
				break
			}
		}
		buf.WriteString(`{"source":`)
		buf.Write(jsonrec.AppendString(buf.AvailableBuffer(), f.key.source))
		if f.key.path != "" {
			buf.WriteString(`,"path":`)
			buf.Write(jsonrec.AppendString(buf.AvailableBuffer(), f.key.path))
		}
		if origin != "" {
			buf.WriteString(`,"origin":`)
			buf.Write(jsonrec.AppendString(buf.AvailableBuffer(), origin))
		}
		buf.WriteString(`,"records":[`)
		for k := range len(f.q) - f.head {
			it := &f.q[f.head+k]
			r := &it.rec
			if k > 0 {
				buf.WriteByte(',')
			}
			start := buf.Len()
			buf.WriteString(`{"json":`)
			if js := buf.Len(); r.Parsed && appendCompact(buf, r.Raw, it.valid) {
				compact := buf.Bytes()[js:]
				writeOffset(buf, r.Offset)
				// The original line, unless it is the JSON itself (a
				// restored record without one reads its JSON as its line).
				if len(r.Line) > 0 && !bytes.Equal(r.Line, compact) {
					buf.WriteString(`,"orig":`)
					writeBase64(buf, r.Line)
				}
			} else {
				buf.Truncate(start)
				buf.WriteString(`{`)
				if len(r.Raw) > 0 {
					buf.WriteString(`"line":`)
					writeBase64(buf, r.Raw)
					buf.WriteByte(',')
				}
				buf.WriteString(`"offset":`)
				buf.Write(strconv.AppendInt(buf.AvailableBuffer(), r.Offset, 10))
				buf.WriteString(`,"unparsed":true`)
			}
			buf.WriteByte('}')
		}
		buf.WriteString(`]}`)
	}
	if len(held) > 0 {
		buf.WriteByte(']')
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// recordSize is at most what state writes of r besides its offset and
// punctuation: a parsed record's JSON (compacted: no longer than Raw) and
// its original line in base64 unless that is the same bytes, else Raw in
// base64 (also for a parsed record not known to be valid JSON: valid, see
// item). (It was the base64 of both always: a checkpoint of a merge
// holding 128 Ki records allocated two and a half times what it wrote.)
func recordSize(r *stages.Record, valid bool) int {
	if !r.Parsed {
		return base64.StdEncoding.EncodedLen(len(r.Raw))
	}
	n := len(r.Raw)
	if len(r.Line) > 0 && (len(r.Line) != len(r.Raw) || unsafe.SliceData(r.Line) != unsafe.SliceData(r.Raw)) {
		n += base64.StdEncoding.EncodedLen(len(r.Line))
	}
	if !valid && n < base64.StdEncoding.EncodedLen(len(r.Raw)) {
		n = base64.StdEncoding.EncodedLen(len(r.Raw)) // written as a line if it is not valid JSON
	}
	return n
}

// appendCompact writes the JSON text b to buf without insignificant
// whitespace, as json.Compact does; false (and nothing written) if b is
// not valid JSON. The common case, a valid object compact already
// (parse_json keeps a compact line's bytes), is checked with jsonrec and
// copied, which costs a fraction of json.Compact's state machine: a
// merge holding many records encodes them all at every checkpoint. valid
// says b is known to be a valid object (its step indexed it): then a
// compact b is copied without that check, most of the cost that is left.
func appendCompact(buf *bytes.Buffer, b []byte, valid bool) bool {
	if !hasSpace(b) {
		if valid {
			buf.Write(b)
			return true
		}
		if _, err := jsonrec.ValidObject(b); err == nil {
			buf.Write(b)
			return true
		}
	}
	return json.Compact(buf, b) == nil
}

// hasSpace reports whether JSON text b has whitespace outside its
// strings (or is empty).
func hasSpace(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	in := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if in {
			switch c {
			case '\\':
				i++
			case '"':
				in = false
			}
			continue
		}
		switch c {
		case '"':
			in = true
		case ' ', '\t', '\n', '\r':
			return true
		}
	}
	return false
}

func writeOffset(buf *bytes.Buffer, off int64) {
	buf.WriteString(`,"offset":`)
	buf.Write(strconv.AppendInt(buf.AvailableBuffer(), off, 10))
}

// writeBase64 writes b as a JSON string in standard base64, as
// encoding/json writes a []byte.
func writeBase64(buf *bytes.Buffer, b []byte) {
	buf.WriteByte('"')
	buf.Write(base64.StdEncoding.AppendEncode(buf.AvailableBuffer(), b))
	buf.WriteByte('"')
}

// restore queues the records of a committed merge state (before the
// sources start). Their keys are read again, so a changed order_by
// applies; records without a usable key are returned as rejects.
func (mg *merger) restore(data []byte, now time.Time) ([]stages.Reject, error) {
	if len(data) == 0 {
		return nil, nil
	}
	var st mergeState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("bad merge state: %w", err)
	}
	if st.Newest != nil && st.OrderBy == mg.spec.OrderBy {
		// (With another order_by the newest key says nothing about the
		// new keys: the order starts afresh.)
		mg.newest, mg.written = *st.Newest, true
	}
	var bad []stages.Reject
	for _, fs := range st.Feeds {
		size := 0
		for _, r := range fs.Records {
			size += len(r.JSON) + len(r.Line) + len(r.Orig)
		}
		buf := make([]byte, 0, size)
		o := &stages.Origin{Source: fs.Source, Path: fs.Origin}
		b := &stages.Batch{Records: make([]stages.Record, 0, len(fs.Records))}
		for _, r := range fs.Records {
			start := len(buf)
			parsed := !r.Raw
			var line []byte
			if parsed {
				if r.Orig != nil {
					buf = append(buf, r.Orig...)
					line = buf[start:len(buf):len(buf)]
					start = len(buf)
				}
				buf = append(buf, r.JSON...)
			} else {
				buf = append(buf, r.Line...)
			}
			b.Records = append(b.Records, stages.Record{Raw: buf[start:len(buf):len(buf)], Line: line, Parsed: parsed, Origin: o, Offset: r.Offset})
		}
		mg.add1(feedKey{fs.Source, fs.Path}, msg{b: b}, now, &bad)
	}
	return bad, nil
}
