// Package stages defines the contract between the etld runtime and the
// stage implementations: records and batches, the Source, Step and Sink
// interfaces, and the Registry that maps a stage `type` to its factory.
//
// Implementations are synchronous. The runtime (internal/engine) owns
// goroutines, channels, retries and shutdown order; a stage never starts a
// goroutine that outlives its Close.
package stages

import "strconv"

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

	owned [][]byte // buffers only the records point into (see Own)
}

// Len is the number of good records in the batch.
func (b *Batch) Len() int { return len(b.Records) }
