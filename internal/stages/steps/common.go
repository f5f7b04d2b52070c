package steps

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unsafe"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// arena hands out the output bytes of rewritten records. One Process call
// takes one chunk sized for the whole batch (a few more only if its
// estimate was short) instead of one buffer per record. Each record gets a
// capacity-capped slice, so appending to one record's Raw can never
// overwrite the next. The batch owns the chunks (stages.Batch.Own): they
// are reused once it has been written.
type arena struct {
	b   *stages.Batch
	buf []byte
}

// reserve makes room for n more bytes, starting a new chunk of hint
// bytes (at most arenaChunk, at least n) when the current one is too
// small.
func (a *arena) reserve(n, hint int) {
	if cap(a.buf)-len(a.buf) < n {
		a.buf = stages.NewBuffer(max(n, min(hint, arenaChunk)))
		a.b.Own(a.buf)
	}
}

// arenaChunk bounds an arena's chunks. Pooled buffers come in powers of
// two, so one chunk for a whole batch left up to half of it unused, held
// as long as the batch (in an ordered merge, until its last record is
// written); chunks of this size waste at most the tail of the last one.
const arenaChunk = 64 << 10

// since returns the bytes appended since offset start, capped.
func (a *arena) since(start int) []byte {
	return a.buf[start:len(a.buf):len(a.buf)]
}

// members returns the members of record i of b, in *scratch, and the
// offset of its closing brace: from the batch's field index when the step
// that wrote the record indexed it, else walked.
func members(b *stages.Batch, i int, scratch *[]jsonrec.Member) (ms []jsonrec.Member, closeBrace int, err error) {
	var ok bool
	if *scratch, closeBrace, ok = b.Fields(i, (*scratch)[:0]); ok {
		return *scratch, closeBrace, nil
	}
	*scratch, closeBrace, err = jsonrec.Members(b.Records[i].Raw, (*scratch)[:0])
	return *scratch, closeBrace, err
}

// rejectErr wraps a per-record error with the step type, since the
// runtime only knows the worker's id.
func rejectErr(step string, err error) error {
	return fmt.Errorf("%s: %w", step, err)
}

// errNotParsed is the reject reason of set, eval and drop for records that
// no parse_json step has accepted.
func errNotParsed(step string) error {
	return fmt.Errorf("%s: record is not parsed JSON (add a parse_json step before %s)", step, step)
}

// fieldKey is a field name with its pre-encoded forms.
type fieldKey struct {
	name   string
	prefix []byte // `"name":`
	quoted []byte // `"name"`
}

func newFieldKey(name string) fieldKey {
	p := jsonrec.AppendKey(nil, name)
	return fieldKey{name: name, prefix: p, quoted: p[: len(p)-1 : len(p)-1]}
}

// surelyAbsent reports whether obj certainly has none of keys as a member,
// without parsing it: a member named k would put `"k"` (k's JSON encoding)
// in the text unless the key were written with escapes, which need a
// backslash. Both tests are SIMD-accelerated scans, much cheaper than
// walking the members. False means "maybe present": walk them.
//
// The search is for `k"` and only then for the quote before it: searching
// for `"k"` itself would stop at every quote of the record (bytes.Index
// looks for the first byte first), which made this test several times
// slower.
func surelyAbsent(obj []byte, keys []fieldKey) bool {
	for i := range keys {
		rest := keys[i].quoted[1:]
		for off := 0; ; {
			p := bytes.Index(obj[off:], rest)
			if p < 0 {
				break
			}
			p += off
			if p > 0 && obj[p-1] == '"' {
				return false
			}
			off = p + 1
		}
	}
	return bytes.IndexByte(obj, '\\') < 0
}

// absent reports whether record i of b certainly has none of keys as a
// member: from the batch's field index when the step before indexed the
// record, else by surelyAbsent.
func absent(b *stages.Batch, i int, keys []fieldKey) bool {
	for k := range keys {
		_, found, ok := b.Field(i, keys[k].name)
		if !ok {
			return surelyAbsent(b.Records[i].Raw, keys)
		}
		if found {
			return false
		}
	}
	return true
}

// planSet fills s.edits and s.add so that jsonrec.AppendEdited sets every
// field keys[i] to the JSON value vals[i]: the first occurrence of an
// existing key has its value replaced in place, later duplicates of it are
// removed (so every JSON reader sees the new value), absent keys are
// appended in order.
func planSet(s *exprScratch, obj []byte, ms []jsonrec.Member, keys []fieldKey, vals [][]byte) {
	s.edits = s.edits[:0]
	s.add = s.add[:0]
	clear(s.found)
	for i := range ms {
		m := &ms[i]
		for j := range keys {
			if !m.KeyIs(obj, keys[j].name) {
				continue
			}
			if s.found[j] {
				s.edits = append(s.edits, jsonrec.Edit{Member: i, Remove: true})
			} else {
				s.found[j] = true
				s.edits = append(s.edits, jsonrec.Edit{Member: i, Value: vals[j]})
			}
			break
		}
	}
	for j := range keys {
		if s.found[j] {
			continue
		}
		if len(s.add) > 0 {
			s.add = append(s.add, ',')
		}
		s.add = append(s.add, keys[j].prefix...)
		s.add = append(s.add, vals[j]...)
	}
}

// resolve follows YAML aliases and unwraps a document node.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && (n.Kind == yaml.AliasNode || n.Kind == yaml.DocumentNode) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		} else if len(n.Content) == 1 {
			n = n.Content[0]
		} else {
			return n
		}
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// mappingPairs returns the key/value pairs of a mapping node in order,
// checking that keys are non-empty strings and not repeated. what names
// the step in error messages.
func mappingPairs(n *yaml.Node, what, want string) (keys []string, vals []*yaml.Node, err error) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("%s: want %s", what, want)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := resolve(n.Content[i])
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!null" {
			return nil, nil, fmt.Errorf("%s: line %d: field names must be strings", what, k.Line)
		}
		if k.ShortTag() == "!!merge" {
			return nil, nil, fmt.Errorf("%s: line %d: YAML merge keys (<<) are not supported", what, k.Line)
		}
		if k.Value == "" {
			return nil, nil, fmt.Errorf("%s: line %d: empty field name", what, k.Line)
		}
		if seen[k.Value] {
			return nil, nil, fmt.Errorf("%s: line %d: field %q given twice", what, k.Line, k.Value)
		}
		seen[k.Value] = true
		keys = append(keys, k.Value)
		vals = append(vals, n.Content[i+1])
	}
	return keys, vals, nil
}

// appendYAMLAsJSON appends the JSON form of a YAML value, keeping mapping
// key order. Scalars keep their YAML type (quoted "3" stays a string);
// timestamps and other tags become strings; .nan and .inf are errors.
func appendYAMLAsJSON(dst []byte, n *yaml.Node, depth int) ([]byte, error) {
	if depth > 100 {
		return dst, errors.New("value nested too deeply")
	}
	n = resolve(n)
	switch n.Kind {
	case yaml.MappingNode:
		keys, vals, err := mappingPairs(n, "value", "a mapping")
		if err != nil {
			return dst, err
		}
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = jsonrec.AppendKey(dst, k)
			if dst, err = appendYAMLAsJSON(dst, vals[i], depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	case yaml.SequenceNode:
		dst = append(dst, '[')
		for i, c := range n.Content {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = appendYAMLAsJSON(dst, c, depth+1); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return append(dst, "null"...), nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return dst, err
			}
			return strconv.AppendBool(dst, b), nil
		case "!!int":
			var i int64
			if err := n.Decode(&i); err == nil {
				return strconv.AppendInt(dst, i, 10), nil
			}
			var u uint64
			if err := n.Decode(&u); err == nil {
				return strconv.AppendUint(dst, u, 10), nil
			}
			return dst, fmt.Errorf("integer %s is out of range", n.Value)
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return dst, err
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return dst, fmt.Errorf("%s cannot be represented in JSON", n.Value)
			}
			return jsonrec.AppendFloat(dst, f, 64)
		default:
			return jsonrec.AppendString(dst, n.Value), nil
		}
	default:
		return dst, fmt.Errorf("unsupported YAML node")
	}
}

// compactor removes records from a batch in place while iterating it.
// Records that stay are moved down to index w; rejected ones are appended
// to b.Rejects.
type compactor struct {
	b *stages.Batch
	w int
}

func (c *compactor) keep(r *stages.Record) {
	if dst := &c.b.Records[c.w]; dst != r {
		*dst = *r
		// r is an element of b.Records (every caller's loop variable):
		// its field index entry moves with it.
		i := int((uintptr(unsafe.Pointer(r)) - uintptr(unsafe.Pointer(&c.b.Records[0]))) / unsafe.Sizeof(*r))
		if i > c.w && i < len(c.b.Records) && &c.b.Records[i] == r {
			c.b.MoveFields(i, c.w)
		}
	}
	c.w++
}

func (c *compactor) reject(r *stages.Record, err error) {
	c.b.Rejects = append(c.b.Rejects, stages.Reject{Record: *r, Err: err})
}

// done truncates the batch to the kept records, clearing the tail so the
// dropped records' bytes can be collected.
func (c *compactor) done() {
	clear(c.b.Records[c.w:])
	c.b.Records = c.b.Records[:c.w]
}
