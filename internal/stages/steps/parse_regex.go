package steps

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// ParseRegexConfig is the config of parse_regex: `parse_regex: {pattern:
// '^(?P<ip>\S+) (?P<msg>.*)$'}` or `parse_regex: {preset: nginx_combined}`.
type ParseRegexConfig struct {
	Pattern string `yaml:"pattern" doc:"an RE2 regular expression (https://github.com/google/re2/wiki/Syntax) with at least one named group (?P<name>...); each named group that takes part in the match becomes a string field, unnamed groups are ignored; exactly one of pattern and preset"`
	Preset  string `yaml:"preset" doc:"a built-in format: nginx_combined, apache_common or apache_combined (fields: remote_addr, ident (apache only), remote_user, time_local, request, method, path, protocol (these three when the request is three words), status, body_bytes_sent, and for the combined formats http_referer, http_user_agent); exactly one of pattern and preset"`
	Field   string `yaml:"field" doc:"parse the string value of this field of a parsed record instead of the raw line; the parsed fields are merged into the record"`

	re     *regexp.Regexp // compiled by Validate
	preset *accessLogFormat
}

// accessLogFormat is a preset: the regexp that defines it and the
// options of the hand-written matcher that implements it.
type accessLogFormat struct {
	pattern  string
	ident    bool // apache's %l is a field; nginx writes a literal '-'
	combined bool // referer and user agent follow
}

// The presets' fields, in the order of their groups.
const (
	accessRemote  = `^(?P<remote_addr>[^ ]+) `
	accessRequest = `\[(?P<time_local>[^\]]*)\] "(?P<request>(?P<method>[^ "]+) (?P<path>[^ "]+) (?P<protocol>[^ "]+)|[^"]*)" ` +
		`(?P<status>[0-9]{3}) (?P<body_bytes_sent>[0-9]+|-)`
	accessAgent = ` "(?P<http_referer>[^"]*)" "(?P<http_user_agent>[^"]*)"`
)

// presets are the formats of parse_regex's preset option:
//
//	nginx_combined   $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"
//	apache_common    %h %l %u %t "%r" %>s %b
//	apache_combined  %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"
//
// method, path and protocol are set when the request is three
// space-separated words (not for a garbled request such as "-").
var presets = map[string]*accessLogFormat{
	"nginx_combined":  {pattern: accessRemote + `- (?P<remote_user>[^ ]+) ` + accessRequest + accessAgent + `$`, combined: true},
	"apache_common":   {pattern: accessRemote + `(?P<ident>[^ ]+) (?P<remote_user>[^ ]+) ` + accessRequest + `$`, ident: true},
	"apache_combined": {pattern: accessRemote + `(?P<ident>[^ ]+) (?P<remote_user>[^ ]+) ` + accessRequest + accessAgent + `$`, ident: true, combined: true},
}

func presetNames() string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func (c *ParseRegexConfig) compiled() bool { return c.re != nil }

// Validate compiles the pattern or looks the preset up.
func (c *ParseRegexConfig) Validate() error {
	c.re, c.preset = nil, nil
	switch {
	case c.Pattern == "" && c.Preset == "":
		return stages.FieldErr("", errors.New("parse_regex: want pattern or preset"))
	case c.Pattern != "" && c.Preset != "":
		return stages.FieldErr("preset", errors.New("want pattern or preset, not both"))
	case c.Preset != "":
		p, ok := presets[c.Preset]
		if !ok {
			return stages.FieldErr("preset", fmt.Errorf("unknown preset %q (valid: %s)", c.Preset, presetNames()))
		}
		c.preset, c.re = p, regexp.MustCompile(p.pattern)
		return nil
	}
	re, err := regexp.Compile(c.Pattern)
	if err != nil {
		return stages.FieldErr("pattern", err)
	}
	if !slices.ContainsFunc(re.SubexpNames(), func(n string) bool { return n != "" }) {
		return stages.FieldErr("pattern", errors.New("want at least one named group (?P<name>...): each one is a field"))
	}
	c.re = re
	return nil
}

// parseRegex extracts the named groups of a regexp, or of a preset.
type parseRegex struct {
	src    fieldSource
	re     *regexp.Regexp
	preset *accessLogFormat
	names  [][]byte // group names by group number; nil for unnamed
	prefix [][]byte // `"name":` by group number, when the names are distinct
	groups int      // 2 * (number of groups + 1): the length of the offsets
}

// parse matches one text; the named groups that take part in the match
// become string fields, in group order. A text that does not match is a
// bad record.
func (st *parseRegex) parse(text []byte, s *parseScratch) error {
	if st.preset != nil {
		if cap(s.idx) < st.groups {
			s.idx = make([]int, st.groups)
		}
		s.idx = s.idx[:st.groups]
		if err := st.preset.match(text, s.idx, st.src); err != nil {
			return err
		}
	} else if s.idx = st.re.FindSubmatchIndex(text); s.idx == nil {
		return fmt.Errorf("no match for the pattern%s", st.src.where())
	}
	for g, name := range st.names {
		switch {
		case name == nil || s.idx[2*g] < 0:
		case st.prefix != nil:
			s.out.addStringUnique(name, st.prefix[g], text[s.idx[2*g]:s.idx[2*g+1]])
		default: // RE2 allows a name twice: the last group that matched wins
			s.out.addString(name, text[s.idx[2*g]:s.idx[2*g+1]])
		}
	}
	return nil
}

// match is the preset's regexp written by hand, about five times faster
// than package regexp (BenchmarkNginxPreset, BenchmarkNginxRegexp): it
// fills idx (2 offsets per group, group 0 the whole text, -1 for a group
// that does not take part) exactly as
// FindSubmatchIndex would (TestPresetsAgreeWithRegexp and
// FuzzPresetsAgreeWithRegexp check that), or says what it wanted where.
func (f *accessLogFormat) match(t []byte, idx []int, src fieldSource) error {
	n := len(t)
	i := 0
	g := 1 // next group
	set := func(a, b int) {
		idx[2*g], idx[2*g+1] = a, b
		g++
	}
	word := func(what string) error { // [^ ]+ then ' '
		j := i
		for j < n && t[j] != ' ' {
			j++
		}
		if j == i {
			return src.parseErr(i, "want %s", what)
		}
		if j == n {
			return src.parseErr(j, "want ' ' after %s", what)
		}
		set(i, j)
		i = j + 1
		return nil
	}
	lit := func(s string) error {
		if n-i < len(s) || string(t[i:i+len(s)]) != s {
			return src.parseErr(i, "want %q", s)
		}
		i += len(s)
		return nil
	}
	// quoted reads [^"]* up to the next '"', sets its group and moves
	// past that quote.
	quoted := func(what string) error {
		j := i
		for j < n && t[j] != '"' {
			j++
		}
		if j == n {
			return src.parseErr(j, "want '\"' to end %s", what)
		}
		set(i, j)
		i = j + 1
		return nil
	}
	idx[0], idx[1] = 0, n
	if err := word("remote_addr"); err != nil {
		return err
	}
	if f.ident {
		if err := word("ident"); err != nil {
			return err
		}
	} else if err := lit("- "); err != nil {
		return err
	}
	if err := word("remote_user"); err != nil {
		return err
	}
	if err := lit("["); err != nil {
		return err
	}
	j := i
	for j < n && t[j] != ']' {
		j++
	}
	set(i, j)
	i = j
	if err := lit(`] "`); err != nil {
		return err
	}
	reqStart := i
	if err := quoted("the request"); err != nil {
		return err
	}
	splitRequest(t, reqStart, i-1, idx[2*g:2*g+6])
	g += 3
	if err := lit(" "); err != nil {
		return err
	}
	if n-i < 4 || !isDigit(t[i]) || !isDigit(t[i+1]) || !isDigit(t[i+2]) || t[i+3] != ' ' {
		return src.parseErr(i, "want a 3-digit status and ' '")
	}
	set(i, i+3)
	i += 4
	j = i
	for j < n && isDigit(t[j]) {
		j++
	}
	if j == i {
		if j < n && t[j] == '-' {
			j++
		} else {
			return src.parseErr(i, "want body_bytes_sent (digits or '-')")
		}
	}
	set(i, j)
	i = j
	if f.combined {
		if err := lit(` "`); err != nil {
			return err
		}
		if err := quoted("http_referer"); err != nil {
			return err
		}
		if err := lit(` "`); err != nil {
			return err
		}
		if err := quoted("http_user_agent"); err != nil {
			return err
		}
	}
	if i != n {
		return src.parseErr(i, "want the end of the line")
	}
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// splitRequest sets the method, path and protocol offsets in idx (6 ints)
// when t[a:b] is exactly three non-empty words separated by single
// spaces, else -1: `(?P<method>[^ "]+) (?P<path>[^ "]+) (?P<protocol>[^ "]+)`.
func splitRequest(t []byte, a, b int, idx []int) {
	for k := range idx {
		idx[k] = -1
	}
	s1 := a
	for s1 < b && t[s1] != ' ' {
		s1++
	}
	s2 := s1 + 1
	for s2 < b && t[s2] != ' ' {
		s2++
	}
	if s1 == a || s1 >= b || s2 == s1+1 || s2 >= b-1 {
		return
	}
	for k := s2 + 1; k < b; k++ {
		if t[k] == ' ' {
			return
		}
	}
	idx[0], idx[1], idx[2], idx[3], idx[4], idx[5] = a, s1, s1+1, s2, s2+1, b
}

func init() {
	register(stepFactory("parse_regex",
		"Matches each line against an RE2 pattern (`pattern: '^(?P<ip>\\S+) (?P<msg>.*)$'`) or a preset (`preset: nginx_combined`, "+
			"`apache_common`, `apache_combined`), giving one string field per named group; a line that does not match "+
			"is a bad record.",
		stages.Caps{Parses: true},
		func(_ stages.Settings, c *ParseRegexConfig) (stages.Step, error) {
			st := &parseRegex{src: fieldSource{Name: c.Field}, re: c.re, preset: c.preset, groups: 2 * (c.re.NumSubexp() + 1)}
			seen := map[string]bool{}
			distinct := true
			for _, name := range c.re.SubexpNames() {
				if name == "" {
					st.names = append(st.names, nil)
					st.prefix = append(st.prefix, nil)
					continue
				}
				distinct = distinct && !seen[name]
				seen[name] = true
				st.names = append(st.names, []byte(name))
				st.prefix = append(st.prefix, jsonrec.AppendKey(nil, name))
			}
			if !distinct {
				st.prefix = nil
			}
			return newTextStep("parse_regex", c.Field, st.parse), nil
		}))
}
