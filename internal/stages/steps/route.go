package steps

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/etld/etld/internal/stages"
)

// MaxRoutes is the most routes a worker can have: a record's matches are
// one bit each in a uint64, whose top bit means "matched none".
const MaxRoutes = 63

// Unmatched is the bit of a record that matched no route.
const Unmatched = uint64(1) << MaxRoutes

// Router evaluates a worker's routes (name -> expr-lang expression, each
// like a filter's) on the records its steps produced. It is immutable once
// compiled and safe for concurrent use.
type Router struct {
	names []string
	progs []*program
	// cmps is parallel to progs: the route's fieldCompare when it is
	// `field == literal` or `field != literal`, evaluated without the VM
	// (and without loading the field into the environment).
	cmps []*fieldCompare
	spec envSpec
	pool sync.Pool // of *exprScratch
}

// CompiledRoute is one route expression, compiled and type-checked.
type CompiledRoute struct{ p *program }

// CompileRoute compiles and type-checks one route expression: a result
// type known at load must be bool.
func CompileRoute(src string) (*CompiledRoute, error) {
	p, err := compileRoute(src)
	if err != nil {
		return nil, err
	}
	return &CompiledRoute{p}, nil
}

func compileRoute(src string) (*program, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty expression")
	}
	p, err := compileExpr(src)
	if err != nil {
		return nil, err
	}
	if p.result != nil && p.result.Kind() != reflect.Bool {
		return nil, fmt.Errorf("expression returns %s, want bool", p.result)
	}
	return p, nil
}

// NewRouter compiles the routes (at most MaxRoutes) in order: bit i of a
// record's mask is route i.
func NewRouter(names, exprs []string) (*Router, error) {
	if len(names) != len(exprs) {
		return nil, fmt.Errorf("routes: %d names for %d expressions", len(names), len(exprs))
	}
	routes := make([]*CompiledRoute, len(exprs))
	for i, src := range exprs {
		c, err := CompileRoute(src)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", names[i], err)
		}
		routes[i] = c
	}
	return RouterOf(names, routes)
}

// RouterOf is NewRouter of routes already compiled (the config loader
// compiles each one to report its errors at its own position).
func RouterOf(names []string, routes []*CompiledRoute) (*Router, error) {
	if len(names) != len(routes) || len(names) > MaxRoutes {
		return nil, fmt.Errorf("routes: want at most %d routes", MaxRoutes)
	}
	r := &Router{names: names}
	for _, c := range routes {
		p := c.p
		cmp := matchFieldCompare(p.prog.Node())
		r.progs = append(r.progs, p)
		r.cmps = append(r.cmps, cmp)
		if cmp == nil {
			r.spec.merge(p)
		}
	}
	r.pool.New = func() any { return newExprScratch(&r.spec) }
	return r, nil
}

// Route evaluates every route on every record of b in one pass and
// returns masks (reusing its room) with one entry per record left in b:
// the bits of the routes that hold, or Unmatched. A record whose
// expression fails or returns a non-bool moves to b.Rejects.
func (r *Router) Route(b *stages.Batch, masks []uint64) []uint64 {
	s := r.pool.Get().(*exprScratch)
	defer r.pool.Put(s)
	masks = masks[:0]
	c := compactor{b: b}
records:
	for i := range b.Records {
		rec := &b.Records[i]
		var obj []byte
		if rec.Parsed {
			obj = rec.Raw
		}
		if err := s.fill(&r.spec, obj, nil, false); err != nil {
			c.reject(rec, fmt.Errorf("routes: malformed JSON record: %w", err))
			continue
		}
		var mask uint64
		for j, p := range r.progs {
			if cmp := r.cmps[j]; cmp != nil {
				hold, err := cmp.eval(obj)
				if err != nil {
					c.reject(rec, fmt.Errorf("routes: malformed JSON record: %w", err))
					continue records
				}
				if hold {
					mask |= 1 << j
				}
				continue
			}
			out, err := s.run(p)
			if err != nil {
				c.reject(rec, fmt.Errorf("route %s: %w", r.names[j], err))
				continue records
			}
			hold, ok := out.(bool)
			if !ok {
				c.reject(rec, fmt.Errorf("route %s: expression returned %T, want bool", r.names[j], out))
				continue records
			}
			if hold {
				mask |= 1 << j
			}
		}
		if mask == 0 {
			mask = Unmatched
		}
		masks = append(masks, mask)
		c.keep(rec)
	}
	c.done()
	clear(s.env) // drop references into this batch's records
	return masks
}
