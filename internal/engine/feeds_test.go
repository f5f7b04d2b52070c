package engine

import (
	"context"
	"fmt"
	"testing"

	"github.com/etld/etld/internal/stages"
	"github.com/rs/zerolog"
)

// fullBatch is a batch that uses up a feed's whole record credit.
func fullBatch() *stages.Batch {
	return &stages.Batch{Records: make([]stages.Record, feedCreditRecords)}
}

// TestGateClaim: the ticket of a batch a gated source took travels with
// the batch Read returned; a batch taken but not returned gives its room
// back at once instead of holding the feed forever.
func TestGateClaim(t *testing.T) {
	g := newFeedBoard().gate("s", true)
	g.Register("f")
	b := fullBatch()
	g.Take("f", b)
	if g.Allow("f") {
		t.Fatal("room left after a batch of the whole credit was taken")
	}
	tk := g.claim(b)
	if tk == nil || tk.feed != (feedKey{"s", "f"}) {
		t.Fatalf("claimed ticket %+v, want one of feed s/f", tk)
	}
	if g.Allow("f") {
		t.Fatal("room came back when the batch was claimed, before it was consumed")
	}
	msg{b: b, t: tk}.release()
	if !g.Allow("f") {
		t.Fatal("no room after the batch was consumed")
	}

	// Taken, then not returned by Read (an error, or another batch).
	for _, returned := range []*stages.Batch{nil, {}} {
		g.Take("f", fullBatch())
		if tk := g.claim(returned); tk != nil {
			t.Fatalf("claim(%v) returned the ticket of another batch", returned)
		}
		if !g.Allow("f") {
			t.Fatalf("claim(%v) kept the room of a batch Read did not return", returned)
		}
	}
}

// TestEmitSharesTicket: a batch sent to two downstreams is copied, and
// its feed's room comes back only once both copies are consumed.
func TestEmitSharesTicket(t *testing.T) {
	g := newFeedBoard().gate("s", false)
	g.Register("")
	o1, o2 := newEdge(), newEdge()
	e := &emitter{stage: "s", outs: []chan msg{o1, o2}, hard: context.Background(), m: NewMetrics().stage("p", "s"), badLog: zerolog.Nop()}
	b := fullBatch()
	if !e.emit(msg{b: b, t: g.take("", b)}) {
		t.Fatal("emit reported a hard stop")
	}
	m1, m2 := <-o1, <-o2
	if m1.t == nil || m1.t != m2.t {
		t.Fatalf("copies carry tickets %p and %p, want the same one", m1.t, m2.t)
	}
	m1.release()
	if g.Allow("") {
		t.Fatal("room came back while a copy is still in flight")
	}
	m2.release()
	if !g.Allow("") {
		t.Fatal("no room after both copies were consumed")
	}
}

// TestWorkerComputesMergeKeys: a worker in front of a merge sends each
// batch with its records' merge keys beside it (noKey when unusable), and
// keeps the batch's ticket.
func TestWorkerComputesMergeKeys(t *testing.T) {
	r := newWorkerRig(t, true, 2)
	g := newFeedBoard().gate("s", false)
	o := &stages.Origin{Source: "s"}
	b := &stages.Batch{Records: []stages.Record{rec(o, 0, `{"ts":2}`), rec(o, 1, `{}`)}}
	tk := g.take("", b)
	r.w.orderBy = "ts"
	r.in <- msg{b: b, t: tk}
	r.finish(t)
	if len(r.out) != 1 {
		t.Fatalf("%d batches out, want 1", len(r.out))
	}
	m := r.out[0]
	if m.keysOf != "ts" || len(m.keys) != 2 || m.keys[0] != 2e9 || m.keys[1] != noKey {
		t.Errorf("keys %v of %q, want [2e9 noKey] of ts", m.keys, m.keysOf)
	}
	if m.t != tk {
		t.Error("the worker lost the batch's ticket")
	}
}

// TestBoardBudget: the feeds of a board share one budget. Once the
// feeds together have boardRecords in flight, a feed with two batches in
// flight gets no more room (though under its own credit), while a feed
// with fewer always may take one more, so that a merge waiting for it is
// never stalled. Batches are asked to be a share of the
// budget among the open feeds.
func TestBoardBudget(t *testing.T) {
	fb := newFeedBoard()
	g := fb.gate("s", true)
	const feeds = 200
	per := boardRecords/(feeds-1) + 1 // under a feed's credit; all but one past the budget
	if per >= feedCreditRecords {
		t.Fatalf("test needs feeds x credit > budget (per %d)", per)
	}
	var tickets []*ticket
	for i := range feeds {
		p := fmt.Sprint("f", i)
		g.Register(p)
		if r, _ := g.BatchLimit(); i == 0 && r != maxBatchRecords {
			t.Errorf("batch limit with one open feed = %d records, want %d", r, maxBatchRecords)
		}
		tickets = append(tickets, g.take(p, &stages.Batch{Records: make([]stages.Record, per/2)}),
			g.take(p, &stages.Batch{Records: make([]stages.Record, per-per/2)}))
	}
	if r, b := g.BatchLimit(); r != max(minBatchRecords, boardRecords/feeds) || b != max(minBatchBytes, boardBytes/feeds) {
		t.Errorf("batch limit with %d open feeds = %d records, %d bytes; want a share of the budget", feeds, r, b)
	}
	if g.Allow("f0") {
		t.Error("a feed with two batches in flight got room past the board's budget")
	}
	g.Register("late")
	if !g.Allow("late") {
		t.Error("a feed with nothing in flight got no room: the merge would wait for it forever")
	}
	late := g.take("late", &stages.Batch{Records: make([]stages.Record, per)})
	if !g.Allow("late") {
		t.Error("a feed with one batch in flight got no room for the next")
	}
	late.drop()
	tickets[0].drop()
	if !g.Allow("f0") {
		t.Error("no room for a feed one of whose batches was consumed")
	}
	if g.Allow("f1") {
		t.Error("one batch consumed made room for every feed: the budget is not shared")
	}
	for i := 1; i < feeds; i++ {
		tickets[i].drop()
	}
	if !g.Allow("f199") {
		t.Error("no room once half the budget came back")
	}
	for _, tk := range tickets[feeds:] {
		tk.drop()
	}
	if fb.records != 0 || fb.bytes != 0 {
		t.Errorf("board has %d records, %d bytes in flight after every ticket was dropped", fb.records, fb.bytes)
	}
	for i := range feeds {
		g.End(fmt.Sprint("f", i))
	}
	if fb.open != 1 {
		t.Errorf("%d open feeds after all but one ended, want 1", fb.open)
	}
}
