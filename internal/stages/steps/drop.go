package steps

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// DropConfig is the config of drop, written as a list of field names:
// `drop: [user, msg]` (a single name, `drop: user`, works too).
type DropConfig struct {
	// Fields are the top-level fields to remove.
	Fields []string `yaml:"-" doc:"top-level fields to remove; missing ones are ignored"`
}

// UnmarshalYAML accepts a sequence of strings or one string.
func (c *DropConfig) UnmarshalYAML(n *yaml.Node) (err error) {
	c.Fields, err = fieldList(n, "drop")
	return err
}

// Validate checks that there is at least one non-empty field name.
func (c *DropConfig) Validate() error { return checkFieldList(c.Fields, "drop") }

// fieldList decodes the field names of drop and keep: a sequence of
// strings or one string.
func fieldList(n *yaml.Node, step string) ([]string, error) {
	n = resolve(n)
	want := step + ": want a list of field names, e.g. " + step + ": [user, msg]"
	if n == nil || isNull(n) {
		return nil, errors.New(want)
	}
	switch n.Kind {
	case yaml.ScalarNode:
		return []string{n.Value}, nil
	case yaml.SequenceNode:
		fields := []string{}
		for _, item := range n.Content {
			item = resolve(item)
			if item.Kind != yaml.ScalarNode || isNull(item) {
				return nil, fmt.Errorf("%s (line %d is not a name)", want, item.Line)
			}
			fields = append(fields, item.Value)
		}
		return fields, nil
	default:
		return nil, errors.New(want)
	}
}

// checkFieldList is Validate of drop and keep.
func checkFieldList(fields []string, step string) error {
	if len(fields) == 0 {
		return stages.FieldErr("", errors.New(step+": want at least one field"))
	}
	if slices.Contains(fields, "") {
		return stages.FieldErr("", errors.New(step+": empty field name"))
	}
	return nil
}

// fieldSelect removes fields from records: the named ones (drop), or all
// but the named ones (keep).
type fieldSelect struct {
	step   string // type name, for reject reasons
	fields []string
	keep   bool
	pool   sync.Pool // of *exprScratch (only its member and edit buffers)
}

func newFieldSelect(step string, fields []string, keep bool) *fieldSelect {
	d := &fieldSelect{step: step, fields: slices.Clone(fields), keep: keep}
	d.pool.New = func() any { return &exprScratch{} }
	return d
}

// Process removes every occurrence of the fields (with keep: of every
// other field) from every Parsed record. It edits Raw in place (records
// own their bytes, and removing only shortens), so it allocates nothing;
// a record it would not change is left untouched. Records not Parsed are
// rejected. Safe for concurrent calls on different batches.
func (d *fieldSelect) Process(b *stages.Batch) {
	s := d.pool.Get().(*exprScratch)
	defer d.pool.Put(s)
	c := compactor{b: b}
	for i := range b.Records {
		r := &b.Records[i]
		if !r.Parsed {
			c.reject(r, errNotParsed(d.step))
			continue
		}
		var closeBrace int
		var err error
		s.members, closeBrace, err = jsonrec.Members(r.Raw, s.members[:0])
		if err != nil {
			c.reject(r, rejectErr(d.step, fmt.Errorf("malformed JSON record: %w", err)))
			continue
		}
		s.edits = s.edits[:0]
		for k := range s.members {
			m := &s.members[k]
			named := slices.ContainsFunc(d.fields, func(f string) bool { return m.KeyIs(r.Raw, f) })
			if named != d.keep {
				s.edits = append(s.edits, jsonrec.Edit{Member: k, Remove: true})
			}
		}
		if len(s.edits) > 0 {
			r.Raw = jsonrec.AppendEdited(r.Raw[:0], r.Raw, s.members, closeBrace, s.edits, nil)
		}
		c.keep(r)
	}
	c.done()
}

func init() {
	register(stepFactory("drop",
		"Removes top-level fields (`drop: [user, msg]`); missing ones are ignored.",
		stages.Caps{NeedsFields: true},
		func(_ stages.Settings, c *DropConfig) (stages.Step, error) {
			return newFieldSelect("drop", c.Fields, false), nil
		}))
}
