package steps

import (
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/etld/etld/internal/jsonrec"
)

// program is one compiled expression plus what it reads from a record.
// It is immutable after compileExpr and safe to share between goroutines.
type program struct {
	prog *vm.Program
	// fields are the top-level record fields the expression reads, in
	// order of first use, without duplicates.
	fields []string
	// allFields is set when the expression uses $env in a way that may
	// reach any field (a bare $env or $env[expr] with a computed key): the
	// record's every field is then decoded.
	allFields bool
	// result is the static result type, nil when only known at run time.
	result reflect.Type
}

// compileExpr compiles src against a map environment in which every
// identifier is a record field and unknown ones are nil at run time.
func compileExpr(src string) (*program, error) {
	if src == "" {
		return nil, errors.New("empty expression")
	}
	p, err := expr.Compile(src, expr.Env(map[string]any{}), expr.AllowUndefinedVariables())
	if err != nil {
		return nil, exprError(err)
	}
	out := &program{prog: p}
	root := p.Node()
	if t := root.Type(); t != nil && t.Kind() != reflect.Interface {
		out.result = t
	}
	out.fields, out.allFields = readFields(root)
	return out, nil
}

// readFields walks the checked AST and returns the top-level identifiers
// the expression reads as fields. Builtins are not identifiers in expr's
// AST; callee names of unknown functions and `let` variables are excluded.
// $env["name"] with a constant key reads field name; any other use of $env
// may read every field.
func readFields(root ast.Node) (fields []string, all bool) {
	c := &fieldCollector{skip: map[*ast.IdentifierNode]bool{}, declared: map[string]bool{}}
	ast.Walk(&root, visitorFunc(c.mark))
	ast.Walk(&root, visitorFunc(c.collect))
	return c.fields, c.all
}

type visitorFunc func(*ast.Node)

func (f visitorFunc) Visit(n *ast.Node) { f(n) }

type fieldCollector struct {
	skip     map[*ast.IdentifierNode]bool
	declared map[string]bool
	fields   []string
	all      bool
}

// mark records identifiers that are not field reads, and $env member
// accesses with constant keys (which are).
func (c *fieldCollector) mark(n *ast.Node) {
	switch x := (*n).(type) {
	case *ast.CallNode:
		if id, ok := x.Callee.(*ast.IdentifierNode); ok {
			c.skip[id] = true
		}
	case *ast.VariableDeclaratorNode:
		c.declared[x.Name] = true
	case *ast.MemberNode:
		id, ok := x.Node.(*ast.IdentifierNode)
		if !ok || id.Value != "$env" {
			return
		}
		if key, ok := x.Property.(*ast.StringNode); ok {
			c.skip[id] = true
			c.add(key.Value)
		}
	}
}

func (c *fieldCollector) collect(n *ast.Node) {
	id, ok := (*n).(*ast.IdentifierNode)
	if !ok || c.skip[id] || c.declared[id.Value] {
		return
	}
	if id.Value == "$env" {
		c.all = true
		return
	}
	c.add(id.Value)
}

func (c *fieldCollector) add(name string) {
	if !slices.Contains(c.fields, name) {
		c.fields = append(c.fields, name)
	}
}

// exprError turns expr's multi-line error (message, position, source
// snippet with a caret) into one line, "message (line:column)", so it
// fits `validate` output and dead-letter records.
func exprError(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		if fe.Line > 0 {
			return fmt.Errorf("%s (%d:%d)", fe.Message, fe.Line, fe.Column+1)
		}
		return errors.New(fe.Message)
	}
	return err
}

// envSpec says which fields to load into an expression environment: the
// union of what a step's expressions read.
type envSpec struct {
	names []string
	all   bool
}

func (s *envSpec) merge(p *program) {
	s.all = s.all || p.allFields
	for _, f := range p.fields {
		if !slices.Contains(s.names, f) {
			s.names = append(s.names, f)
		}
	}
}

// exprScratch is the per-goroutine state of an expression step: the VM,
// the environment map (reused so its buckets are allocated once) and
// buffers. Steps keep them in a sync.Pool and take one per Process call.
type exprScratch struct {
	vm      vm.VM
	env     map[string]any
	found   []bool
	members []jsonrec.Member
	vals    []byte // encoded results of the current record
	offs    []int  // end offset in vals of each result
	vs      [][]byte
	edits   []jsonrec.Edit
	add     []byte
}

func newExprScratch(spec *envSpec) *exprScratch {
	return &exprScratch{
		env:   make(map[string]any, len(spec.names)+4),
		found: make([]bool, len(spec.names)),
	}
}

// fill loads the fields named by spec from obj into s.env; absent fields
// are nil. obj == nil loads nothing (every field nil). When ms is not nil
// it must hold obj's members and is used instead of re-scanning obj.
//
// Strings alias obj (no copy): s.env must be done with before obj changes.
// The first occurrence of a duplicated key wins.
func (s *exprScratch) fill(spec *envSpec, obj []byte, ms []jsonrec.Member, haveMembers bool) error {
	if spec.all {
		clear(s.env)
		if obj == nil {
			return nil
		}
		if !haveMembers {
			var err error
			if s.members, _, err = jsonrec.Members(obj, s.members[:0]); err != nil {
				return err
			}
			ms = s.members
		}
		for i := range ms {
			m := &ms[i]
			key := string(m.RawKey(obj))
			if m.Escaped {
				k, err := jsonrec.DecodeValue(obj[m.Key:m.KeyEnd], false)
				if err != nil {
					return err
				}
				key = k.(string)
			}
			if _, dup := s.env[key]; dup {
				continue
			}
			v, err := m.Value(obj, true)
			if err != nil {
				return err
			}
			s.env[key] = v
		}
		return nil
	}

	clear(s.found)
	if obj != nil {
		left := len(spec.names)
		try := func(m *jsonrec.Member) error {
			for j, name := range spec.names {
				if s.found[j] || !m.KeyIs(obj, name) {
					continue
				}
				v, err := m.Value(obj, true)
				if err != nil {
					return err
				}
				s.env[name] = v
				s.found[j] = true
				left--
				break
			}
			return nil
		}
		if haveMembers {
			for i := 0; i < len(ms) && left > 0; i++ {
				if err := try(&ms[i]); err != nil {
					return err
				}
			}
		} else if left > 0 {
			// Stop at the last wanted field: filters usually read one
			// field near the front of the record.
			it := jsonrec.NewIter(obj)
			var m jsonrec.Member
			for left > 0 && it.Next(&m) {
				if err := try(&m); err != nil {
					return err
				}
			}
			if err := it.Err(); err != nil {
				return err
			}
		}
	}
	for j, name := range spec.names {
		if !s.found[j] {
			s.env[name] = nil
		}
	}
	return nil
}

// run evaluates p over s.env. Panics inside expr (a bug there or in a
// builtin) become errors: a bad expression result never crashes a worker.
func (s *exprScratch) run(p *program) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("expression panicked: %v", r)
		}
	}()
	out, err = s.vm.Run(p.prog, s.env)
	if err != nil {
		return nil, exprError(err)
	}
	return out, nil
}
