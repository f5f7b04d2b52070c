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
type Batch struct {
	Records []Record
	Rejects []Reject

	owned  [][]byte    // buffers only the records point into (see Own)
	fields *FieldIndex // where the members of parsed records are (see Fields)
}

// Len is the number of good records in the batch.
func (b *Batch) Len() int { return len(b.Records) }

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
	ents []fieldEntry // by record index; raw nil when unset
	ms   []jsonrec.Member
}

type fieldEntry struct {
	raw        *byte // &Raw[0] of the record the entry describes
	n          int   // len(Raw)
	closeBrace int
	lo, hi     int // its members, in FieldIndex.ms
}

var fieldIndexes sync.Pool // of *FieldIndex

// NewFieldIndex returns an empty index, reusing one a batch let go.
func NewFieldIndex() *FieldIndex {
	if x, _ := fieldIndexes.Get().(*FieldIndex); x != nil {
		return x
	}
	return new(FieldIndex)
}

// Add records that ms (whose offsets are into raw) are the members of
// raw, the Raw of record i, and closeBrace the offset of its closing
// brace. ms is copied, unless it was appended to Spare.
func (x *FieldIndex) Add(i int, raw []byte, ms []jsonrec.Member, closeBrace int) {
	if len(raw) == 0 {
		return
	}
	for len(x.ents) <= i {
		x.ents = append(x.ents, fieldEntry{})
	}
	lo := len(x.ms)
	if len(ms) > 0 && len(ms) <= cap(x.ms)-lo && &ms[0] == &x.ms[:lo+1][lo] {
		x.ms = x.ms[:lo+len(ms)] // built in place (Spare)
	} else {
		x.ms = append(x.ms, ms...)
	}
	x.ents[i] = fieldEntry{raw: unsafe.SliceData(raw), n: len(raw), closeBrace: closeBrace, lo: lo, hi: len(x.ms)}
}

// Spare returns empty room for at least n members at the end of x's
// storage: members appended to it and passed to Add are not copied again.
func (x *FieldIndex) Spare(n int) []jsonrec.Member {
	if cap(x.ms)-len(x.ms) < n {
		x.ms = slices.Grow(x.ms, max(n, 2*len(x.ms), 64))
	}
	return x.ms[len(x.ms):]
}

// maxPooledMembers bounds the members a recycled index keeps room for,
// so that one batch of very wide records does not pin its memory.
const maxPooledMembers = 1 << 15

// reset empties x for reuse.
func (x *FieldIndex) reset() {
	clear(x.ents) // drop the pointers into released buffers
	x.ents, x.ms = x.ents[:0], x.ms[:0]
	if cap(x.ms) > maxPooledMembers {
		x.ms = nil
	}
}

// SetFieldIndex makes x the batch's field index, replacing (and
// recycling) the one it had; b owns x from then on.
func (b *Batch) SetFieldIndex(x *FieldIndex) {
	b.DropFields()
	b.fields = x
}

// Fields returns the members of record i and the offset of its closing
// brace, as jsonrec.Members would find them in its Raw, when the step that
// wrote that Raw indexed it; ok is false otherwise, and the caller scans.
// ms aliases the index: read it before the next SetFieldIndex.
func (b *Batch) Fields(i int) (ms []jsonrec.Member, closeBrace int, ok bool) {
	x := b.fields
	if x == nil || i >= len(x.ents) || i >= len(b.Records) {
		return nil, 0, false
	}
	e := &x.ents[i]
	raw := b.Records[i].Raw
	if e.raw == nil || e.raw != unsafe.SliceData(raw) || e.n != len(raw) {
		return nil, 0, false
	}
	return x.ms[e.lo:e.hi:e.hi], e.closeBrace, true
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
