package steps

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/expr-lang/expr/ast"
	exprrt "github.com/expr-lang/expr/vm/runtime"
	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// FilterConfig is the config of filter, written as a bare expression
// string: `filter: 'level != "debug"'`.
type FilterConfig struct {
	// Expr is the expr-lang expression; a record is kept when it is true.
	Expr string `yaml:"-" doc:"expression over the record's fields; the record is kept when it is true"`

	prog *program // compiled by Validate
	spec envSpec
	// cmp is set when the expression is `field == literal` or
	// `field != literal`: it is then evaluated without the VM.
	cmp *fieldCompare
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

// compiled reports whether Validate has compiled the config.
func (c *FilterConfig) compiled() bool { return c.prog != nil }

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
	c.cmp = matchFieldCompare(p.prog.Node())
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
	if f.cfg.cmp != nil {
		f.processCompare(b)
		return
	}
	s := f.pool.Get().(*exprScratch)
	defer f.pool.Put(s)
	c := compactor{b: b}
	for i := range b.Records {
		r := &b.Records[i]
		var obj []byte
		var ms []jsonrec.Member
		indexed := false
		if r.Parsed {
			obj = r.Raw
			// The step before indexed the record: no walk.
			if ms, _, indexed = b.Fields(i, s.members[:0]); indexed {
				s.members = ms
			}
		}
		if err := s.fill(&f.cfg.spec, obj, ms, indexed); err != nil {
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

// processCompare is Process for a fieldCompare expression.
func (f *filter) processCompare(b *stages.Batch) {
	cmp := f.cfg.cmp
	c := compactor{b: b}
	for i := range b.Records {
		r := &b.Records[i]
		var keep bool
		var err error
		if m, found, ok := b.Field(i, cmp.field); ok && r.Parsed {
			// The step before indexed the record: no walk.
			keep, err = cmp.evalMember(r.Raw, m, found)
		} else {
			var obj []byte
			if r.Parsed {
				obj = r.Raw
			}
			keep, err = cmp.eval(obj)
		}
		if err != nil {
			c.reject(r, rejectErr("filter", fmt.Errorf("malformed JSON record: %w", err)))
			continue
		}
		if keep {
			c.keep(r)
		}
	}
	c.done()
}

// fieldCompare evaluates `field == literal` and `field != literal` (either
// operand order) directly on a record's JSON, the commonest filter. It
// gives the VM's result exactly: the field's value is the one the VM would
// see (the first occurrence of the key, nil when absent or when the record
// is not parsed) and equality is expr's own runtime.Equal, except that a
// string literal is compared to an unescaped JSON string by its bytes,
// which is what that comparison amounts to, without decoding.
type fieldCompare struct {
	field  string
	lit    any  // the literal, as the VM pushes it
	str    bool // lit is a string
	litStr string
	not    bool // the operator is !=
	nilEq  bool // runtime.Equal(nil, lit)
}

// matchFieldCompare returns the fieldCompare for a checked expression
// AST of that shape, or nil.
func matchFieldCompare(root ast.Node) *fieldCompare {
	bin, ok := root.(*ast.BinaryNode)
	if !ok || (bin.Operator != "==" && bin.Operator != "!=") {
		return nil
	}
	field, lit, ok := identAndLiteral(bin.Left, bin.Right)
	if !ok {
		field, lit, ok = identAndLiteral(bin.Right, bin.Left)
	}
	if !ok {
		return nil
	}
	c := &fieldCompare{field: field, lit: lit, not: bin.Operator == "!=", nilEq: exprrt.Equal(nil, lit)}
	c.litStr, c.str = lit.(string)
	return c
}

// identAndLiteral matches a record field (an identifier other than $env,
// of the environment's dynamic type, so not a builtin) and a scalar
// literal.
func identAndLiteral(a, b ast.Node) (field string, lit any, ok bool) {
	id, isID := a.(*ast.IdentifierNode)
	if !isID || id.Value == "$env" {
		return "", nil, false
	}
	if t := id.Type(); t != nil && t.Kind() != reflect.Interface {
		return "", nil, false
	}
	switch l := b.(type) {
	case *ast.StringNode:
		return id.Value, l.Value, true
	case *ast.IntegerNode:
		return id.Value, l.Value, true
	case *ast.FloatNode:
		return id.Value, l.Value, true
	case *ast.BoolNode:
		return id.Value, l.Value, true
	case *ast.NilNode:
		return id.Value, nil, true
	case *ast.ConstantNode:
		switch l.Value.(type) {
		case nil, string, int, float64, bool:
			return id.Value, l.Value, true
		}
	}
	return "", nil, false
}

// eval reports whether the record obj (nil: not parsed) passes. Like the
// VM's field loading, it fails only on a malformed object, and only when
// the malformation comes before the field (or the field is absent).
func (c *fieldCompare) eval(obj []byte) (bool, error) {
	if obj == nil {
		return c.nilEq != c.not, nil
	}
	m, found, err := jsonrec.Find(obj, c.field)
	if err != nil {
		return false, err
	}
	return c.evalMember(obj, m, found)
}

// evalMember is eval for the parsed record obj once its field has been
// looked up: m, when found.
func (c *fieldCompare) evalMember(obj []byte, m jsonrec.Member, found bool) (bool, error) {
	eq := c.nilEq
	if found {
		var err error
		if eq, err = c.equal(obj, &m); err != nil {
			return false, err
		}
	}
	return eq != c.not, nil
}

func (c *fieldCompare) equal(obj []byte, m *jsonrec.Member) (bool, error) {
	if c.str && obj[m.Val] == '"' && !m.ValEscaped {
		return string(obj[m.Val+1:m.End-1]) == c.litStr, nil
	}
	v, err := m.Value(obj, true)
	if err != nil {
		return false, err
	}
	return exprrt.Equal(v, c.lit), nil
}

func init() {
	register(stepFactory("filter",
		"Keeps the records for which an expr-lang expression over their top-level fields is true (missing fields are nil; "+
			"on a record without parse_json every field is nil); an expression error or a non-bool result makes a bad record.",
		stages.Caps{},
		func(_ stages.Settings, c *FilterConfig) (stages.Step, error) {
			f := &filter{cfg: c}
			f.pool.New = func() any { return newExprScratch(&c.spec) }
			return f, nil
		}))
}
