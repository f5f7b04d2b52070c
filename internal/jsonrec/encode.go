package jsonrec

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Edit is one change to an object member, by index in the Members slice.
type Edit struct {
	Member int
	Value  []byte // the new JSON value when Remove is false
	Remove bool
}

// AppendEdited appends to dst the object obj, whose members and closing
// brace offset were found by Members, with edits applied, then add (one or
// more `"key":value` pairs joined by commas, without a leading comma)
// inserted before the closing brace. edits must be sorted by Member with at
// most one edit per member. Every byte outside the edited members is copied
// unchanged, so the output keeps the input's formatting.
//
// dst may be obj[:0] when the result cannot be longer than obj (removals
// only): writes never overtake reads and copies are memmoves.
func AppendEdited(dst, obj []byte, ms []Member, closeBrace int, edits []Edit, add []byte) []byte {
	// Members 0..firstKept-1 are all removed: their run is cut from the
	// first key up to the first kept key, taking the commas with it.
	firstKept := leadingRemovals(edits)
	pos := 0
	if firstKept > 0 {
		dst = append(dst, obj[:ms[0].Key]...)
		if firstKept < len(ms) {
			pos = ms[firstKept].Key
		} else {
			pos = ms[len(ms)-1].End
		}
	}
	for _, e := range edits {
		if e.Member < firstKept {
			continue
		}
		m := &ms[e.Member]
		if e.Remove {
			// A kept member precedes: cut from the end of the previous
			// value, which removes the separating comma.
			dst = append(dst, obj[pos:ms[e.Member-1].End]...)
		} else {
			dst = append(dst, obj[pos:m.Val]...)
			dst = append(dst, e.Value...)
		}
		pos = m.End
	}
	dst = append(dst, obj[pos:closeBrace]...)
	if len(add) > 0 {
		if firstKept < len(ms) {
			dst = append(dst, ',')
		}
		dst = append(dst, add...)
	}
	return append(dst, obj[closeBrace:]...)
}

// leadingRemovals counts the edits that remove members 0, 1, 2, ... in a
// row.
func leadingRemovals(edits []Edit) int {
	n := 0
	for _, e := range edits {
		if e.Member != n || !e.Remove {
			break
		}
		n++
	}
	return n
}

// EditedMembers appends to out the members of the object that
// AppendEdited(dst, obj, ms, closeBrace, edits, add) writes, with offsets
// into that object (dst's bytes from where AppendEdited started), and
// returns them with the offset of its closing brace: what Members would
// find in it, without walking it. Only add is scanned; ok is false when
// add is not valid `"key":value` pairs (out is then unchanged).
func EditedMembers(out []Member, ms []Member, closeBrace int, edits []Edit, add []byte) (_ []Member, newClose int, ok bool) {
	n0 := len(out)
	firstKept := leadingRemovals(edits) // cut as AppendEdited cuts them
	// delta is the new offset minus the old one of the bytes being copied.
	delta := 0
	if firstKept > 0 {
		if firstKept < len(ms) {
			delta = ms[0].Key - ms[firstKept].Key
		} else {
			delta = ms[0].Key - ms[len(ms)-1].End
		}
	}
	ei := 0
	for ei < len(edits) && edits[ei].Member < firstKept {
		ei++
	}
	i := firstKept
	if delta == 0 { // members before the first edit stay where they are
		j := len(ms)
		if ei < len(edits) {
			j = edits[ei].Member
		}
		out = append(out, ms[i:j]...)
		i = j
	}
	for ; i < len(ms); i++ {
		m := ms[i]
		if ei < len(edits) && edits[ei].Member == i {
			e := &edits[ei]
			ei++
			if e.Remove { // cut from the previous value's end
				delta -= m.End - ms[i-1].End
				continue
			}
			nm := Member{Key: m.Key + delta, KeyEnd: m.KeyEnd + delta, Val: m.Val + delta, Escaped: m.Escaped}
			nm.End = nm.Val + len(e.Value)
			nm.ValEscaped = len(e.Value) > 0 && e.Value[0] == '"' && bytes.IndexByte(e.Value, '\\') >= 0
			delta += len(e.Value) - (m.End - m.Val)
			out = append(out, nm)
			continue
		}
		m.Key, m.KeyEnd, m.Val, m.End = m.Key+delta, m.KeyEnd+delta, m.Val+delta, m.End+delta
		out = append(out, m)
	}
	newClose = closeBrace + delta
	if len(add) == 0 {
		return out, newClose, true
	}
	base := newClose
	if firstKept < len(ms) {
		base++ // the comma
	}
	out, ok = pairMembers(out, add, base)
	if !ok {
		return out[:n0], 0, false
	}
	return out, base + len(add), true
}

// pairMembers appends the members of pairs (`"key":value` joined by
// commas, no whitespace needed), placed at offset base, to out.
func pairMembers(out []Member, pairs []byte, base int) ([]Member, bool) {
	b := pairs
	for i := 0; ; {
		if i >= len(b) || b[i] != '"' {
			return out, false
		}
		var m Member
		var err error
		m.Key = i
		if m.KeyEnd, m.Escaped, err = scanString(b, i); err != nil {
			return out, false
		}
		i = skipWS(b, m.KeyEnd)
		if i >= len(b) || b[i] != ':' {
			return out, false
		}
		m.Val = skipWS(b, i+1)
		if m.Val < len(b) && b[m.Val] == '"' {
			m.End, m.ValEscaped, err = scanString(b, m.Val)
		} else {
			m.End, err = scanValue(b, m.Val, 1)
		}
		if err != nil {
			return out, false
		}
		m.Key, m.KeyEnd, m.Val = m.Key+base, m.KeyEnd+base, m.Val+base
		i = skipWS(b, m.End)
		m.End += base
		out = append(out, m)
		if i == len(b) {
			return out, true
		}
		if b[i] != ',' {
			return out, false
		}
		i = skipWS(b, i+1)
	}
}

// AppendMembers appends to dst the object obj with add (`"key":value`
// pairs joined by commas) inserted before its closing brace, without
// looking at its members. obj must be a valid object with no trailing
// whitespace, as parse_json leaves it; ok is false (and dst unchanged)
// when obj does not end with '}'.
func AppendMembers(dst, obj, add []byte) (out []byte, ok bool) {
	n := len(obj)
	if n < 2 || obj[0] != '{' || obj[n-1] != '}' {
		return dst, false
	}
	dst = append(dst, obj[:n-1]...)
	if skipWS(obj, 1) != n-1 { // not empty
		dst = append(dst, ',')
	}
	dst = append(dst, add...)
	return append(dst, '}'), true
}

// AppendKey appends `"name":` to dst.
func AppendKey(dst []byte, name string) []byte {
	return append(AppendString(dst, name), ':')
}

// AppendValue appends the JSON encoding of v to dst. It handles the types
// that DecodeValue and expressions produce (nil, bool, strings, integers,
// floats, []any, map[string]any with keys sorted) without reflection and
// falls back to encoding/json for anything else (time.Time, ...). NaN and
// infinities are errors, as JSON cannot represent them.
func AppendValue(dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), nil
	case bool:
		return strconv.AppendBool(dst, x), nil
	case string:
		return AppendString(dst, x), nil
	case int:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int8:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int16:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int32:
		return strconv.AppendInt(dst, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(dst, x, 10), nil
	case uint:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint8:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint16:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint32:
		return strconv.AppendUint(dst, uint64(x), 10), nil
	case uint64:
		return strconv.AppendUint(dst, x, 10), nil
	case float64:
		return AppendFloat(dst, x, 64)
	case float32:
		return AppendFloat(dst, float64(x), 32)
	case []any:
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = AppendValue(dst, e); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendKey(dst, k)
			var err error
			if dst, err = AppendValue(dst, x[k]); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return dst, fmt.Errorf("cannot encode %T as JSON: %w", v, err)
		}
		return append(dst, b...), nil
	}
}

// AppendFloat appends f formatted like encoding/json does (shortest
// representation, exponent only for very small or large magnitudes).
func AppendFloat(dst []byte, f float64, bits int) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return dst, fmt.Errorf("cannot encode %v as JSON", f)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, format, -1, bits)
	if format == 'e' {
		// Clean up e-09 to e-9, as encoding/json does.
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst, nil
}

const hexDigits = "0123456789abcdef"

// strSafe marks ASCII bytes that need no escaping in a JSON string.
var strSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD
// and U+2028/U+2029 are escaped, as in encoding/json; '<', '>' and '&' are
// left alone.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if strSafe[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
