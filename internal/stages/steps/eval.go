package steps

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// EvalConfig is the config of eval, written as a mapping of field to
// expression: `eval: { cents: 'int(round(amount * 100))' }`.
type EvalConfig struct {
	// Fields are evaluated in the order written; each expression sees the
	// fields set by the ones before it.
	Fields []EvalField `yaml:"-" doc:"field: expression pairs; each result is stored in its field as JSON"`

	progs []*program // compiled by Validate, parallel to Fields
	keys  []fieldKey
	spec  envSpec
	// grow estimates how many bytes a record grows by, for arena sizing.
	grow int
}

// EvalField is one field of an eval step.
type EvalField struct {
	Name string
	Expr string
}

// UnmarshalYAML accepts a mapping of field names to expression strings
// and keeps its order.
func (c *EvalConfig) UnmarshalYAML(n *yaml.Node) error {
	keys, vals, err := mappingPairs(n, "eval", "a mapping of field: expression")
	if err != nil {
		return err
	}
	c.Fields = c.Fields[:0]
	for i, k := range keys {
		v := resolve(vals[i])
		if v.Kind != yaml.ScalarNode || isNull(v) {
			return fmt.Errorf("eval: field %q: want an expression string", k)
		}
		c.Fields = append(c.Fields, EvalField{Name: k, Expr: v.Value})
	}
	return nil
}

// compiled reports whether Validate has compiled the config.
func (c *EvalConfig) compiled() bool { return c.progs != nil }

// Validate compiles every expression, pointing errors at its field.
func (c *EvalConfig) Validate() error {
	if len(c.Fields) == 0 {
		return stages.FieldErr("", errors.New("eval: want at least one field"))
	}
	var errs []error
	c.progs, c.keys, c.spec, c.grow = nil, nil, envSpec{}, 0
	seen := map[string]bool{}
	for _, f := range c.Fields {
		var p *program
		var err error
		switch {
		case f.Name == "":
			err = errors.New("empty field name")
		case seen[f.Name]:
			err = errors.New("field given twice")
		case strings.TrimSpace(f.Expr) == "":
			err = errors.New("empty expression")
		default:
			p, err = compileExpr(f.Expr)
		}
		if err != nil {
			errs = append(errs, stages.FieldErr(f.Name, err))
			continue
		}
		seen[f.Name] = true
		c.progs = append(c.progs, p)
		k := newFieldKey(f.Name)
		c.keys = append(c.keys, k)
		c.spec.merge(p)
		c.grow += len(k.prefix) + 16
	}
	if err := errors.Join(errs...); err != nil {
		c.progs = nil
		return err
	}
	return nil
}

// eval stores expression results in fields.
type eval struct {
	cfg  *EvalConfig
	pool sync.Pool // of *exprScratch
}

// Process evaluates the expressions on every Parsed record and sets their
// JSON-encoded results like set does. A record that is not Parsed, or for
// which an expression fails or returns a value JSON cannot hold (NaN,
// infinity), is rejected. Safe for concurrent calls on different batches.
func (e *eval) Process(b *stages.Batch) {
	s := e.pool.Get().(*exprScratch)
	defer e.pool.Put(s)
	cfg := e.cfg

	rawLeft := 0
	for i := range b.Records {
		rawLeft += len(b.Records[i].Raw)
	}
	a := arena{b: b}
	c := compactor{b: b}
	for i := range b.Records {
		r := &b.Records[i]
		rawLeft -= len(r.Raw)
		if !r.Parsed {
			c.reject(r, errNotParsed("eval"))
			continue
		}
		if err := e.record(s, r, &a, rawLeft+(len(b.Records)-i)*cfg.grow); err != nil {
			c.reject(r, err)
			continue
		}
		c.keep(r)
	}
	c.done()
	clear(s.env) // drop references into this batch's records
}

// record rewrites one record; hint sizes a new arena chunk.
func (e *eval) record(s *exprScratch, r *stages.Record, a *arena, hint int) error {
	cfg := e.cfg
	// When no target field can be in the record, read the inputs with an
	// early-exit scan and append the results; else walk every member to
	// locate the fields to replace.
	fast := surelyAbsent(r.Raw, cfg.keys)
	var closeBrace int
	var err error
	if fast {
		err = s.fill(&cfg.spec, r.Raw, nil, false)
	} else {
		s.members, closeBrace, err = jsonrec.Members(r.Raw, s.members[:0])
		if err == nil {
			err = s.fill(&cfg.spec, r.Raw, s.members, true)
		}
	}
	if err != nil {
		return rejectErr("eval", fmt.Errorf("malformed JSON record: %w", err))
	}
	s.vals, s.offs = s.vals[:0], s.offs[:0]
	for j, p := range cfg.progs {
		out, err := s.run(p)
		if err == nil {
			s.vals, err = jsonrec.AppendValue(s.vals, out)
		}
		if err != nil {
			return fmt.Errorf("eval %s: %w", cfg.keys[j].name, err)
		}
		s.offs = append(s.offs, len(s.vals))
		s.env[cfg.keys[j].name] = out // later expressions see the new value
	}
	// Slice the results only now: s.vals may have moved while growing.
	s.vs = s.vs[:0]
	need, prev := len(r.Raw)+1, 0
	for j, end := range s.offs {
		s.vs = append(s.vs, s.vals[prev:end])
		need += len(cfg.keys[j].prefix) + end - prev + 1
		prev = end
	}
	a.reserve(need, hint)
	start := len(a.buf)
	if fast {
		s.add = s.add[:0]
		for j := range cfg.keys {
			if j > 0 {
				s.add = append(s.add, ',')
			}
			s.add = append(append(s.add, cfg.keys[j].prefix...), s.vs[j]...)
		}
		var ok bool
		if a.buf, ok = jsonrec.AppendMembers(a.buf, r.Raw, s.add); !ok {
			return rejectErr("eval", errors.New("malformed JSON record: want an object"))
		}
	} else {
		planSet(s, r.Raw, s.members, cfg.keys, s.vs)
		a.buf = jsonrec.AppendEdited(a.buf, r.Raw, s.members, closeBrace, s.edits, s.add)
	}
	r.Raw = a.since(start)
	return nil
}

func init() {
	register(stepFactory("eval",
		"Sets top-level fields to the JSON-encoded results of expr-lang expressions over the record's fields "+
			"(`eval: {cents: 'int(round(amount * 100))'}`), in order; an expression error makes a bad record.",
		stages.Caps{NeedsFields: true},
		func(_ stages.Settings, c *EvalConfig) (stages.Step, error) {
			e := &eval{cfg: c}
			e.pool.New = func() any {
				s := newExprScratch(&c.spec)
				if len(s.found) < len(c.keys) { // planSet flags one per key too
					s.found = make([]bool, len(c.keys))
				}
				return s
			}
			return e, nil
		}))
}
