package steps

import (
	"bytes"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// This file is what every parsing step shares (parse_regex, parse_logfmt,
// parse_csv, parse_json's field, and any later parser):
//
//   - fieldSource reads the text to parse: the raw line, or with
//     `field: NAME` the string value of that field of a parsed record;
//   - parsedFields collects the fields a step yields for one record, as JSON
//     `"key":value` pairs, and writes them into the record: a new object
//     when the record was not parsed, else merged into its fields (a
//     parsed field replaces one of the same name);
//   - parseErr formats a bad record's error: what was expected at which
//     byte of the text.
//
// textStep runs that loop for a parser: it only supplies parse.

// fieldSource is where a parsing step reads its text: Name "" is the
// record's raw line, else the string value of the top-level field Name of
// a parsed record.
type fieldSource struct{ Name string }

// text returns the bytes to parse in r. They alias r.Raw, or s.text when
// the field's string has escapes; either way they are valid until r.Raw
// or s changes. Errors say why the field cannot be read (the record is
// not parsed, the field is missing or not a string).
func (f fieldSource) text(r *stages.Record, s *parseScratch) ([]byte, error) {
	if f.Name == "" {
		return r.Raw, nil
	}
	if !r.Parsed {
		return nil, fmt.Errorf("record is not parsed, so it has no field %q (add a parsing step before, or remove field)", f.Name)
	}
	m, found, err := jsonrec.Find(r.Raw, f.Name)
	switch {
	case err != nil:
		return nil, fmt.Errorf("malformed JSON record: %w", err)
	case !found:
		return nil, f.missing()
	}
	v, isStr := memberText(r.Raw, &m, &s.text)
	if !isStr {
		return nil, f.notString(v)
	}
	return v, nil
}

// member is text for a step that has walked the members ms of the parsed
// record obj already: the first member named f.Name, as memberText
// returns it, unescaping into *buf.
func (f fieldSource) member(obj []byte, ms []jsonrec.Member, buf *[]byte) (v []byte, isStr bool, err error) {
	for i := range ms {
		if ms[i].KeyIs(obj, f.Name) {
			v, isStr = memberText(obj, &ms[i], buf)
			return v, isStr, nil
		}
	}
	return nil, false, f.missing()
}

// memberText returns the value of member m of obj: a string's contents
// (unescaped into *buf when it has escapes), or the JSON text of any
// other value.
func memberText(obj []byte, m *jsonrec.Member, buf *[]byte) (v []byte, isStr bool) {
	v = obj[m.Val:m.End]
	switch {
	case v[0] != '"':
		return v, false
	case !m.ValEscaped:
		return v[1 : len(v)-1], true
	}
	*buf = jsonrec.AppendUnescaped((*buf)[:0], v[1:len(v)-1])
	return *buf, true
}

func (f fieldSource) missing() error { return fmt.Errorf("field %q is missing", f.Name) }

// notString is the error for a field whose value v is not a string.
func (f fieldSource) notString(v []byte) error {
	return fmt.Errorf("field %q is %s, want a string", f.Name, jsonrec.KindName(v[0]))
}

// where names the text in error messages: "" for the raw line, else
// ` of field "NAME"`.
func (f fieldSource) where() string {
	if f.Name == "" {
		return ""
	}
	return fmt.Sprintf(" of field %q", f.Name)
}

// parseErr is a parse error at byte off of the text: `want X at byte N`
// plus where the text came from.
func (f fieldSource) parseErr(off int, format string, args ...any) error {
	return fmt.Errorf("%s at byte %d%s", fmt.Sprintf(format, args...), off, f.where())
}

// in adds where the text came from to a parser's error.
func (f fieldSource) in(err error) error {
	if f.Name == "" {
		return err
	}
	return fmt.Errorf("%w%s", err, f.where())
}

// parsedField is one field of a parsedFields: its decoded key in keys[k0:k1]
// and its `"key":value` pair in enc[p0:p1] (pairs are separated by commas
// in enc, outside these spans).
type parsedField struct {
	k0, k1, p0, p1 int
	dup            bool // a later field has the same key: this one is left out
}

// parsedFields collects the fields a step yields for one record. Keys are
// compared decoded; when a key comes twice the last value wins (as in
// encoding/json and the logfmt libraries that decode into a map), at the
// position of its last occurrence. Reuse it with reset.
type parsedFields struct {
	keys   []byte
	enc    []byte
	fields []parsedField
	dups   int            // fields marked dup
	index  map[string]int // key -> index in fields, only for many fields
	// encOnly: the fields go into a record that has none yet, so only
	// enc is needed: fields added with beginUnique are not recorded.
	encOnly bool
	// spans are where every field is, in order (duplicates too), as
	// jsonrec.Members would find them in the object "{"+enc+"}": the
	// record's field index (see recordWriter.write), kept when
	// keepSpans is set. Their escape flags are filled in by members.
	spans     []jsonrec.Member
	keepSpans bool
}

// manyFields is where parsedFields stops comparing keys one by one and indexes
// them, so that a hostile line with thousands of keys stays linear.
const manyFields = 32

// reset empties p for the next record; merge tells whether its fields
// will be merged into a parsed record (see recordWriter.write), which
// needs every field's key, index whether to keep their spans.
func (p *parsedFields) reset(merge, index bool) {
	p.keepSpans = index
	p.keys, p.enc, p.fields, p.dups = p.keys[:0], p.enc[:0], p.fields[:0], 0
	p.spans = p.spans[:0]
	p.encOnly = !merge
	if p.index != nil {
		clear(p.index)
	}
}

// key returns field i's decoded key, aliasing p's buffer.
func (p *parsedFields) key(i int) string { return p.keyAt(p.fields[i].k0, p.fields[i].k1) }

func (p *parsedFields) keyAt(k0, k1 int) string {
	if k0 == k1 {
		return ""
	}
	return unsafe.String(&p.keys[k0], k1-k0)
}

// find returns the index of the field named key, or -1.
func (p *parsedFields) find(key string) int {
	if len(p.fields) > manyFields {
		if len(p.index) == 0 {
			if p.index == nil {
				p.index = make(map[string]int, len(p.fields))
			}
			for i := range p.fields {
				if !p.fields[i].dup {
					// The key aliases p.keys, which only grows until
					// reset clears the index.
					p.index[p.key(i)] = i
				}
			}
		}
		if i, ok := p.index[key]; ok {
			return i
		}
		return -1
	}
	for i := range p.fields {
		if !p.fields[i].dup && p.key(i) == key {
			return i
		}
	}
	return -1
}

// begin starts a field named key (decoded bytes) and writes its
// `"key":` to enc; the caller appends the value, then calls end.
func (p *parsedFields) begin(key []byte) {
	p.add(key)
	k := len(p.enc)
	p.enc = jsonrec.AppendKey(p.enc, unsafe.String(unsafe.SliceData(key), len(key)))
	if p.keepSpans {
		p.span(k)
	}
}

// add records a new field named key, starting at the end of enc, and
// writes the comma before it.
func (p *parsedFields) add(key []byte) {
	k0 := len(p.keys)
	p.keys = append(p.keys, key...)
	p0 := len(p.enc)
	if p0 > 0 {
		p.enc = append(p.enc, ',')
		p0++
	}
	p.fields = append(p.fields, parsedField{})
	f := &p.fields[len(p.fields)-1]
	f.k0, f.k1, f.p0 = k0, len(p.keys), p0
}

// span starts the span of a field whose key begins at enc[k] and was
// just written, with its colon. (Field by field: a composite literal of
// the 40-byte Member was a tenth of an access log's parse.)
func (p *parsedFields) span(k int) {
	p.spans = append(p.spans, jsonrec.Member{})
	m := &p.spans[len(p.spans)-1]
	m.Key, m.KeyEnd, m.Val = k+1, len(p.enc), len(p.enc)+1
}

// end closes the field begun last, marking an earlier one of the same key
// as a duplicate.
func (p *parsedFields) end() {
	n := len(p.fields) - 1
	f := &p.fields[n]
	f.p1 = len(p.enc)
	if p.keepSpans {
		p.spans[len(p.spans)-1].End = len(p.enc) + 1
	}
	// find sees only fields[:n] as candidates: hide the new one meanwhile.
	p.fields = p.fields[:n]
	if old := p.find(p.keyAt(f.k0, f.k1)); old >= 0 {
		p.fields[old].dup = true
		p.dups++
		if p.index != nil {
			delete(p.index, p.keyAt(f.k0, f.k1))
		}
	}
	p.fields = p.fields[:n+1]
	if len(p.index) > 0 {
		p.index[p.keyAt(f.k0, f.k1)] = n
	}
}

// addString adds a field with a string value (JSON-escaped; invalid UTF-8
// becomes U+FFFD).
func (p *parsedFields) addString(key, val []byte) {
	p.begin(key)
	p.enc = jsonrec.AppendString(p.enc, unsafe.String(unsafe.SliceData(val), len(val)))
	p.end()
}

// addRaw adds a field whose value is the JSON text val, copied as is.
func (p *parsedFields) addRaw(key, val []byte) {
	p.begin(key)
	p.enc = append(p.enc, val...)
	p.end()
}

// beginUnique is begin for a key that the caller knows no other field of
// the record has (a column of parse_csv, a group of a preset, a part of a
// syslog line), with its encoded `"key":` prefix; the caller appends the
// value, then calls endUnique. It skips the duplicate check and the key's
// encoding, which were most of a preset's cost, and, for a record that
// has no fields yet, the key's bookkeeping too.
func (p *parsedFields) beginUnique(key, prefix []byte) {
	if p.encOnly {
		if len(p.enc) > 0 {
			p.enc = append(p.enc, ',')
		}
	} else {
		p.add(key)
	}
	k := len(p.enc)
	p.enc = append(p.enc, prefix...)
	if p.keepSpans {
		p.span(k)
	}
}

// endUnique closes the field begun last with beginUnique.
func (p *parsedFields) endUnique() {
	if p.keepSpans {
		p.spans[len(p.spans)-1].End = len(p.enc) + 1
	}
	if p.encOnly {
		return
	}
	n := len(p.fields) - 1
	f := &p.fields[n]
	f.p1 = len(p.enc)
	if len(p.index) > 0 {
		p.index[p.keyAt(f.k0, f.k1)] = n
	}
}

// addStringUnique adds a field with a string value under a key that is
// not in p yet (see beginUnique).
func (p *parsedFields) addStringUnique(key, prefix, val []byte) {
	p.beginUnique(key, prefix)
	p.enc = jsonrec.AppendString(p.enc, unsafe.String(unsafe.SliceData(val), len(val)))
	p.endUnique()
}

// members returns the members of the object "{" + p.enc + "}", with
// their escape flags, when p has no duplicates (else enc is not what is
// written): the escapes are found with one fast scan of enc, instead of a
// walk of the object. They alias p.
func (p *parsedFields) members() []jsonrec.Member {
	if bytes.IndexByte(p.enc, '\\') < 0 {
		return p.spans
	}
	for i := range p.spans {
		m := &p.spans[i]
		k, v := p.enc[m.Key-1:m.KeyEnd-1], p.enc[m.Val-1:m.End-1]
		m.Escaped = bytes.IndexByte(k, '\\') >= 0
		m.ValEscaped = v[0] == '"' && bytes.IndexByte(v, '\\') >= 0
	}
	return p.spans
}

// appendPairs appends the fields that are not duplicates, joined by
// commas.
func (p *parsedFields) appendPairs(dst []byte) []byte {
	if p.dups == 0 {
		return append(dst, p.enc...)
	}
	first := true
	for i := range p.fields {
		f := &p.fields[i]
		if f.dup {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		dst = append(dst, p.enc[f.p0:f.p1]...)
		first = false
	}
	return dst
}

// parseScratch is the per-Process-call state of a parsing step; steps keep
// them in a sync.Pool.
type parseScratch struct {
	text    []byte // a field's unescaped text
	out     parsedFields
	members []jsonrec.Member
	edited  []jsonrec.Member // the members of a rewritten record
	edits   []jsonrec.Edit
	add     []byte
	spare   []byte    // free for the step's own use (unquoting)
	idx     []int     // parse_regex's group offsets
	now     time.Time // the batch's current time, when textStep.now is set
}

// recordWriter writes parsed fields into the records of one batch, their
// new texts in one arena, and compacts the batch. It indexes the members
// of the records it writes, for the steps after it (stages.FieldIndex).
type recordWriter struct {
	s *parseScratch
	a arena
	c compactor
	x *stages.FieldIndex
	n int // records seen, for the arena's size hint
}

func (s *parseScratch) writer(b *stages.Batch) recordWriter {
	w := recordWriter{s: s, a: arena{b: b}, c: compactor{b: b}}
	if b.IndexFields {
		w.x = stages.NewFieldIndex(len(b.Records))
	}
	return w
}

// reject moves r to the batch's rejects with the step's name on err.
func (w *recordWriter) reject(r *stages.Record, step string, err error) {
	w.n++
	w.c.reject(r, rejectErr(step, err))
}

// write makes p r's fields, or merges them into r's fields when r is
// parsed already: a field of the same name is removed where it was and
// the parsed fields are appended in their order. r is kept (or rejected
// with step's name when its JSON is malformed).
func (w *recordWriter) write(r *stages.Record, step string, p *parsedFields) {
	w.n++
	left := len(w.c.b.Records) - w.n + 1
	if !r.Parsed {
		need := 2 + len(p.enc)
		w.a.reserve(need, need*left+need/2)
		start := len(w.a.buf)
		w.a.buf = append(w.a.buf, '{')
		w.a.buf = p.appendPairs(w.a.buf)
		w.a.buf = append(w.a.buf, '}')
		r.SetParsed(w.a.since(start))
		if p.dups == 0 && w.x != nil {
			w.x.Add(w.c.w, r.Raw, p.members(), len(r.Raw)-1)
		}
		w.c.keep(r)
		return
	}
	s := w.s
	ms, closeBrace, err := members(w.c.b, w.n-1, &s.members)
	if err != nil {
		w.c.reject(r, rejectErr(step, fmt.Errorf("malformed JSON record: %w", err)))
		return
	}
	s.edits = s.edits[:0]
	for i := range ms {
		m := &ms[i]
		if p.findMember(r.Raw, m) {
			s.edits = append(s.edits, jsonrec.Edit{Member: i, Remove: true})
		}
	}
	s.add = p.appendPairs(s.add[:0])
	need := len(r.Raw) + 1 + len(s.add)
	w.a.reserve(need, need*left)
	start := len(w.a.buf)
	w.a.buf = jsonrec.AppendEdited(w.a.buf, r.Raw, ms, closeBrace, s.edits, s.add)
	r.Raw = w.a.since(start)
	if w.x != nil {
		w.index(r.Raw, ms, closeBrace, s.edits, s.add)
	}
	w.c.keep(r)
}

// index adds the members of raw, the record about to be kept, which
// jsonrec.AppendEdited wrote from an object with members ms.
func (w *recordWriter) index(raw []byte, ms []jsonrec.Member, closeBrace int, edits []jsonrec.Edit, add []byte) {
	var ok bool
	if w.s.edited, closeBrace, ok = jsonrec.EditedMembers(w.s.edited[:0], ms, closeBrace, edits, add); ok {
		w.x.Add(w.c.w, raw, w.s.edited, closeBrace)
	}
}

// findMember reports whether p has a field named like member m of obj.
func (p *parsedFields) findMember(obj []byte, m *jsonrec.Member) bool {
	raw := m.RawKey(obj)
	if !m.Escaped {
		if len(raw) == 0 {
			return p.find("") >= 0
		}
		return p.find(unsafe.String(&raw[0], len(raw))) >= 0
	}
	v, err := jsonrec.DecodeValue(obj[m.Key:m.KeyEnd], false)
	if err != nil {
		return false
	}
	return p.find(v.(string)) >= 0
}

// done compacts the batch and gives it the index of its records.
func (w *recordWriter) done() {
	w.c.done()
	w.c.b.SetFieldIndex(w.x)
}

// textStep is a parsing step: parse fills s.out from one text (the line or
// the field's string) or returns what it wanted at which byte (see
// fieldSource.parseErr). parse_logfmt, parse_csv, parse_regex,
// parse_syslog and parse_json's field are textSteps.
type textStep struct {
	typ   string // the step type, for reject reasons
	src   fieldSource
	parse func(text []byte, s *parseScratch) error
	pool  sync.Pool // of *parseScratch
	// now, when set, is read once per batch into parseScratch.now, for a
	// parser that needs the current time (parse_syslog's year rule): the
	// clock per record was a sixth of parse_syslog's time.
	now func() time.Time
}

func newTextStep(typ, field string, parse func([]byte, *parseScratch) error) *textStep {
	st := &textStep{typ: typ, src: fieldSource{Name: field}, parse: parse}
	st.pool.New = func() any { return new(parseScratch) }
	return st
}

// Process parses every record's text and writes the fields into it (see
// recordWriter.write); a record whose text cannot be read or parsed is a
// bad record. Safe for concurrent calls on different batches.
func (st *textStep) Process(b *stages.Batch) {
	s := st.pool.Get().(*parseScratch)
	defer st.pool.Put(s)
	if st.now != nil {
		s.now = st.now()
	}
	w := s.writer(b)
	for i := range b.Records {
		r := &b.Records[i]
		text, err := st.src.text(r, s)
		if err == nil {
			s.out.reset(r.Parsed, w.x != nil)
			err = st.parse(text, s)
		}
		if err != nil {
			w.reject(r, st.typ, err)
			continue
		}
		w.write(r, st.typ, &s.out)
	}
	w.done()
}
