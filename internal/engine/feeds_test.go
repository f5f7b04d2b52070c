package engine

import (
	"context"
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
