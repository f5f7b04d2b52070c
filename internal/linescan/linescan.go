// Package linescan reads a field of a JSON line by its bytes, without
// decoding the line: fast enough to check millions of output lines in
// benchmarks and tests. It assumes the compact form etld writes (no
// space after the colon) and finds the first occurrence of the key, so
// it is for lines whose shape the caller knows; a caller that may see
// other lines falls back to encoding/json when ok is false.
package linescan

import "bytes"

// String returns the string after key (`"name":"`, with the opening
// quote) up to the closing quote. ok is false when key is missing, the
// string does not end, or it holds an escape (its bytes are not its
// value then).
func String(line []byte, key string) (s string, ok bool) {
	i := bytes.Index(line, []byte(key))
	if i < 0 {
		return "", false
	}
	rest := line[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 || bytes.IndexByte(rest[:j], '\\') >= 0 {
		return "", false
	}
	return string(rest[:j]), true
}

// Int returns the non-negative decimal integer right after key
// (`"name":`). ok is false when key is missing or no digit follows it.
func Int(line []byte, key string) (n int64, ok bool) {
	i := bytes.Index(line, []byte(key))
	if i < 0 {
		return 0, false
	}
	k := 0
	for _, c := range line[i+len(key):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
		k++
	}
	return n, k > 0
}
