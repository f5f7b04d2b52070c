package steps

import (
	"errors"
	"fmt"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// ParseCSVConfig is the config of parse_csv: `parse_csv: {columns: [ts,
// user, amount]}`.
type ParseCSVConfig struct {
	Columns   []string `yaml:"columns" doc:"the field name of each column, in order; a line with another number of columns is a bad record"`
	Delimiter string   `yaml:"delimiter" doc:"the column separator, one ASCII character other than '\"'; a tab is written \"\\t\" (in double quotes)"`
	Field     string   `yaml:"field" doc:"parse the string value of this field of a parsed record instead of the raw line; the parsed fields are merged into the record"`
}

func (c *ParseCSVConfig) setDefaults() { c.Delimiter = "," }

// Validate checks the columns and the delimiter.
func (c *ParseCSVConfig) Validate() error {
	var errs []error
	if len(c.Columns) == 0 {
		errs = append(errs, stages.FieldErr("columns", errors.New("want at least one column name")))
	}
	seen := map[string]bool{}
	for i, name := range c.Columns {
		switch {
		case name == "":
			errs = append(errs, stages.FieldErr("columns", fmt.Errorf("column %d has an empty name", i+1)))
		case seen[name]:
			errs = append(errs, stages.FieldErr("columns", fmt.Errorf("column %q given twice", name)))
		}
		seen[name] = true
	}
	if d := c.Delimiter; len(d) != 1 || d[0] >= 0x80 || d[0] == '"' || d[0] == '\n' || d[0] == '\r' {
		errs = append(errs, stages.FieldErr("delimiter", fmt.Errorf("invalid delimiter %q: want one ASCII character other than '\"' and line breaks", d)))
	}
	return errors.Join(errs...)
}

// parseCSV splits lines into the configured columns.
type parseCSV struct {
	src     fieldSource
	columns [][]byte
	prefix  [][]byte // `"column":`
	delim   byte
}

// parse reads one text as one CSV row (RFC 4180): fields are
// separated by the delimiter; a field that starts with '"' is quoted, may
// hold delimiters and '""' (one quote), and must end with '"' followed by
// the delimiter or the end of the line. A '"' inside an unquoted field is
// kept as is. Every column becomes a string field; a row with another
// number of columns is a bad record.
func (st *parseCSV) parse(line []byte, s *parseScratch) error {
	p := &s.out
	d := st.delim
	n, col := len(line), 0
	for i := 0; ; col++ {
		var val []byte
		if i < n && line[i] == '"' {
			q := i
			i++
			s.spare = s.spare[:0]
			for {
				j := i
				for j < n && line[j] != '"' {
					j++
				}
				if j >= n {
					return st.src.parseErr(n, "want a closing '\"' (the quoted field opened at byte %d)", q)
				}
				s.spare = append(s.spare, line[i:j]...)
				if j+1 < n && line[j+1] == '"' {
					s.spare = append(s.spare, '"')
					i = j + 2
					continue
				}
				i = j + 1
				break
			}
			if i < n && line[i] != d {
				return st.src.parseErr(i, "want %q or the end of the line after a quoted field", d)
			}
			val = s.spare
		} else {
			j := i
			for j < n && line[j] != d {
				j++
			}
			val, i = line[i:j], j
		}
		if col < len(st.columns) {
			p.addStringUnique(st.columns[col], st.prefix[col], val)
		}
		if i >= n {
			break
		}
		i++ // the delimiter
	}
	if col+1 != len(st.columns) {
		return fmt.Errorf("got %d columns, want %d%s", col+1, len(st.columns), st.src.where())
	}
	return nil
}

func init() {
	register(stepFactory("parse_csv",
		"Parses each line as one CSV row (RFC 4180 quoting, `\"\"` for a quote) into one string field per named column "+
			"(`parse_csv: {columns: [ts, user, amount]}`); a row with another number of columns, or a broken quote, "+
			"is a bad record.",
		stages.Caps{Parses: true},
		func(_ stages.Settings, c *ParseCSVConfig) (stages.Step, error) {
			st := &parseCSV{src: fieldSource{Name: c.Field}, delim: c.Delimiter[0]}
			for _, name := range c.Columns {
				st.columns = append(st.columns, []byte(name))
				st.prefix = append(st.prefix, jsonrec.AppendKey(nil, name))
			}
			return newTextStep("parse_csv", c.Field, st.parse), nil
		}))
}
