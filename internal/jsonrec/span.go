package jsonrec

// Span is a Member in 16 bytes instead of 40, for indexes that keep the
// members of many records (a batch's field index): offsets are uint32 and
// the escape flags are the top bits of KeyEnd and End. Offsets must stay
// below MaxSpanOffset.
type Span struct{ Key, KeyEnd, Val, End uint32 }

const (
	spanFlag = 1 << 31
	// MaxSpanOffset bounds the offsets a Span holds: only an object
	// shorter than that has Spans.
	MaxSpanOffset = spanFlag
)

// SpanOf returns m as a Span; m's offsets must be below MaxSpanOffset.
func SpanOf(m *Member) Span {
	sp := Span{Key: uint32(m.Key), KeyEnd: uint32(m.KeyEnd), Val: uint32(m.Val), End: uint32(m.End)}
	if m.Escaped {
		sp.KeyEnd |= spanFlag
	}
	if m.ValEscaped {
		sp.End |= spanFlag
	}
	return sp
}

// Member returns the member sp stands for.
func (sp Span) Member() Member {
	return Member{Key: int(sp.Key), KeyEnd: int(sp.KeyEnd &^ spanFlag), Val: int(sp.Val), End: int(sp.End &^ spanFlag),
		Escaped: sp.KeyEnd&spanFlag != 0, ValEscaped: sp.End&spanFlag != 0}
}

// KeyEscaped reports whether the key has backslash escapes.
func (sp Span) KeyEscaped() bool { return sp.KeyEnd&spanFlag != 0 }

// RawKey returns the key's bytes between its quotes, still escaped.
func (sp Span) RawKey(obj []byte) []byte { return obj[sp.Key+1 : sp.KeyEnd&^spanFlag-1] }

// ValidObjectSpans is ValidObject that also appends the object's
// top-level members to spans, as Members would find them in the returned
// object, and returns the offset of its closing brace: parse_json indexes
// a record's fields in the same pass that validates it. On error, spans
// is returned as it was given (its capacity may have grown). An object
// of MaxSpanOffset bytes or more is validated but its members are not
// appended, and closeBrace is -1.
func ValidObjectSpans(b []byte, spans []Span) (obj []byte, out []Span, closeBrace int, err error) {
	n := len(spans)
	if len(b) >= MaxSpanOffset {
		obj, err = ValidObject(b)
		return obj, spans, -1, err
	}
	obj, spans, closeBrace, err = validObject(b, spans, true)
	if err != nil {
		return nil, spans[:n], -1, err
	}
	return obj, spans, closeBrace, nil
}
