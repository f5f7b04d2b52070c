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
// An unset variable without a default is an error at its position.
func interpolate(n *yaml.Node, env LookupEnv, r reporter) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			interpolate(c, env, r)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			interpolate(n.Content[i], env, r)
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "$") {
			return
		}
		out, errOff, err := expand(n.Value, env)
		if err != nil {
			pos := *n
			// Point at the "${" itself when the scalar is on one line.
			if !strings.Contains(n.Value[:errOff], "\n") {
				pos.Column += errOff
				if n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 {
					pos.Column++
				}
			}
			r.errorf(&pos, "%v", err)
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
