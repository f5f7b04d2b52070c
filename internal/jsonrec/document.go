package jsonrec

// Document checks that b is exactly one JSON value in valid UTF-8,
// optionally surrounded by JSON whitespace, and calls fn for each
// element of it when it is an array, else once for the value itself. v
// is a subslice of b (no copy) and off its offset in b. A request body
// of "one object or an array of objects" is read this way: fn sees each
// object, and anything else, to reject it.
//
// Nothing is passed to fn unless the whole document is valid: errors are
// *SyntaxError or *UTF8Error, for the document.
func Document(b []byte, fn func(v []byte, off int)) error {
	i := skipWS(b, 0)
	if i == len(b) {
		return &SyntaxError{Offset: i, Msg: "empty input"}
	}
	end, err := scanValue(b, i, 0)
	if err != nil {
		return err
	}
	if j := skipWS(b, end); j != len(b) {
		return &SyntaxError{Offset: j, Msg: "unexpected " + quoteChar(b[j]) + " after the value"}
	}
	if b[i] != '[' {
		fn(b[i:end], i)
		return nil
	}
	// Valid: walk the elements again, without checks.
	i = skipWS(b, i+1)
	for i < end && b[i] != ']' {
		e, _ := scanValue(b, i, 1)
		fn(b[i:e], i)
		i = skipWS(b, e)
		if b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	return nil
}

// AppendCompact appends the valid JSON value v to dst without the
// whitespace between its tokens, so that a pretty-printed object becomes
// one line; strings are copied as they are.
func AppendCompact(dst, v []byte) []byte {
	start := 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"':
			e, _, _ := scanStringFull(v, i)
			i = e - 1
		case c <= ' ' && wsTable[c]:
			dst = append(dst, v[start:i]...)
			start = skipWS(v, i)
			i = start - 1
		}
	}
	return append(dst, v[start:]...)
}
