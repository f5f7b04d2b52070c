package steps

import (
	"errors"
	"fmt"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// SetConfig is the config of set, written as a mapping of field to literal
// value: `set: { pipeline: w2, n: 3, tags: [a, b] }`.
type SetConfig struct {
	// Fields are the fields to set, in the order written.
	Fields []SetField `yaml:"-" doc:"field: value pairs; values are literal YAML (strings, numbers, booleans, null, maps, lists)"`

	keys []fieldKey // compiled by Validate, parallel to Fields
	vals [][]byte
	// addAll is every `"key":value` joined by commas: what is appended to
	// a record that has none of the fields, the common case.
	addAll []byte
}

// SetField is one field of a set step.
type SetField struct {
	Name string
	// Value is used when the config is built in Go (node is nil); it is
	// encoded with jsonrec.AppendValue.
	Value any
	node  *yaml.Node
}

// UnmarshalYAML accepts a mapping and keeps its order.
func (c *SetConfig) UnmarshalYAML(n *yaml.Node) error {
	keys, vals, err := mappingPairs(n, "set", "a mapping of field: value")
	if err != nil {
		return err
	}
	c.Fields = c.Fields[:0]
	for i, k := range keys {
		c.Fields = append(c.Fields, SetField{Name: k, node: vals[i]})
	}
	return nil
}

// compiled reports whether Validate has compiled the config.
func (c *SetConfig) compiled() bool { return c.keys != nil }

// Validate encodes every value as JSON once, pointing errors at the field.
func (c *SetConfig) Validate() error {
	if len(c.Fields) == 0 {
		return stages.FieldErr("", errors.New("set: want at least one field"))
	}
	var errs []error
	c.keys, c.vals, c.addAll = nil, nil, nil
	seen := map[string]bool{}
	for _, f := range c.Fields {
		var enc []byte
		var err error
		switch {
		case f.Name == "":
			err = errors.New("empty field name")
		case seen[f.Name]:
			err = errors.New("field given twice")
		case f.node != nil:
			enc, err = appendYAMLAsJSON(nil, f.node, 0)
		default:
			enc, err = jsonrec.AppendValue(nil, f.Value)
		}
		if err != nil {
			errs = append(errs, stages.FieldErr(f.Name, err))
			continue
		}
		seen[f.Name] = true
		k := newFieldKey(f.Name)
		c.keys = append(c.keys, k)
		c.vals = append(c.vals, enc)
		if len(c.addAll) > 0 {
			c.addAll = append(c.addAll, ',')
		}
		c.addAll = append(append(c.addAll, k.prefix...), enc...)
	}
	return errors.Join(errs...)
}

// set writes literal fields into every record.
type set struct {
	cfg  *SetConfig
	pool sync.Pool // of *exprScratch (only its member and edit buffers)
}

// Process sets the fields on every Parsed record: a field that exists has
// its value replaced where it is (later duplicates of it are removed), a
// missing one is appended. Records not Parsed are rejected. The new record
// texts share one allocation per batch. Safe for concurrent calls on
// different batches.
func (st *set) Process(b *stages.Batch) {
	s := st.pool.Get().(*exprScratch)
	defer st.pool.Put(s)
	cfg := st.cfg

	// Upper bound of the output: each record grows by at most the
	// appended text (a replaced value is never longer than its key:value
	// pair that then is not appended), plus one comma.
	total := 0
	for i := range b.Records {
		total += len(b.Records[i].Raw) + 1 + len(cfg.addAll)
	}
	a := arena{b: b}
	c := compactor{b: b}
	for i := range b.Records {
		r := &b.Records[i]
		if !r.Parsed {
			c.reject(r, errNotParsed("set"))
			continue
		}
		need := len(r.Raw) + 1 + len(cfg.addAll)
		a.reserve(need, total)
		total -= need
		start := len(a.buf)
		var ok bool
		if absent(b, i, cfg.keys) {
			// The common case: append without walking the members.
			a.buf, ok = jsonrec.AppendMembers(a.buf, r.Raw, cfg.addAll)
		}
		if !ok {
			var closeBrace int
			var err error
			s.members, closeBrace, err = members(b, i, &s.members)
			if err != nil {
				c.reject(r, rejectErr("set", fmt.Errorf("malformed JSON record: %w", err)))
				continue
			}
			planSet(s, r.Raw, s.members, cfg.keys, cfg.vals)
			a.buf = jsonrec.AppendEdited(a.buf, r.Raw, s.members, closeBrace, s.edits, s.add)
		}
		r.Raw = a.since(start)
		c.keep(r)
	}
	c.done()
}

func init() {
	register(stepFactory("set",
		"Sets top-level fields to literal values (`set: {pipeline: w2}`), replacing existing ones in place and appending "+
			"missing ones in the order written.",
		stages.Caps{NeedsFields: true},
		func(_ stages.Settings, c *SetConfig) (stages.Step, error) {
			st := &set{cfg: c}
			st.pool.New = func() any { return &exprScratch{found: make([]bool, len(c.keys))} }
			return st, nil
		}))
}
