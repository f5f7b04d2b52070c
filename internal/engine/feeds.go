package engine

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/etld/etld/internal/stages"
)

// feedCreditRecords and feedCreditBytes bound what one feed may have in
// flight between its source and an ordered merge (in channels, in workers,
// or buffered by the merge): a source reads a feed only while it is under
// both. The merge never stops reading its input, so a slow feed is never
// stuck behind a fast one; instead a feed that is far ahead runs out of
// credit and its source stops reading it until the merge has written some
// of its records. A batch (at most 1024 records or 256 KiB) may go past
// the limit, so the merge holds at most 5 x 1024 records or 1.25 MiB per
// feed (see docs/merge.md).
//
// boardRecords and boardBytes bound what all the feeds of a pipeline's
// merges may have in flight together, so that a merge of a thousand feeds
// does not hold a thousand times one feed's credit. A feed with fewer
// than two batches in flight may always take one more (within its own
// credit), whatever the total: a merge must see the head of every feed to decide, so the budget
// can slow a feed down but never stall the merge, and the second batch is
// on its way while the merge writes the first (with one, the merge waited
// for the source at the end of every batch). To keep those batches small
// when there are many feeds, the board asks gated sources for batches of
// a share of the budget (batchLimit): at least minBatchRecords records or
// minBatchBytes bytes, at most a source's usual 1024 or 256 KiB. So the
// feeds hold at most the budget plus two such batches each.
const (
	feedCreditRecords = 4 * 1024
	feedCreditBytes   = 1 << 20

	// 64 Ki records: at 1,000 feeds the merge held about three times
	// the budget, its records read back long after they were queued
	// (cache misses) and encoded into every checkpoint; with half of
	// 128 Ki, MANYFEEDS at 1,000 feeds used the same CPU or less, and
	// 215-237 MiB peak RSS instead of 323-427 (100 feeds: the same CPU).
	boardRecords    = 64 * 1024
	boardBytes      = 32 << 20
	minBatchRecords = 32
	minBatchBytes   = 8 << 10
	maxBatchRecords = 1024
	maxBatchBytes   = 256 << 10
	batchShare      = 1 // batches per feed in the budget
)

// feedKey names a feed: a source and, for a file source, the file's path.
type feedKey struct {
	source, path string
}

// feedBoard is the flow control and the end-of-feed bookkeeping of the
// feeds of a pipeline's sources that reach an ordered merge. It outlives
// reconfigurations, like the pipeline.
type feedBoard struct {
	mu      sync.Mutex
	feeds   map[feedKey]*feedInfo
	changed chan struct{} // closed (and replaced) at every change
	// dirty holds the feeds whose state changed since their merge last
	// looked (drain), so that a merge of many feeds looks at those only:
	// the paths by source, so that a merge looks at its sources' only.
	dirty map[string]map[string]struct{}
	// records and bytes are in flight over all feeds (see boardRecords);
	// open counts the feeds registered and not ended, which share it.
	records, bytes, open int
}

// feedInfo is what the board knows of one feed.
type feedInfo struct {
	owner       *sourceGate // the source (instance) that registered it last
	finite      bool        // its source ends by itself: the feed holds the merge until it ends
	ended       bool        // its source said it sends nothing more
	outstanding int         // batches taken and not released yet
	records     int         // their records
	bytes       int         // and bytes
}

func newFeedBoard() *feedBoard {
	return &feedBoard{feeds: map[feedKey]*feedInfo{}, changed: make(chan struct{}), dirty: map[string]map[string]struct{}{}}
}

// notify wakes everybody waiting for a change. Called with mu held.
func (fb *feedBoard) notify() {
	close(fb.changed)
	fb.changed = make(chan struct{})
}

func (fb *feedBoard) changes() <-chan struct{} {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return fb.changed
}

// touch marks a feed as changed for its merge. Called with mu held.
func (fb *feedBoard) touch(k feedKey) {
	d := fb.dirty[k.source]
	if d == nil {
		d = map[string]struct{}{}
		fb.dirty[k.source] = d
	}
	d[k.path] = struct{}{}
}

func (fb *feedBoard) feed(k feedKey, finite bool) *feedInfo {
	f := fb.feeds[k]
	if f == nil {
		f = &feedInfo{finite: finite}
		fb.feeds[k] = f
		fb.open++
		fb.touch(k)
		fb.notify()
	}
	return f
}

// end marks f (of key k) ended, and reports whether it was not already.
// Called with mu held.
func (fb *feedBoard) end(k feedKey, f *feedInfo) bool {
	if f.ended {
		return false
	}
	f.ended = true
	fb.open--
	fb.touch(k)
	return true
}

// feedView is a copy of a feed's state for the merge.
type feedView struct {
	key feedKey
	feedInfo
}

// drain appends to out the feeds of the given sources that changed since
// the last drain (every one of them with all), and forgets that they did.
func (fb *feedBoard) drain(sources map[string]int, all bool, out []feedView) []feedView {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	if all {
		for k, f := range fb.feeds {
			if _, ok := sources[k.source]; ok {
				out = append(out, feedView{k, *f})
			}
		}
		for src := range sources {
			clear(fb.dirty[src])
		}
		return out
	}
	for src := range sources {
		for path := range fb.dirty[src] {
			k := feedKey{src, path}
			if f := fb.feeds[k]; f != nil {
				out = append(out, feedView{k, *f})
			}
		}
		clear(fb.dirty[src]) // kept: it fills again at once
	}
	return out
}

// forget removes a feed that ended with nothing in flight; false when it
// is not in that state (registered again meanwhile).
func (fb *feedBoard) forget(k feedKey) bool {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	f := fb.feeds[k]
	if f == nil || !f.ended || f.outstanding > 0 {
		return f == nil
	}
	delete(fb.feeds, k)
	delete(fb.dirty[k.source], k.path)
	return true
}

// status returns a feed's state; ok is false for a feed never registered.
func (fb *feedBoard) status(k feedKey) (f feedInfo, ok bool) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	if p := fb.feeds[k]; p != nil {
		return *p, true
	}
	return feedInfo{}, false
}

// gate returns the stages.FeedGate of one source.
func (fb *feedBoard) gate(source string, finite bool) *sourceGate {
	return &sourceGate{fb: fb, source: source, finite: finite}
}

// sourceGate is one source's view of the board (stages.FeedGate).
type sourceGate struct {
	fb     *feedBoard
	source string
	finite bool
	// taken holds the tickets of batches the source took during the Read
	// in progress, until the runner claims the one of the batch Read
	// returned (claim).
	taken []takenBatch
}

type takenBatch struct {
	b *stages.Batch
	t *ticket
}

// ticket is a batch's place in its feed's flow control: the batch's
// records and bytes count against the feed until the last holder of the
// batch (or of a copy of it, see share) drops the ticket. It travels
// beside the batch, in its msg.
type ticket struct {
	feed    feedKey
	refs    atomic.Int32
	release func()
}

func newTicket(feed feedKey, release func()) *ticket {
	t := &ticket{feed: feed, release: release}
	t.refs.Store(1)
	return t
}

// drop lets go of one holder's share; the last one frees the feed's room.
func (t *ticket) drop() {
	if t != nil && t.refs.Add(-1) == 0 {
		t.release()
	}
}

// share returns t for one more holder (a copy of the batch sent to
// another consumer): the room is free only once both dropped it.
func (t *ticket) share() *ticket {
	if t != nil {
		t.refs.Add(1)
	}
	return t
}

var _ stages.FeedGate = (*sourceGate)(nil)

func (g *sourceGate) Register(path string) {
	g.fb.mu.Lock()
	defer g.fb.mu.Unlock()
	f := g.fb.feed(feedKey{g.source, path}, g.finite)
	f.owner, f.finite = g, g.finite
	g.fb.touch(feedKey{g.source, path})
	if f.ended { // a source that replaced an ended one reads it again
		f.ended = false
		g.fb.open++
		g.fb.notify()
	}
}

func (g *sourceGate) Allow(path string) bool {
	g.fb.mu.Lock()
	defer g.fb.mu.Unlock()
	return g.fb.room(g.fb.feeds[feedKey{g.source, path}])
}

// room reports whether feed f may take one more batch: it is under its
// own credit, and it has fewer than two batches in flight or the board is
// under its budget. Called with mu held.
func (fb *feedBoard) room(f *feedInfo) bool {
	return f == nil || (f.records < feedCreditRecords && f.bytes < feedCreditBytes &&
		(f.outstanding < 2 || (fb.records < boardRecords && fb.bytes < boardBytes)))
}

var _ stages.FeedBatchLimiter = (*sourceGate)(nil)

// BatchLimit implements stages.FeedBatchLimiter: a batch of one feed is
// at most an equal share of the board's budget among the open feeds.
func (g *sourceGate) BatchLimit() (records, bytes int) {
	g.fb.mu.Lock()
	open := max(1, g.fb.open)
	g.fb.mu.Unlock()
	return batchLimit(open)
}

func batchLimit(open int) (records, bytes int) {
	return min(maxBatchRecords, max(minBatchRecords, boardRecords/batchShare/open)),
		min(maxBatchBytes, max(minBatchBytes, boardBytes/batchShare/open))
}

// Take implements stages.FeedGate: the ticket waits for claim.
func (g *sourceGate) Take(path string, b *stages.Batch) {
	t := g.take(path, b)
	g.fb.mu.Lock()
	g.taken = append(g.taken, takenBatch{b, t})
	g.fb.mu.Unlock()
}

// claim returns the ticket of b, the batch Read returned (nil when none
// was taken), and drops the tickets of batches taken but not returned, so
// that their room is not lost. Called on the source's goroutine after
// every Read.
func (g *sourceGate) claim(b *stages.Batch) *ticket {
	g.fb.mu.Lock()
	taken := g.taken
	g.taken = nil
	g.fb.mu.Unlock()
	var t *ticket
	for _, tb := range taken {
		if b != nil && tb.b == b && t == nil {
			t = tb.t
		} else {
			tb.t.drop()
		}
	}
	return t
}

// take charges b's records and bytes to the feed of path and returns the
// ticket that gives them back.
func (g *sourceGate) take(path string, b *stages.Batch) *ticket {
	k := feedKey{g.source, path}
	n, size := len(b.Records)+len(b.Rejects), 0
	for i := range b.Records {
		size += len(b.Records[i].Raw)
	}
	fb := g.fb
	fb.mu.Lock()
	f := fb.feed(k, g.finite)
	f.outstanding++
	f.records += n
	f.bytes += size
	fb.records += n
	fb.bytes += size
	fb.mu.Unlock()
	return newTicket(k, func() {
		fb.mu.Lock()
		f.outstanding--
		f.records -= n
		f.bytes -= size
		fb.records -= n
		fb.bytes -= size
		if fb.feeds[k] == f {
			fb.touch(k)
		}
		fb.notify()
		fb.mu.Unlock()
	})
}

func (g *sourceGate) End(path string) {
	g.fb.mu.Lock()
	defer g.fb.mu.Unlock()
	k := feedKey{g.source, path}
	if g.fb.end(k, g.fb.feed(k, g.finite)) {
		g.fb.notify()
	}
}

func (g *sourceGate) Changed() <-chan struct{} { return g.fb.changes() }

// endAll ends every feed the source registered and no successor took
// over: it stopped.
func (g *sourceGate) endAll() {
	g.fb.mu.Lock()
	defer g.fb.mu.Unlock()
	for k, f := range g.fb.feeds {
		if k.source == g.source && (f.owner == g || f.owner == nil) {
			g.fb.end(k, f)
		}
	}
	g.fb.notify()
}

// full reports whether some feed of the source has no credit left.
func (g *sourceGate) full() bool {
	g.fb.mu.Lock()
	defer g.fb.mu.Unlock()
	for k, f := range g.fb.feeds {
		if k.source == g.source && !g.fb.room(f) {
			return true
		}
	}
	return false
}

// waitRoom blocks while some feed of the source has no credit, until ctx
// is done. For sources that do not gate their feeds themselves.
func (g *sourceGate) waitRoom(ctx context.Context) {
	for {
		ch := g.Changed() // before the check, so no change is missed
		if !g.full() {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}
