package jsonrec

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// Member locates one top-level member of an object by byte offsets into
// the object's bytes.
type Member struct {
	Key     int  // offset of the key's opening quote
	KeyEnd  int  // offset just past the key's closing quote
	Val     int  // offset of the value's first byte
	End     int  // offset just past the value
	Escaped bool // the key contains backslash escapes
	// ValEscaped is set when the value is a string with backslash escapes.
	ValEscaped bool
}

// Value decodes the member's value like DecodeValue, without re-scanning
// strings and numbers: m must come from an Iter (or Members) over obj.
func (m *Member) Value(obj []byte, alias bool) (any, error) {
	v := obj[m.Val:m.End]
	switch c := v[0]; {
	case c == '"' && !m.ValEscaped:
		raw := v[1 : len(v)-1]
		switch {
		case len(raw) == 0:
			return "", nil
		case alias:
			return unsafe.String(&raw[0], len(raw)), nil
		default:
			return string(raw), nil
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return parseNumber(v), nil
	case c == 't':
		return true, nil
	case c == 'f':
		return false, nil
	case c == 'n':
		return nil, nil
	default:
		return DecodeValue(v, alias)
	}
}

// RawKey returns the key's bytes between its quotes, still escaped.
func (m *Member) RawKey(obj []byte) []byte { return obj[m.Key+1 : m.KeyEnd-1] }

// KeyIs reports whether the member's decoded key equals name. It does not
// allocate unless the key contains escapes.
func (m *Member) KeyIs(obj []byte, name string) bool {
	raw := obj[m.Key+1 : m.KeyEnd-1]
	if !m.Escaped {
		return string(raw) == name // compiled without a copy
	}
	if len(raw) < len(name) { // escapes only ever make the raw form longer
		return false
	}
	return string(unescape(nil, raw)) == name
}

// Iter walks the top-level members of an object in order. The zero value
// is not usable; call NewIter. An Iter validates as it goes, so a malformed
// object ends the walk with an error instead of a panic or a wrong answer.
type Iter struct {
	obj   []byte
	pos   int
	close int
	err   error
	done  bool
	first bool
}

// NewIter starts a walk over obj, which must start with '{' (after
// whitespace).
func NewIter(obj []byte) Iter {
	it := Iter{obj: obj, close: -1, first: true}
	i := skipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		it.err, it.done = errAt(obj, i, "'{'"), true
		return it
	}
	it.pos = skipWS(obj, i+1)
	return it
}

// Next stores the next member in *m and reports whether there was one.
// After it returns false, Err tells whether the walk ended on an error.
func (it *Iter) Next(m *Member) bool {
	if it.done {
		return false
	}
	b, i := it.obj, it.pos
	if it.first {
		it.first = false
		if i < len(b) && b[i] == '}' {
			it.close, it.done = i, true
			return false
		}
	} else {
		if i < len(b) && b[i] == '}' {
			it.close, it.done = i, true
			return false
		}
		if i >= len(b) || b[i] != ',' {
			return it.fail(errAt(b, i, "',' or '}'"))
		}
		i = skipWS(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		return it.fail(errAt(b, i, "a string key"))
	}
	m.Key = i
	var err error
	if m.KeyEnd, m.Escaped, err = scanString(b, i); err != nil {
		return it.fail(err)
	}
	i = skipWS(b, m.KeyEnd)
	if i >= len(b) || b[i] != ':' {
		return it.fail(errAt(b, i, "':'"))
	}
	m.Val = skipWS(b, i+1)
	if m.Val < len(b) && b[m.Val] == '"' {
		m.End, m.ValEscaped, err = scanString(b, m.Val)
	} else {
		m.ValEscaped = false
		m.End, err = scanValue(b, m.Val, 1)
	}
	if err != nil {
		return it.fail(err)
	}
	it.pos = skipWS(b, m.End)
	return true
}

func (it *Iter) fail(err error) bool {
	it.err, it.done = err, true
	return false
}

// Err returns the error that ended the walk, if any.
func (it *Iter) Err() error { return it.err }

// Close returns the offset of the object's closing brace once Next has
// returned false without an error, else -1.
func (it *Iter) Close() int { return it.close }

// Find returns the first top-level member of obj whose decoded key is
// name, walking the members in order and stopping there. found is false
// when there is none; err is set when obj is malformed before that point
// (or anywhere, when name is absent). It validates what it walks exactly
// as an Iter does, but runs about a third faster than an Iter loop: the
// walk is one loop without the Iter's state.
func Find(obj []byte, name string) (m Member, found bool, err error) {
	b := obj
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return Member{}, false, errAt(b, i, "'{'")
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return Member{}, false, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return Member{}, false, errAt(b, i, "a string key")
		}
		m.Key = i
		if m.KeyEnd, m.Escaped, err = scanString(b, i); err != nil {
			return Member{}, false, err
		}
		i = skipWS(b, m.KeyEnd)
		if i >= len(b) || b[i] != ':' {
			return Member{}, false, errAt(b, i, "':'")
		}
		m.Val = skipWS(b, i+1)
		if m.Val < len(b) && b[m.Val] == '"' {
			m.End, m.ValEscaped, err = scanString(b, m.Val)
		} else {
			m.ValEscaped = false
			m.End, err = scanValue(b, m.Val, 1)
		}
		if err != nil {
			return Member{}, false, err
		}
		if m.KeyIs(b, name) {
			return m, true, nil
		}
		i = skipWS(b, m.End)
		if i < len(b) && b[i] == '}' {
			return Member{}, false, nil
		}
		if i >= len(b) || b[i] != ',' {
			return Member{}, false, errAt(b, i, "',' or '}'")
		}
		i = skipWS(b, i+1)
	}
}

// Members appends every top-level member of obj to ms (pass a reused
// slice to avoid allocating) and returns it with the offset of the closing
// brace.
func Members(obj []byte, ms []Member) ([]Member, int, error) {
	it := NewIter(obj)
	var m Member
	for it.Next(&m) {
		ms = append(ms, m)
	}
	if it.err != nil {
		return ms, -1, it.err
	}
	return ms, it.close, nil
}

// DecodeValue decodes the JSON value v (as delimited by a Member's Val and
// End) into nil, bool, string, int, float64, []any or map[string]any.
// Numbers written without a fraction or exponent that fit in an int64
// become int; all others become float64.
//
// When alias is true, strings without escapes share v's memory instead of
// being copied: the caller must not use them after v's bytes change. The
// expression steps use that to read fields without allocating, because
// they finish with the values before the record is touched again.
func DecodeValue(v []byte, alias bool) (any, error) {
	d := decoder{b: v, alias: alias}
	out, end, err := d.value(skipWS(v, 0), 0)
	if err != nil {
		return nil, err
	}
	if j := skipWS(v, end); j != len(v) {
		return nil, errAt(v, j, "end of value")
	}
	return out, nil
}

type decoder struct {
	b     []byte
	alias bool
}

func (d *decoder) value(i, depth int) (any, int, error) {
	b := d.b
	if i >= len(b) {
		return nil, i, errAt(b, i, "a value")
	}
	switch c := b[i]; {
	case c == '"':
		s, end, err := d.str(i)
		return s, end, err
	case c == 't':
		end, err := scanLiteral(b, i, "true")
		return true, end, err
	case c == 'f':
		end, err := scanLiteral(b, i, "false")
		return false, end, err
	case c == 'n':
		end, err := scanLiteral(b, i, "null")
		return nil, end, err
	case c == '-' || (c >= '0' && c <= '9'):
		end, err := scanNumber(b, i)
		if err != nil {
			return nil, end, err
		}
		return parseNumber(b[i:end]), end, nil
	case c == '[':
		if depth >= maxDepth {
			return nil, i, &SyntaxError{Offset: i, Msg: "nesting too deep"}
		}
		out := []any{}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == ']' {
			return out, i + 1, nil
		}
		for {
			v, end, err := d.value(i, depth+1)
			if err != nil {
				return nil, end, err
			}
			out = append(out, v)
			i = skipWS(b, end)
			if i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if i < len(b) && b[i] == ']' {
				return out, i + 1, nil
			}
			return nil, i, errAt(b, i, "',' or ']'")
		}
	case c == '{':
		if depth >= maxDepth {
			return nil, i, &SyntaxError{Offset: i, Msg: "nesting too deep"}
		}
		out := map[string]any{}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == '}' {
			return out, i + 1, nil
		}
		for {
			if i >= len(b) || b[i] != '"' {
				return nil, i, errAt(b, i, "a string key")
			}
			k, end, err := d.str(i)
			if err != nil {
				return nil, end, err
			}
			i = skipWS(b, end)
			if i >= len(b) || b[i] != ':' {
				return nil, i, errAt(b, i, "':'")
			}
			v, end, err := d.value(skipWS(b, i+1), depth+1)
			if err != nil {
				return nil, end, err
			}
			if _, dup := out[k]; !dup { // first occurrence wins, as for top-level fields
				out[k] = v
			}
			i = skipWS(b, end)
			if i < len(b) && b[i] == ',' {
				i = skipWS(b, i+1)
				continue
			}
			if i < len(b) && b[i] == '}' {
				return out, i + 1, nil
			}
			return nil, i, errAt(b, i, "',' or '}'")
		}
	default:
		return nil, i, errAt(b, i, "a value")
	}
}

func (d *decoder) str(i int) (string, int, error) {
	end, escaped, err := scanString(d.b, i)
	if err != nil {
		return "", end, err
	}
	raw := d.b[i+1 : end-1]
	switch {
	case len(raw) == 0:
		return "", end, nil
	case escaped:
		return string(unescape(make([]byte, 0, len(raw)), raw)), end, nil
	case d.alias:
		return unsafe.String(&raw[0], len(raw)), end, nil
	default:
		return string(raw), end, nil
	}
}

// parseNumber converts a validated JSON number.
func parseNumber(num []byte) any {
	s := unsafe.String(&num[0], len(num)) // only parsed, never retained
	integral := true
	for _, c := range num {
		if c == '.' || c == 'e' || c == 'E' {
			integral = false
			break
		}
	}
	if integral {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return int(n)
		}
	}
	f, _ := strconv.ParseFloat(s, 64) // out of range gives ±Inf, like encoding/json's error-free fallback
	return f
}

// AppendUnescaped appends the decoded text of a string member's value to
// dst: raw is the body between the quotes (obj[m.Val+1:m.End-1]) of a
// string that an Iter, Members or Find validated.
func AppendUnescaped(dst, raw []byte) []byte { return unescape(dst, raw) }

// unescape appends the decoded form of the validated string body raw to
// dst. Invalid surrogate escapes become U+FFFD, as in encoding/json.
func unescape(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		if i+1 >= len(raw) {
			return dst
		}
		switch raw[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(raw, i+2)
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+1 < len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					r2 = hex4(raw, i+2)
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					r = dec
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, raw[i+1])
		}
		i += 2
	}
	return dst
}

func hex4(b []byte, i int) rune {
	if i+4 > len(b) {
		return utf8.RuneError
	}
	var r rune
	for _, c := range b[i : i+4] {
		h := unhex(c)
		if h < 0 {
			return utf8.RuneError
		}
		r = r<<4 | rune(h)
	}
	return r
}
