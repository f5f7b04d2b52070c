// Package jsonrec gives lazy, allocation-free access to the top-level
// members of a JSON object held as raw bytes, which is how etld records
// travel once parse_json has accepted them.
//
// Nothing here unmarshals a whole record: ValidObject checks a line once,
// Iter and Members locate top-level members by byte offsets, DecodeValue
// turns one member's value into a Go value on demand, and AppendEdited
// writes a new object with some members replaced, removed or appended while
// copying every other byte verbatim.
//
// All functions are safe for concurrent use; none keeps a reference to its
// arguments after returning, except where DecodeValue is asked to alias.
package jsonrec

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// maxDepth bounds the nesting of arrays and objects, like encoding/json,
// so a hostile line cannot exhaust the stack.
const maxDepth = 10000

// SyntaxError reports why a line is not valid JSON and where.
type SyntaxError struct {
	Offset int    // byte offset in the input
	Msg    string // what is wrong, lowercase
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON: %s at offset %d", e.Msg, e.Offset)
}

// UTF8Error reports the first byte that is not valid UTF-8.
type UTF8Error struct {
	Offset int
}

func (e *UTF8Error) Error() string {
	return fmt.Sprintf("invalid UTF-8 at offset %d", e.Offset)
}

// ValidObject checks that b is exactly one JSON object, optionally
// surrounded by JSON whitespace, and that it is valid UTF-8 (inside strings
// too, which encoding/json does not check). It returns the object without
// the surrounding whitespace (a subslice of b, no copy).
//
// Errors are *UTF8Error or *SyntaxError; a valid JSON value that is not an
// object (an array, a string, ...) is a *SyntaxError too.
func ValidObject(b []byte) ([]byte, error) {
	obj, _, _, err := validObject(b, nil, false)
	return obj, err
}

// validObject is ValidObject, appending the top-level members to ms when
// members is set (then len(b) < MaxSpanOffset).
func validObject(b []byte, ms []Span, members bool) ([]byte, []Span, int, error) {
	// UTF-8 is checked inside strings; elsewhere only ASCII is valid JSON.
	i := skipWS(b, 0)
	if i == len(b) {
		return nil, ms, -1, &SyntaxError{Offset: i, Msg: "empty input"}
	}
	if b[i] != '{' {
		// Say what it is when it is valid JSON, which helps users who feed
		// arrays or bare values.
		if end, err := scanValue(b, i, 0); err == nil && skipWS(b, end) == len(b) {
			return nil, ms, -1, &SyntaxError{Offset: i, Msg: "want an object, got " + kindName(b[i])}
		}
		return nil, ms, -1, &SyntaxError{Offset: i, Msg: "want an object, got " + quoteChar(b[i])}
	}
	var end int
	var err error
	if !members {
		end, err = scanObject(b, i, 1)
	} else {
		n := len(ms)
		end, ms, err = scanMembers(b, i, ms)
		if i > 0 { // offsets into b[i:end]
			d := uint32(i)
			for k := n; k < len(ms); k++ {
				m := &ms[k]
				m.Key, m.KeyEnd, m.Val, m.End = m.Key-d, m.KeyEnd-d, m.Val-d, m.End-d
			}
		}
	}
	if err != nil {
		return nil, ms, -1, err
	}
	if j := skipWS(b, end); j != len(b) {
		return nil, ms, -1, &SyntaxError{Offset: j, Msg: "unexpected " + quoteChar(b[j]) + " after the object"}
	}
	return b[i:end], ms, end - 1 - i, nil
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// KindName names the kind of the JSON value that starts with c ("an
// object", "an array", "a string", "a boolean", "null", "a number"), for
// messages such as `field "x" is a number, want a string`.
func KindName(c byte) string { return kindName(c) }

func kindName(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func quoteChar(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return fmt.Sprintf("character %q", c)
	}
	if c >= utf8.RuneSelf {
		return fmt.Sprintf("byte 0x%02x (invalid UTF-8 or not JSON)", c)
	}
	return fmt.Sprintf("byte 0x%02x", c)
}

// wsTable marks JSON whitespace.
var wsTable = [256]bool{' ': true, '\t': true, '\n': true, '\r': true}

// strPlain marks bytes that may appear unescaped in a JSON string and need
// no further attention: everything but control characters, '"' and '\\'.
// Bytes >= 0x80 are plain because callers check UTF-8 separately.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func skipWS(b []byte, i int) int {
	for i < len(b) && b[i] <= ' ' && wsTable[b[i]] {
		i++
	}
	return i
}

func errAt(b []byte, i int, want string) error {
	if i >= len(b) {
		return &SyntaxError{Offset: len(b), Msg: "unexpected end of input, want " + want}
	}
	return &SyntaxError{Offset: i, Msg: "unexpected " + quoteChar(b[i]) + ", want " + want}
}

// scanValue validates the value starting at b[i] and returns the offset
// just past it. depth is the nesting level of the enclosing container.
func scanValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, errAt(b, i, "a value")
	}
	switch c := b[i]; c {
	case '{':
		return scanObject(b, i, depth+1)
	case '[':
		return scanArray(b, i, depth+1)
	case '"':
		end, _, err := scanString(b, i)
		return end, err
	case 't':
		return scanLiteral(b, i, "true")
	case 'f':
		return scanLiteral(b, i, "false")
	case 'n':
		return scanLiteral(b, i, "null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			return scanNumber(b, i)
		}
		return i, errAt(b, i, "a value")
	}
}

func scanLiteral(b []byte, i int, lit string) (int, error) {
	for k := 0; k < len(lit); k++ {
		if i+k >= len(b) || b[i+k] != lit[k] {
			return i + k, errAt(b, i+k, fmt.Sprintf("%q", lit))
		}
	}
	return i + len(lit), nil
}

// scanObject validates the object whose '{' is at b[i].
func scanObject(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return i, &SyntaxError{Offset: i, Msg: "nesting too deep"}
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, errAt(b, i, "a string key")
		}
		var err error
		if i, _, err = scanString(b, i); err != nil {
			return i, err
		}
		i = skipWS(b, i)
		if i >= len(b) || b[i] != ':' {
			return i, errAt(b, i, "':'")
		}
		if i = skipWS(b, i+1); i < len(b) && b[i] == '"' {
			i, _, err = scanString(b, i) // the commonest value, without scanValue's dispatch
		} else {
			i, err = scanValue(b, i, depth)
		}
		if err != nil {
			return i, err
		}
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == '}' {
			return i + 1, nil
		}
		return i, errAt(b, i, "',' or '}'")
	}
}

// scanMembers is scanObject for a top-level object (depth 1) that also
// appends its members to ms, with offsets into b, which is shorter than
// MaxSpanOffset.
func scanMembers(b []byte, i int, ms []Span) (int, []Span, error) {
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, ms, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return i, ms, errAt(b, i, "a string key")
		}
		key := i
		end, escaped, err := scanString(b, i)
		if err != nil {
			return end, ms, err
		}
		keyEnd := uint32(end)
		if escaped {
			keyEnd |= spanFlag
		}
		// Compact JSON has no whitespace between the tokens: each skipWS
		// below runs only when the byte it would skip is <= ' ', so the
		// commonest record reads each separator once.
		i = end
		if i >= len(b) || b[i] != ':' {
			if i = skipWS(b, i); i >= len(b) || b[i] != ':' {
				return i, ms, errAt(b, i, "':'")
			}
		}
		val := i + 1
		if val < len(b) && b[val] <= ' ' {
			val = skipWS(b, val)
		}
		escaped = false
		if val < len(b) && b[val] == '"' {
			end, escaped, err = scanString(b, val)
		} else if val < len(b) && (b[val]-'0' <= 9 || b[val] == '-') {
			end, err = scanNumber(b, val) // the next commonest, as scanValue would
		} else {
			end, err = scanValue(b, val, 1)
		}
		if err != nil {
			return end, ms, err
		}
		valEnd := uint32(end)
		if escaped {
			valEnd |= spanFlag
		}
		ms = append(ms, Span{Key: uint32(key), KeyEnd: keyEnd, Val: uint32(val), End: valEnd})
		i = end
		if i < len(b) && b[i] <= ' ' {
			i = skipWS(b, i)
		}
		if i < len(b) {
			switch b[i] {
			case ',':
				if i++; i < len(b) && b[i] <= ' ' {
					i = skipWS(b, i)
				}
				continue
			case '}':
				return i + 1, ms, nil
			}
		}
		return i, ms, errAt(b, i, "',' or '}'")
	}
}

// scanArray validates the array whose '[' is at b[i].
func scanArray(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return i, &SyntaxError{Offset: i, Msg: "nesting too deep"}
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		var err error
		if i, err = scanValue(b, i, depth); err != nil {
			return i, err
		}
		i = skipWS(b, i)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
			continue
		}
		if i < len(b) && b[i] == ']' {
			return i + 1, nil
		}
		return i, errAt(b, i, "',' or ']'")
	}
}

// SWAR constants: one bit or one value per byte of a 64-bit word.
const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// special flags the bytes of x (little-endian) that end a run of plain
// string bytes: control characters, '"' and '\\'. Only the lowest flag is
// exact (borrows can set flags above it), which is all scanString uses.
// XOR with an ASCII byte keeps the high bit, so ^x masks all three tests.
func special(x uint64) uint64 {
	q := x ^ (lsb * '"')
	bs := x ^ (lsb * '\\')
	return ((x - lsb*0x20) | (q - lsb) | (bs - lsb)) &^ x & msb
}

// stop flags the bytes of x that stop scanString's fast loop: those
// special flags, and bytes >= 0x80. It is special(x) | x&msb in fewer
// operations: a byte >= 0x80 is flagged whatever the subtractions give,
// so they need no masking. The lowest flag is exact, as in special.
func stop(x uint64) uint64 {
	return ((x - lsb*0x20) | ((x ^ (lsb * '"')) - lsb) | ((x ^ (lsb * '\\')) - lsb) | x) & msb
}

// scanString validates the string whose opening quote is at b[i],
// including its UTF-8. It returns the offset just past the closing quote
// and whether the string contains escapes.
//
// Most strings are plain ASCII without escapes: the first loop looks for
// the closing quote eight bytes at a time and stops at anything else
// (a control byte, a backslash, a byte >= 0x80), handing the string to
// scanStringFull. That loop is all a typical key or value costs.
func scanString(b []byte, i int) (end int, escaped bool, err error) {
	j := i + 1
	for ; j+8 <= len(b); j += 8 {
		x := binary.LittleEndian.Uint64(b[j:])
		if s := stop(x); s != 0 {
			j += bits.TrailingZeros64(s) >> 3
			if b[j] == '"' {
				return j + 1, false, nil
			}
			return scanStringFull(b, i)
		}
	}
	// Fewer than eight bytes left (the last string of a line): the last
	// eight bytes of b, shifted so that b[j] is the lowest, give them in
	// one word. The zero bytes shifted in look like control characters,
	// so a flag at or past n means no quote in b[j:].
	if n := len(b) - j; n > 0 && len(b) >= 8 {
		x := binary.LittleEndian.Uint64(b[len(b)-8:]) >> (8 * (8 - n))
		if s := stop(x); s != 0 {
			if k := bits.TrailingZeros64(s) >> 3; k < n && b[j+k] == '"' {
				return j + k + 1, false, nil
			}
		}
	}
	return scanStringFull(b, i)
}

// scanStringFull is scanString for any string: plain runs are skipped
// eight bytes at a time; UTF-8 is decoded only when a byte >= 0x80 was
// seen.
func scanStringFull(b []byte, i int) (end int, escaped bool, err error) {
	start := i + 1
	i++
	var high uint64
	for {
		for {
			if i+8 <= len(b) {
				x := binary.LittleEndian.Uint64(b[i:])
				high |= x // may include bytes past the run: only costs a UTF-8 check
				if s := special(x); s != 0 {
					i += bits.TrailingZeros64(s) >> 3
					break
				}
				i += 8
				continue
			}
			for i < len(b) && strPlain[b[i]] {
				high |= uint64(b[i])
				i++
			}
			break
		}
		if i < len(b) && b[i] == '"' {
			if high&msb != 0 {
				return checkUTF8(b, start, i, escaped)
			}
			return i + 1, escaped, nil
		}
		if i+1 < len(b) && b[i] == '\\' && shortEscape[b[i+1]] {
			escaped = true
			i += 2
			continue
		}
		// Rare paths out of line, to keep this loop small.
		if i, err = scanStringSlow(b, i); err != nil {
			return i, true, err
		}
		escaped = true
	}
}

// shortEscape marks the characters allowed after a backslash, but 'u'.
var shortEscape = [256]bool{'"': true, '\\': true, '/': true, 'b': true, 'f': true, 'n': true, 'r': true, 't': true}

// checkUTF8 ends scanString for a string with bytes >= 0x80.
func checkUTF8(b []byte, start, quote int, escaped bool) (int, bool, error) {
	if !utf8.Valid(b[start:quote]) {
		return quote, escaped, &UTF8Error{Offset: start + firstInvalidUTF8(b[start:quote])}
	}
	return quote + 1, escaped, nil
}

// scanStringSlow handles what stops scanString's fast loop other than the
// closing quote and short escapes: a \uXXXX escape (returns the offset
// past it) or an error.
func scanStringSlow(b []byte, i int) (int, error) {
	if i >= len(b) {
		return i, &SyntaxError{Offset: i, Msg: "unterminated string"}
	}
	if b[i] != '\\' {
		return i, &SyntaxError{Offset: i, Msg: "control " + quoteChar(b[i]) + " in string"}
	}
	if i+1 >= len(b) {
		return i + 1, &SyntaxError{Offset: i + 1, Msg: "unterminated string"}
	}
	if b[i+1] != 'u' {
		return i + 1, &SyntaxError{Offset: i + 1, Msg: "invalid escape " + quoteChar(b[i+1])}
	}
	for k := i + 2; k < i+6; k++ {
		if k >= len(b) || unhex(b[k]) < 0 {
			return k, errAt(b, k, "a hex digit in \\u escape")
		}
	}
	return i + 6, nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func isDigit(b []byte, i int) bool { return i < len(b) && b[i]-'0' <= 9 }

// scanNumber validates the number starting at b[i] against the JSON grammar.
func scanNumber(b []byte, i int) (int, error) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case isDigit(b, i):
		for isDigit(b, i) {
			i++
		}
	default:
		return i, errAt(b, i, "a digit")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !isDigit(b, i) {
			return i, errAt(b, i, "a digit after '.'")
		}
		for isDigit(b, i) {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !isDigit(b, i) {
			return i, errAt(b, i, "a digit in the exponent")
		}
		for isDigit(b, i) {
			i++
		}
	}
	return i, nil
}
