package config

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"
)

// LookupEnv looks up an environment variable (os.LookupEnv in production,
// a map in tests).
type LookupEnv func(string) (string, bool)

// interpolate expands ${VAR}, ${VAR:-default} and $$ in every scalar value
// of the tree (mapping keys are left alone: they are ids and option names).
// An unset variable without a default is an error at its position. lines
// is the source, split at newlines, to locate references.
func interpolate(n *yaml.Node, env LookupEnv, r reporter, lines [][]byte) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			interpolate(c, env, r, lines)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			interpolate(n.Content[i], env, r, lines)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return
		}
		out, errOff, err := expand(n.Value, env)
		if err != nil {
			r.errorf(refPos(n, errOff, lines), "%v", err)
			return
		}
		if out != n.Value {
			n.Value = out
			if n.Style == 0 || n.Style == yaml.FlowStyle {
				// A plain scalar is re-resolved after expansion, so
				// `concurrency: ${N:-4}` is the integer 4.
				n.Tag = ""
			}
		}
	}
}

// refPos is where to report a problem with the reference at byte offset
// off of n's value: at its "${" when the source holds the value verbatim up
// to there on the scalar's first line, else at the scalar itself. (A
// scalar's value is not its source text: line breaks of plain and quoted
// scalars fold into spaces, escapes are decoded, and a block scalar starts
// on the line after its indicator.) Columns count characters, like
// yaml.v3's.
func refPos(n *yaml.Node, off int, lines [][]byte) *yaml.Node {
	pos := *n
	if n.Line < 1 || n.Line > len(lines) || n.Column < 1 {
		return &pos
	}
	col := n.Column
	if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 {
		col++ // the quote
	}
	line := []rune(string(lines[n.Line-1]))
	want := []rune(n.Value[:off] + "${")
	if col-1+len(want) <= len(line) && string(line[col-1:col-1+len(want)]) == string(want) {
		pos.Column = col + len(want) - 2
	}
	return &pos
}

// expand replaces ${VAR}, ${VAR:-default} and $$ in s. A lone "$" not
// followed by "{" or "$" is kept as is. On error it returns the byte offset
// of the offending reference.
func expand(s string, env LookupEnv) (string, int, error) {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i += 2
			continue
		case '{':
		default:
			b.WriteByte(c)
			i++
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", i, fmt.Errorf("unterminated ${ in %q (write $$ for a literal $)", s)
		}
		ref := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validVarName(name) {
			return "", i, fmt.Errorf("invalid variable reference ${%s} (want ${NAME} or ${NAME:-default})", ref)
		}
		v, ok := env(name)
		switch {
		case ok && (v != "" || !hasDef):
			b.WriteString(v)
		case hasDef:
			b.WriteString(def)
		default:
			return "", i, fmt.Errorf("environment variable %s is not set (use ${%s:-default} for a default)", name, name)
		}
		i += 2 + end + 1
	}
	return b.String(), 0, nil
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}
