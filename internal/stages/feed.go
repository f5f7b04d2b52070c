package stages

import "sync/atomic"

// A feed is one stream of records that an ordered merge keeps apart from
// the others (SPEC §5): one file of a file source (a rotated file and its
// successor under the same name are one feed), or the whole stream of a
// source without files.
//
// When a source feeds a merging sink, the runtime limits how many batches
// of each feed may be in flight between the source and the merge, so that
// one feed far ahead of the others is held back at its source instead of
// being buffered by the merge without bound. The limit counts records and
// bytes, not batches, so that a live feed read in small batches is not
// throttled more than one read in full ones. Every batch of such a source
// carries a Ticket, handed back when the batch is released.

// Ticket is a batch's place in its feed's flow control. It is released
// when the last holder of the batch (or of a copy of it, see Share)
// releases it.
type Ticket struct {
	// Feed identifies the feed for the merge (set by the runtime).
	Feed    any
	refs    atomic.Int32
	release func()
}

// NewTicket returns a ticket of feed that calls release once every holder
// let go.
func NewTicket(feed any, release func()) *Ticket {
	t := &Ticket{Feed: feed, release: release}
	t.refs.Store(1)
	return t
}

func (t *Ticket) drop() {
	if t != nil && t.refs.Add(-1) == 0 {
		t.release()
	}
}

// SetTicket attaches t to b: Release hands it back.
func (b *Batch) SetTicket(t *Ticket) { b.ticket = t }

// Ticket returns b's flow-control ticket, or nil.
func (b *Batch) Ticket() *Ticket { return b.ticket }

// ShareTicket makes c, a copy of b sent to another consumer, hold b's
// ticket too: the feed's slot is free only once both are released.
func (b *Batch) ShareTicket(c *Batch) {
	if b.ticket != nil {
		b.ticket.refs.Add(1)
		c.ticket = b.ticket
	}
}

// FeedGate is the flow control of one source's feeds towards an ordered
// merge. A source that knows its feeds (a file source: one per file)
// implements GatedSource and uses it to read only feeds with room, one
// feed per batch; other sources are held back by the runtime as a whole.
type FeedGate interface {
	// Register announces a feed (by its origin path) before its first
	// batch: a finite feed holds the merge back until it ends.
	Register(path string)
	// Allow reports whether the feed has room for one more batch.
	Allow(path string) bool
	// Take returns the ticket for b, a batch of the feed (records of that
	// feed only): b's records and bytes count against the feed's room
	// until b is released.
	Take(path string, b *Batch) *Ticket
	// End announces that the feed will send nothing more (call it after
	// Take for its last batch).
	End(path string)
	// Changed is closed when some feed gets room again; call it again
	// for the next change.
	Changed() <-chan struct{}
}

// GatedSource is implemented by sources that apply a FeedGate per feed.
// The runtime calls SetFeedGate before Open when the source feeds an
// ordered merge.
type GatedSource interface {
	SetFeedGate(g FeedGate)
}
