package steps

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/stages"
)

// FilterConfig is the config of filter, written as a bare expression
// string: `filter: 'level != "debug"'`.
type FilterConfig struct {
	// Expr is the expr-lang expression; a record is kept when it is true.
	Expr string `yaml:"-" doc:"expression over the record's fields; the record is kept when it is true"`

	prog *program // compiled by Validate
	spec envSpec
}

// UnmarshalYAML accepts a scalar (usually a quoted string).
func (c *FilterConfig) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode || isNull(n) {
		return errors.New("filter: want an expression string, e.g. filter: 'level != \"debug\"'")
	}
	c.Expr = n.Value
	return nil
}

// Validate compiles the expression. A result type known at load time
// must be bool.
func (c *FilterConfig) Validate() error {
	if strings.TrimSpace(c.Expr) == "" {
		return stages.FieldErr("", errors.New("filter: empty expression"))
	}
	p, err := compileExpr(c.Expr)
	if err != nil {
		return stages.FieldErr("", fmt.Errorf("filter: %w", err))
	}
	if p.result != nil && p.result.Kind() != reflect.Bool {
		return stages.FieldErr("", fmt.Errorf("filter: expression returns %s, want bool", p.result))
	}
	c.prog = p
	c.spec = envSpec{}
	c.spec.merge(p)
	return nil
}

// filter keeps the records for which the expression is true. The config
// is read-only once built; per-goroutine state comes from pool.
type filter struct {
	cfg  *FilterConfig
	pool sync.Pool // of *exprScratch
}

// Process drops records for which the expression is false and rejects
// those for which it fails or returns a non-bool. A record that is not
// Parsed is evaluated with every field nil. Safe for concurrent calls on
// different batches.
func (f *filter) Process(b *stages.Batch) {
	s := f.pool.Get().(*exprScratch)
	defer f.pool.Put(s)
	c := compactor{b: b}
	for i := range b.Records {
		r := &b.Records[i]
		var obj []byte
		if r.Parsed {
			obj = r.Raw
		}
		if err := s.fill(&f.cfg.spec, obj, nil, false); err != nil {
			c.reject(r, rejectErr("filter", fmt.Errorf("malformed JSON record: %w", err)))
			continue
		}
		out, err := s.run(f.cfg.prog)
		if err != nil {
			c.reject(r, rejectErr("filter", err))
			continue
		}
		keep, ok := out.(bool)
		if !ok {
			c.reject(r, fmt.Errorf("filter: expression returned %T, want bool", out))
			continue
		}
		if keep {
			c.keep(r)
		}
	}
	c.done()
	clear(s.env) // drop references into this batch's records
}

func init() {
	register(stages.Factory{
		Kind: stages.KindStep,
		Type: "filter",
		Doc: "Keeps the records for which an expr-lang expression over their top-level fields is true (missing fields are nil; " +
			"on a record without parse_json every field is nil); an expression error or a non-bool result makes a bad record.",
		NewConfig: func() any { return &FilterConfig{} },
		NewStep: func(_ stages.Settings, cfg any) (stages.Step, error) {
			c, err := configOf[FilterConfig]("filter", cfg)
			if err != nil {
				return nil, err
			}
			if c.prog == nil {
				if err := c.Validate(); err != nil {
					return nil, err
				}
			}
			f := &filter{cfg: c}
			f.pool.New = func() any { return newExprScratch(&c.spec) }
			return f, nil
		},
	})
}
