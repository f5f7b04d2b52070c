package steps

import (
	"github.com/etld/etld/internal/stages"
)

// ParseLogfmtConfig is the config of parse_logfmt: `parse_logfmt: {}`, or
// `parse_logfmt: {field: msg}`.
type ParseLogfmtConfig struct {
	Field string `yaml:"field" doc:"parse the string value of this field of a parsed record instead of the raw line; the parsed fields are merged into the record"`
}

// parseLogfmt parses `k=v k2="quoted \" v" flag` lines.
type parseLogfmt struct{ src fieldSource }

func isLogfmtSpace(c byte) bool { return c == ' ' || c == '\t' }

// parse reads one text as logfmt: space-separated pairs
// `key=value`, `key="quoted value"` (with \" \\ \n \t \r escapes) or a
// bare `key` (true). Values are strings. A key given twice keeps its last
// value. Keys are runs of bytes other than space, '=' and '"'.
func (st *parseLogfmt) parse(line []byte, s *parseScratch) error {
	p := &s.out
	i, n := 0, len(line)
	for {
		for i < n && isLogfmtSpace(line[i]) {
			i++
		}
		if i == n {
			return nil
		}
		k0 := i
		for i < n && line[i] != '=' && line[i] != '"' && !isLogfmtSpace(line[i]) {
			i++
		}
		if i == k0 {
			if line[i] == '=' {
				return st.src.parseErr(i, "want a key before '='")
			}
			return st.src.parseErr(i, "want a key, got '\"'")
		}
		key := line[k0:i]
		if i == n || isLogfmtSpace(line[i]) {
			p.begin(key)
			p.enc = append(p.enc, "true"...)
			p.end()
			continue
		}
		if line[i] == '"' {
			return st.src.parseErr(i, "want '=' or a space after key %q, got '\"'", key)
		}
		i++ // '='
		switch {
		case i == n || isLogfmtSpace(line[i]):
			p.addString(key, nil)
		case line[i] == '"':
			q := i
			i++
			v0 := i
			esc := false
			for i < n && line[i] != '"' {
				if line[i] == '\\' {
					esc = true
					i++
				}
				i++
			}
			if i >= n {
				return st.src.parseErr(n, "want a closing '\"' (the value opened at byte %d)", q)
			}
			val := line[v0:i]
			if esc {
				s.spare = unescapeLogfmt(s.spare[:0], val)
				val = s.spare
			}
			p.addString(key, val)
			i++
			if i < n && !isLogfmtSpace(line[i]) {
				return st.src.parseErr(i, "want a space after the closing '\"'")
			}
		default:
			v0 := i
			for i < n && !isLogfmtSpace(line[i]) {
				if line[i] == '"' || line[i] == '=' {
					return st.src.parseErr(i, "want a space or a quoted value, got %q in an unquoted value", line[i])
				}
				i++
			}
			p.addString(key, line[v0:i])
		}
	}
}

// unescapeLogfmt appends the value of a quoted logfmt string body: \n, \t
// and \r are control characters, a backslash before anything else stands
// for that byte (\" and \\ included).
func unescapeLogfmt(dst, v []byte) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c != '\\' || i+1 == len(v) {
			dst = append(dst, c)
			continue
		}
		i++
		switch v[i] {
		case 'n':
			dst = append(dst, '\n')
		case 't':
			dst = append(dst, '\t')
		case 'r':
			dst = append(dst, '\r')
		default:
			dst = append(dst, v[i])
		}
	}
	return dst
}

func init() {
	register(stepFactory("parse_logfmt",
		"Parses logfmt (`ts=2024-05-01T10:00:00Z level=info msg=\"user \\\"bob\\\" logged in\" cached`) into string fields; "+
			"a bare key is `true`, a key given twice keeps its last value, and a line that is not logfmt "+
			"(an unterminated quote, `=v` without a key) is a bad record.",
		stages.Caps{Parses: true},
		func(_ stages.Settings, c *ParseLogfmtConfig) (stages.Step, error) {
			st := &parseLogfmt{src: fieldSource{Name: c.Field}}
			return newTextStep("parse_logfmt", c.Field, st.parse), nil
		}))
}
