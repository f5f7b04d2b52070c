package sinks

import (
	"errors"
	"fmt"
	"strings"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// Encodings of the file and stdout sinks: how a record becomes a line.
const (
	EncodingJSON   = "json"   // Raw as is: the line, or a parsed record's fields as one JSON object
	EncodingText   = "text"   // a template of literal text and {{field}} references
	EncodingLogfmt = "logfmt" // key=value pairs
	EncodingCSV    = "csv"    // one RFC 4180 row of the configured columns
)

// lineField is the pseudo-field that renders the record's original line
// (stages.Record.Original): Raw of a record that was never parsed, the
// line its first parser read for one that was.
const lineField = "_line"

// encodingOptions are the options shared by the file and stdout sinks
// that choose the encoding; each sink's config holds them as its own
// fields (`encoding`, `template`, `columns`, `header`).
type encodingOptions struct {
	Encoding string
	Template string
	Columns  []string
	Header   bool
}

// validate reports every problem of the options as FieldErrors.
func (o encodingOptions) validate() []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, stages.FieldErr(field, fmt.Errorf(format, args...)))
	}
	switch o.Encoding {
	case EncodingJSON, EncodingText, EncodingLogfmt, EncodingCSV:
	default:
		add("encoding", "invalid value %q: want json, text, logfmt or csv", o.Encoding)
		return errs // the other options' rules depend on it
	}
	switch {
	case o.Encoding == EncodingText && o.Template == "":
		add("template", "required with encoding: text, e.g. template: '{{ts}} [{{level}}] {{message}}'")
	case o.Encoding == EncodingText:
		if _, err := parseTemplate(o.Template); err != nil {
			errs = append(errs, stages.FieldErr("template", err))
		}
	case o.Template != "":
		add("template", "only applies to encoding: text (encoding is %s)", o.Encoding)
	}
	switch {
	case o.Encoding == EncodingCSV && len(o.Columns) == 0:
		add("columns", "required with encoding: csv (the fields to write, in order)")
	case o.Columns != nil && o.Encoding != EncodingCSV && o.Encoding != EncodingLogfmt:
		add("columns", "only applies to encoding: logfmt or csv (encoding is %s)", o.Encoding)
	}
	if o.Encoding == EncodingCSV || o.Encoding == EncodingLogfmt {
		for i, c := range o.Columns {
			if err := checkColumn(o.Encoding, c, o.Columns[:i]); err != nil {
				errs = append(errs, stages.FieldErr(fmt.Sprintf("columns[%d]", i), err))
			}
		}
	}
	if o.Header && o.Encoding != EncodingCSV {
		add("header", "only applies to encoding: csv (encoding is %s)", o.Encoding)
	}
	return errs
}

func checkColumn(enc, c string, before []string) error {
	switch {
	case c == "":
		return errors.New("empty column name")
	case strings.ContainsAny(c, "\r\n"):
		return fmt.Errorf("column name %q has a line break", c)
	case enc == EncodingLogfmt && strings.ContainsAny(c, " \t=\""):
		return fmt.Errorf("logfmt key %q has a space, '=' or '\"'", c)
	}
	for _, b := range before {
		if b == c {
			return fmt.Errorf("column %q is listed twice", c)
		}
	}
	return nil
}

// newEncoder compiles validated options; it returns nil for json, which
// writes Raw without an encoder.
func newEncoder(o encodingOptions) (*encoder, error) {
	e := &encoder{kind: o.Encoding}
	switch o.Encoding {
	case EncodingJSON, "":
		return nil, nil
	case EncodingText:
		parts, err := parseTemplate(o.Template)
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			if p.field == "" {
				e.parts = append(e.parts, part{lit: []byte(p.lit), slot: -1})
				continue
			}
			e.parts = append(e.parts, part{slot: e.addSlot(p.field)})
		}
	case EncodingLogfmt, EncodingCSV:
		for _, c := range o.Columns {
			e.cols = append(e.cols, e.addSlot(c))
			if o.Encoding == EncodingLogfmt {
				e.keys = append(e.keys, []byte(c+"="))
			}
		}
		if o.Header {
			for i, c := range o.Columns {
				if i > 0 {
					e.header = append(e.header, ',')
				}
				e.header = appendCSV(e.header, []byte(c))
			}
			e.header = append(e.header, '\n')
		}
	default:
		return nil, fmt.Errorf("unknown encoding %q", o.Encoding)
	}
	e.vals = make([]span, len(e.names))
	return e, nil
}

// tmplPart is one piece of a parsed template: literal text, or a field
// reference when field is set.
type tmplPart struct {
	lit   string
	field string
}

// parseTemplate splits a text template into literal text and {{field}}
// references (spaces inside the braces are trimmed). A "}}" outside a
// reference is literal text; there is no escape for a literal "{{".
func parseTemplate(s string) ([]tmplPart, error) {
	var parts []tmplPart
	for i := 0; i < len(s); {
		open := strings.Index(s[i:], "{{")
		if open < 0 {
			parts = append(parts, tmplPart{lit: s[i:]})
			break
		}
		if open > 0 {
			parts = append(parts, tmplPart{lit: s[i : i+open]})
		}
		start := i + open
		end := strings.Index(s[start+2:], "}}")
		if end < 0 {
			return nil, fmt.Errorf("unclosed {{ at byte %d of the template: want {{field}}", start)
		}
		name := strings.TrimSpace(s[start+2 : start+2+end])
		switch {
		case name == "":
			return nil, fmt.Errorf("empty field reference {{}} at byte %d of the template", start)
		case strings.ContainsAny(name, "{}\r\n"):
			return nil, fmt.Errorf("invalid field name %q at byte %d of the template", name, start)
		}
		parts = append(parts, tmplPart{field: name})
		i = start + 2 + end + 2
	}
	if len(parts) == 0 {
		return nil, errors.New("empty template")
	}
	return parts, nil
}

// part is a compiled template piece: lit when slot < 0, else the value of
// the field in that slot.
type part struct {
	lit  []byte
	slot int
}

// span locates a field's value in Raw: Raw[start:end], a JSON value.
// start < 0 means the record has no such field.
type span struct {
	start, end int
	escaped    bool // a string value with backslash escapes
}

// encoder turns records into lines of one encoding. It keeps its scratch
// space between records, so encoding allocates nothing per record; it is
// used by one sink goroutine only.
type encoder struct {
	kind   string
	names  []string // the fields the encoding looks up, one per slot
	parts  []part   // text: the template
	cols   []int    // logfmt with columns, csv: the slot of each column
	keys   [][]byte // logfmt with columns: `name=` per column
	header []byte   // csv with header: true: the header line, with its newline

	vals []span // per record: the value of each slot
	tmp  []byte // per value: a decoded string
}

func (e *encoder) addSlot(name string) int {
	for i, n := range e.names {
		if n == name {
			return i
		}
	}
	e.names = append(e.names, name)
	return len(e.names) - 1
}

// lookup fills e.vals for r in one walk over its members. Only a parsed
// record has fields; _line is always there (see value). The first member
// of a name wins, as in jsonrec.Find; a malformed Raw (which no step
// produces) leaves the fields after the fault missing.
func (e *encoder) lookup(r *stages.Record) {
	missing := 0
	for i, n := range e.names {
		if n == lineField {
			e.vals[i] = span{start: 0, end: len(r.Raw)}
			continue
		}
		e.vals[i] = span{start: -1}
		missing++
	}
	if missing == 0 || !r.Parsed {
		return
	}
	it := jsonrec.NewIter(r.Raw)
	var m jsonrec.Member
	for missing > 0 && it.Next(&m) {
		for i, n := range e.names {
			if e.vals[i].start < 0 && n != lineField && m.KeyIs(r.Raw, n) {
				e.vals[i] = span{start: m.Val, end: m.End, escaped: m.ValEscaped}
				missing--
				break
			}
		}
	}
}

// appendLine appends r's line, without its newline, to dst.
func (e *encoder) appendLine(dst []byte, r *stages.Record) []byte {
	switch e.kind {
	case EncodingText:
		e.lookup(r)
		for _, p := range e.parts {
			if p.slot < 0 {
				dst = append(dst, p.lit...)
				continue
			}
			dst = appendText(dst, e.value(r, p.slot))
		}
	case EncodingCSV:
		e.lookup(r)
		for i, slot := range e.cols {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendCSV(dst, e.value(r, slot))
		}
	case EncodingLogfmt:
		if len(e.cols) > 0 {
			return e.appendLogfmtColumns(dst, r)
		}
		return e.appendLogfmtAll(dst, r)
	}
	return dst
}

// value returns the text of the slot's value for r: a string's decoded
// contents, any other JSON value's text, the original line for _line, or
// nil when r has no such field. A decoded string lives in e.tmp until the
// next call.
func (e *encoder) value(r *stages.Record, slot int) []byte {
	v := e.vals[slot]
	if v.start < 0 {
		return nil
	}
	if e.names[slot] == lineField {
		return r.Original()
	}
	return e.text(r.Raw[v.start:v.end], v.escaped)
}

// text returns the text of the JSON value v: a string's decoded contents,
// or v itself.
func (e *encoder) text(v []byte, escaped bool) []byte {
	if len(v) < 2 || v[0] != '"' {
		return v
	}
	body := v[1 : len(v)-1]
	if !escaped {
		return body
	}
	e.tmp = jsonrec.AppendUnescaped(e.tmp[:0], body)
	return e.tmp
}

func (e *encoder) appendLogfmtColumns(dst []byte, r *stages.Record) []byte {
	e.lookup(r)
	sep := false
	for i, slot := range e.cols {
		if e.vals[slot].start < 0 {
			continue // logfmt leaves a missing field out
		}
		if sep {
			dst = append(dst, ' ')
		}
		sep = true
		dst = append(dst, e.keys[i]...)
		dst = appendLogfmtValue(dst, e.value(r, slot))
	}
	return dst
}

// appendLogfmtAll writes every field of a parsed record in order, and
// _line=... for a record that was never parsed.
func (e *encoder) appendLogfmtAll(dst []byte, r *stages.Record) []byte {
	if !r.Parsed {
		dst = append(dst, lineField+"="...)
		return appendLogfmtValue(dst, r.Raw)
	}
	it := jsonrec.NewIter(r.Raw)
	var m jsonrec.Member
	for first := true; it.Next(&m); first = false {
		if !first {
			dst = append(dst, ' ')
		}
		key := m.RawKey(r.Raw)
		if m.Escaped {
			e.tmp = jsonrec.AppendUnescaped(e.tmp[:0], key)
			key = e.tmp
		}
		dst = appendLogfmtKey(dst, key)
		dst = append(dst, '=')
		dst = appendLogfmtValue(dst, e.text(r.Raw[m.Val:m.End], m.ValEscaped))
	}
	return dst
}

// appendText appends v for the text encoding: as is, except that a line
// feed becomes the two characters \n and a carriage return \r, so that a
// value never breaks the record's line.
func appendText(dst, v []byte) []byte {
	for len(v) > 0 {
		i := 0
		for i < len(v) && v[i] != '\n' && v[i] != '\r' {
			i++
		}
		dst = append(dst, v[:i]...)
		if i == len(v) {
			break
		}
		if v[i] == '\n' {
			dst = append(dst, '\\', 'n')
		} else {
			dst = append(dst, '\\', 'r')
		}
		v = v[i+1:]
	}
	return dst
}

// appendLogfmtKey appends a field name as a logfmt key: bytes a key
// cannot hold (space, '=', '"', control characters) become '_', and an
// empty name is "_".
func appendLogfmtKey(dst, k []byte) []byte {
	if len(k) == 0 {
		return append(dst, '_')
	}
	for _, c := range k {
		if c <= ' ' || c == '=' || c == '"' || c == 0x7f {
			c = '_'
		}
		dst = append(dst, c)
	}
	return dst
}

// appendLogfmtValue appends v bare when it can be (non-empty, no space,
// '=', '"', '\' or control character), else quoted with \" \\ \n \r \t
// and \u00XX escapes: a logfmt line never holds a raw line break.
func appendLogfmtValue(dst, v []byte) []byte {
	bare := len(v) > 0
	for _, c := range v {
		if c <= ' ' || c == '=' || c == '"' || c == '\\' || c == 0x7f {
			bare = false
			break
		}
	}
	if bare {
		return append(dst, v...)
	}
	dst = append(dst, '"')
	for _, c := range v {
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < ' ' || c == 0x7f:
			dst = append(dst, '\\', 'u', '0', '0', hexDigit[c>>4], hexDigit[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

const hexDigit = "0123456789abcdef"

// appendCSV appends v as one RFC 4180 field: quoted, with quotes doubled,
// when it holds a comma, a quote, a line break or starts with a space or
// tab (as encoding/csv does); a line break stays inside the quotes.
func appendCSV(dst, v []byte) []byte {
	quote := len(v) > 0 && (v[0] == ' ' || v[0] == '\t')
	for _, c := range v {
		if c == ',' || c == '"' || c == '\n' || c == '\r' {
			quote = true
			break
		}
	}
	if !quote {
		return append(dst, v...)
	}
	dst = append(dst, '"')
	for _, c := range v {
		if c == '"' {
			dst = append(dst, '"')
		}
		dst = append(dst, c)
	}
	return append(dst, '"')
}
