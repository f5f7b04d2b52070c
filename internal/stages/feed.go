package stages

// A feed is one stream of records that an ordered merge keeps apart from
// the others (SPEC §5): one file of a file source (a rotated file and its
// successor under the same name are one feed), or the whole stream of a
// source without files.
//
// When a source feeds a merging sink, the runtime limits how much of each
// feed may be in flight between the source and the merge, so that one
// feed far ahead of the others is held back at its source instead of
// being buffered by the merge without bound. The limit counts records and
// bytes, not batches, so that a live feed read in small batches is not
// throttled more than one read in full ones. The bookkeeping (which feed
// a batch belongs to, when its credit comes back) stays with the runtime:
// a batch does not carry it.

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
	// Take marks b, the batch Read is about to return, as a batch of the
	// feed (b holds records of that feed only): b's records and bytes
	// count against the feed's room until the runtime has consumed b.
	// Call it once per batch, from Read, and return b from that same
	// Read; the runtime matches the two when Read returns (a batch taken
	// and not returned gives its room back at once).
	Take(path string, b *Batch)
	// End announces that the feed will send nothing more (call it after
	// Take for its last batch).
	End(path string)
	// Changed is closed when some feed gets room again; call it again
	// for the next change.
	Changed() <-chan struct{}
}

// FeedBatchLimiter is implemented by a FeedGate that asks for batches
// smaller than a source's usual ones: when many feeds share one merge's
// memory, each feed's batch is a share of it. A GatedSource that reads a
// batch of one feed reads at most BatchLimit records and about as many
// bytes (at least one record); other sources may ignore it.
type FeedBatchLimiter interface {
	BatchLimit() (records, bytes int)
}

// GatedSource is implemented by sources that apply a FeedGate per feed.
// The runtime calls SetFeedGate before Open when the source feeds an
// ordered merge.
type GatedSource interface {
	SetFeedGate(g FeedGate)
}
