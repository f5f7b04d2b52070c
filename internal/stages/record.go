// Package stages defines the contract between the etld runtime and the
// stage implementations: records and batches, the Source, Step and Sink
// interfaces, and the Registry that maps a stage `type` to its factory.
//
// Implementations are synchronous. The runtime (internal/engine) owns
// goroutines, channels, retries and shutdown order; a stage never starts a
// goroutine that outlives its Close.
package stages

import (
	"slices"
	"strconv"
	"sync"
	"unsafe"

	"github.com/etld/etld/internal/jsonrec"
)

// Origin describes where records come from. One Origin is shared by every
// record read from the same file (or stream), so records carry a pointer,
// not a copy.
type Origin struct {
	Source string // id of the source stage
	Path   string // file path; "-" for stdin; "" for generated records
}

// Record is one line of input plus its metadata.
//
// Raw is the line without its newline. After a parsing step succeeds,
// Parsed is true and Raw holds the record's fields as one JSON object
// (steps that change fields rewrite Raw), so a sink always writes Raw
// followed by a newline: the original bytes when the record was never
// parsed, else its fields as one JSON object.
//
// Line is the original line of a parsed record, for a text template's
// {{_line}} and dead-letter lines (see Original). The first parsing step
// sets it with SetParsed, to the old Raw without a copy: those bytes are
// in a buffer the batch owns (or that nothing else references, see Step),
// so they live as long as Raw's. Whoever copies a record into other
// memory (a second downstream's copy of a batch, a checkpoint) copies
// Line too.
type Record struct {
	Raw    []byte
	Line   []byte // nil until the record is parsed
	Parsed bool
	Origin *Origin
	Offset int64 // byte offset of the line in its file; -1 when unknown
}

// SetParsed makes raw, one JSON object, r's fields. The first time (r
// not parsed yet) the old Raw becomes r.Line.
func (r *Record) SetParsed(raw []byte) {
	if !r.Parsed && r.Line == nil {
		r.Line = r.Raw
		if r.Line == nil {
			r.Line = []byte{} // an empty line is still a line
		}
	}
	r.Raw, r.Parsed = raw, true
}

// Original returns the original line: Line when the record was parsed,
// else Raw.
func (r *Record) Original() []byte {
	if r.Line != nil {
		return r.Line
	}
	return r.Raw
}

// OriginString formats the record's origin as "path:offset" for
// dead-letter lines and logs.
func (r *Record) OriginString() string {
	if r.Origin == nil {
		return ""
	}
	if r.Offset < 0 {
		return r.Origin.Path
	}
	return r.Origin.Path + ":" + strconv.FormatInt(r.Offset, 10)
}

// Reject is a bad record: it is counted, logged (rate-limited) and sent to
// the pipeline's dead-letter sink when one is configured.
type Reject struct {
	Record Record
	Stage  string // id of the stage that rejected it (filled in by the runtime when empty)
	Err    error
	Length int64 // original length when Record.Raw was cut at max_line_bytes; 0 otherwise
}

// Batch is the unit that travels through the pipeline's channels. A batch
// has exactly one owner at a time: whoever receives it from a channel may
// modify it in place and pass it on; nobody keeps a reference after sending.
// Once consumed it is released (see Release), and the buffers it owns are
// reused. What the runtime keeps about a batch in flight (its feed's flow
// control, an ordered merge's keys) travels beside it, not in it.
//
// A batch holds its good records in one of two forms: Records, or line
// runs (AddLines), lines a source read, counted but not split, for a
// sink that writes them as they are. The invariant of the second form:
// Records is empty, and the runs, in order, are the records, each run n
// newline-terminated lines back to back in a buffer the batch owns. Len
// counts both forms; SplitRuns turns runs into exactly the Records the
// source would have made, and the runtime calls it before any stage
// other than a LineRunWriter sink sees the batch (see span.go).
type Batch struct {
	Records []Record
	Rejects []Reject

	// IndexFields asks the steps to index the members of the records
	// they write (see FieldIndex): the runtime sets it when a step or an
	// ordered merge's key comes after them, as the index costs a parser
	// about a tenth of its time.
	IndexFields bool

	owned  [][]byte    // buffers only the records point into (see Own)
	runs   []lineRun   // line runs: vouched for (MarkLines), or the records themselves (AddLines)
	lines  int         // records held only as runs (see AddLines); 0 when Records holds them all
	fields *FieldIndex // where the members of parsed records are (see Fields)
}

// Len is the number of good records in the batch, in Records or, for a
// batch of line runs, in its runs (see AddLines).
func (b *Batch) Len() int { return len(b.Records) + b.lines }

// Field index.
//
// A parsed record's fields are one JSON object in Raw, so every step that
// reads a field, and the ordered merge reading its order_by key, would
// walk the object from its start to find it. A step that writes Raw knows
// where the members it wrote are, so it hands their positions to the
// steps after it: it builds a FieldIndex of the records it wrote and sets
// it on the batch (SetFieldIndex), and a later step asks Fields(i) before
// scanning record i. Walking the members again was about 40% of the CPU
// of a three-feed text timeline.
//
// An entry is tied to the Raw it was made for (its first byte's address
// and its length): a step that gives record i a new Raw without a new
// entry, moves records without MoveFields, or replaces Records makes
// Fields(i) report nothing, and the next reader scans. A step that
// changes Raw's bytes in place, keeping the slice, must DropFields.

// FieldIndex holds the top-level members of some records of one batch
// (see SetFieldIndex). Get one from NewFieldIndex.
type FieldIndex struct {
	ents    []fieldEntry // by record index; raw nil when unset
	spans   []jsonrec.Span
	records int // how many records the index is for, to size spans
}

type fieldEntry struct {
	raw        *byte  // &Raw[0] of the record the entry describes
	n          uint32 // len(Raw)
	closeBrace uint32
	lo, hi     uint32 // its members, in FieldIndex.spans
}

// Spans are jsonrec.Spans, a Member in 16 bytes instead of 40: the index
// of a batch of wide records is a few hundred KiB less, per batch in a
// worker.

var fieldIndexes sync.Pool // of *FieldIndex

// NewFieldIndex returns an empty index for a batch of records records,
// reusing one a batch let go. A step calls it when the batch's
// IndexFields is set; a nil *FieldIndex takes Adds and drops them.
func NewFieldIndex(records int) *FieldIndex {
	x, _ := fieldIndexes.Get().(*FieldIndex)
	if x == nil {
		x = new(FieldIndex)
	}
	x.records = records
	x.ents = slices.Grow(x.ents, records)
	return x
}

// Add records that ms (whose offsets are into raw) are the members of
// raw, the Raw of record i, and closeBrace the offset of its closing
// brace. ms is copied.
func (x *FieldIndex) Add(i int, raw []byte, ms []jsonrec.Member, closeBrace int) {
	if x == nil || len(raw) == 0 || len(raw) >= jsonrec.MaxSpanOffset {
		return
	}
	lo := len(x.spans)
	if cap(x.spans)-lo < len(ms) {
		// Room for as many members in each record left: records of one
		// feed look alike.
		x.spans = slices.Grow(x.spans, len(ms)*max(1, x.records-i))
	}
	x.spans = x.spans[:lo+len(ms)]
	dst := x.spans[lo:]
	for k := range dst {
		dst[k] = jsonrec.SpanOf(&ms[k])
	}
	x.set(i, raw, lo, closeBrace)
}

// Spans returns the index's spans, for a parser to append the members of
// record i to (jsonrec.ValidObjectSpans does) and hand them back with
// AddSpans. x must not be nil.
func (x *FieldIndex) Spans() []jsonrec.Span { return x.spans }

// AddSpans records that spans[lo:] are the members of raw, the Raw of
// record i, and closeBrace the offset of its closing brace: spans is
// what Spans returned, with those members appended (without a copy).
// A closeBrace < 0 (the record was not indexed) adds nothing.
func (x *FieldIndex) AddSpans(i int, raw []byte, spans []jsonrec.Span, lo, closeBrace int) {
	x.spans = spans
	if closeBrace < 0 || len(raw) == 0 || len(raw) >= jsonrec.MaxSpanOffset {
		x.spans = spans[:lo]
		return
	}
	x.set(i, raw, lo, closeBrace)
}

// set makes x.spans[lo:] the members of raw, record i.
func (x *FieldIndex) set(i int, raw []byte, lo, closeBrace int) {
	for len(x.ents) <= i {
		x.ents = append(x.ents, fieldEntry{})
	}
	x.ents[i] = fieldEntry{raw: unsafe.SliceData(raw), n: uint32(len(raw)), closeBrace: uint32(closeBrace), lo: uint32(lo), hi: uint32(len(x.spans))}
}

// maxPooledSpans bounds the members a recycled index keeps room for, so
// that one batch of very wide records does not pin its memory.
const maxPooledSpans = 1 << 16

// reset empties x for reuse.
func (x *FieldIndex) reset() {
	clear(x.ents) // drop the pointers into released buffers
	x.ents, x.spans = x.ents[:0], x.spans[:0]
	if cap(x.spans) > maxPooledSpans {
		x.spans = nil
	}
}

// SetFieldIndex makes x the batch's field index, replacing (and
// recycling) the one it had; b owns x from then on. x may be nil.
func (b *Batch) SetFieldIndex(x *FieldIndex) {
	b.DropFields()
	b.fields = x
}

// entry returns record i's index entry, or nil when it has none that
// describes its current Raw.
func (b *Batch) entry(i int) *fieldEntry {
	x := b.fields
	if x == nil || i >= len(x.ents) || i >= len(b.Records) {
		return nil
	}
	e := &x.ents[i]
	raw := b.Records[i].Raw
	if e.raw == nil || e.raw != unsafe.SliceData(raw) || int(e.n) != len(raw) {
		return nil
	}
	return e
}

// Fields appends the members of record i to dst, and returns it with
// the offset of the record's closing brace, as jsonrec.Members would find
// them in its Raw, when the step that wrote that Raw indexed it; ok is
// false otherwise (dst unchanged), and the caller walks Raw.
func (b *Batch) Fields(i int, dst []jsonrec.Member) (ms []jsonrec.Member, closeBrace int, ok bool) {
	e := b.entry(i)
	if e == nil {
		return dst, 0, false
	}
	spans := b.fields.spans[e.lo:e.hi]
	n := len(dst)
	dst = slices.Grow(dst, len(spans))[:n+len(spans)]
	out := dst[n:]
	for k := range out {
		out[k] = spans[k].Member()
	}
	return dst, int(e.closeBrace), true
}

// Field finds the first member of record i named name, as jsonrec.Find
// would, when record i is indexed (ok); found is false when it has none.
func (b *Batch) Field(i int, name string) (m jsonrec.Member, found, ok bool) {
	e := b.entry(i)
	if e == nil {
		return jsonrec.Member{}, false, false
	}
	raw := b.Records[i].Raw
	if len(name)+2 > len(raw) { // longer than any key of raw
		return jsonrec.Member{}, false, true
	}
	spans := b.fields.spans[e.lo:e.hi]
	want := uint32(len(name) + 2)
	for k := nextKey(spans, 0, want); k < len(spans); k = nextKey(spans, k+1, want) {
		sp := &spans[k]
		if !sp.KeyEscaped() { // a key without escapes: compare it as is
			if string(raw[sp.Key+1:sp.KeyEnd-1]) == name {
				return sp.Member(), true, true
			}
			continue
		}
		if m := sp.Member(); m.KeyIs(raw, name) {
			return m, true, true
		}
	}
	return jsonrec.Member{}, false, true
}

// nextKey returns the index of the first of spans[k:] whose key may
// spell a name of want-2 bytes (len(spans) when none may): an unescaped
// key of that length, quotes included, or an escaped key, whose flag in
// KeyEnd puts its difference above every offset. It is Field's loop
// without a call in it, so the loop keeps its variables in registers;
// most keys are told apart by their length alone.
//
//go:noinline
func nextKey(spans []jsonrec.Span, k int, want uint32) int {
	for ; k < len(spans); k++ {
		if d := spans[k].KeyEnd - spans[k].Key; d == want || d > jsonrec.MaxSpanOffset {
			return k
		}
	}
	return k
}

// MoveFields moves record from's index entry to record to, for a step
// that moves records down while it compacts the batch.
func (b *Batch) MoveFields(from, to int) {
	x := b.fields
	if x == nil || from == to {
		return
	}
	if to < len(x.ents) {
		x.ents[to] = fieldEntry{}
		if from < len(x.ents) {
			x.ents[to] = x.ents[from]
		}
	}
}

// DropFields forgets the batch's field index and recycles it: once the
// batch has left the steps (the runtime drops it after reading the merge
// keys), or after a step changed some Raw in place.
func (b *Batch) DropFields() {
	if x := b.fields; x != nil {
		b.fields = nil
		x.reset()
		fieldIndexes.Put(x)
	}
}
