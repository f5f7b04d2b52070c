package httpsrc

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// body is the records of one request, parsed by its handler; Read hands
// them to the pipeline, and the handler answers once they are
// acknowledged (done).
type body struct {
	recs    []stages.Record
	rejects []stages.Reject
	buf     []byte // what recs point into, from stages.NewBuffer
	next    int    // the next record Read returns
	split   bool   // returned over several batches: buf is left to the GC

	accepted, rejected int // for the answer: records, and rejects of the source

	seq  uint64        // set by Read once every record was returned
	done chan struct{} // closed when acknowledged
}

// errNotObject rejects an element of a JSON array that is not an object.
var errNotObject = errors.New("invalid JSON: want an object")

// parseLines splits a text or NDJSON body into one record per line (a
// final line without a newline is one too; a final newline makes no
// empty record). Lines over max keep their first max bytes and become
// rejects.
func parseLines(b *body, data []byte, o *stages.Origin, max int) {
	b.buf = data
	b.recs = make([]stages.Record, 0, bytes.Count(data, []byte{'\n'})+1)
	for off := 0; off < len(data); {
		end := bytes.IndexByte(data[off:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += off
		}
		line := data[off:end:end]
		if len(line) > max {
			b.rejects = append(b.rejects, stages.Reject{
				Record: stages.Record{Raw: bytes.Clone(line[:max]), Origin: o, Offset: int64(off)},
				Err:    fmt.Errorf("line of %d bytes exceeds max_line_bytes (%d)", len(line), max),
				Length: int64(len(line)),
			})
		} else {
			b.recs = append(b.recs, stages.Record{Raw: line, Origin: o, Offset: int64(off)})
		}
		off = end + 1
	}
}

// parseJSON reads a JSON body, one object or an array of objects, into
// parsed records (each object on one line); an array element that is not
// an object is a reject. A body that is not valid JSON is an error and
// gives no record.
func parseJSON(b *body, data []byte, o *stages.Origin) error {
	out := stages.NewBuffer(len(data)) // compacting never grows it: recs stay valid
	err := jsonrec.Document(data, func(v []byte, off int) {
		if v[0] != '{' {
			b.rejects = append(b.rejects, stages.Reject{
				Record: stages.Record{Raw: bytes.Clone(v), Origin: o, Offset: int64(off)},
				Err:    fmt.Errorf("%w, got %s", errNotObject, jsonrec.KindName(v[0])),
			})
			return
		}
		start := len(out)
		out = jsonrec.AppendCompact(out, v)
		obj := out[start:len(out):len(out)]
		r := stages.Record{Raw: obj, Origin: o, Offset: int64(off)}
		r.SetParsed(obj)
		b.recs = append(b.recs, r)
	})
	b.buf = out
	return err
}
