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
func (c *DropConfig) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	const want = "drop: want a list of field names, e.g. drop: [user, msg]"
	if n == nil || isNull(n) {
		return errors.New(want)
	}
	switch n.Kind {
	case yaml.ScalarNode:
		c.Fields = []string{n.Value}
		return nil
	case yaml.SequenceNode:
		c.Fields = c.Fields[:0]
		for _, item := range n.Content {
			item = resolve(item)
			if item.Kind != yaml.ScalarNode || isNull(item) {
				return fmt.Errorf("%s (line %d is not a name)", want, item.Line)
			}
			c.Fields = append(c.Fields, item.Value)
		}
		return nil
	default:
		return errors.New(want)
	}
}

// Validate checks that there is at least one non-empty field name.
func (c *DropConfig) Validate() error {
	if len(c.Fields) == 0 {
		return stages.FieldErr("", errors.New("drop: want at least one field"))
	}
	if slices.Contains(c.Fields, "") {
		return stages.FieldErr("", errors.New("drop: empty field name"))
	}
	return nil
}

// drop removes fields from records.
type drop struct {
	fields []string
	pool   sync.Pool // of *exprScratch (only its member and edit buffers)
}

// Process removes every occurrence of the fields from every Parsed record.
// It edits Raw in place (records own their bytes, and removing only
// shortens), so it allocates nothing; a record without any of the fields
// is left untouched. Records not Parsed are rejected. Safe for concurrent
// calls on different batches.
func (d *drop) Process(b *stages.Batch) {
	s := d.pool.Get().(*exprScratch)
	defer d.pool.Put(s)
	c := compactor{b: b}
	for i := range b.Records {
		r := &b.Records[i]
		if !r.Parsed {
			c.reject(r, errNotParsed("drop"))
			continue
		}
		var closeBrace int
		var err error
		s.members, closeBrace, err = jsonrec.Members(r.Raw, s.members[:0])
		if err != nil {
			c.reject(r, rejectErr("drop", fmt.Errorf("malformed JSON record: %w", err)))
			continue
		}
		s.edits = s.edits[:0]
		for k := range s.members {
			m := &s.members[k]
			for _, f := range d.fields {
				if m.KeyIs(r.Raw, f) {
					s.edits = append(s.edits, jsonrec.Edit{Member: k, Remove: true})
					break
				}
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
			d := &drop{fields: slices.Clone(c.Fields)}
			d.pool.New = func() any { return &exprScratch{} }
			return d, nil
		}))
}
