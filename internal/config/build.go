package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/steps"
)

// SchemaVersion is the only pipeline schema version this etld reads.
const SchemaVersion = 1

var topKeys = []string{"version", "sources", "workers", "sinks", "dead_letter", "checkpoint_interval"}

var workerKeys = []string{"inputs", "concurrency", "ordered", "steps", "routes"}

// validID reports whether id is a valid stage or pipeline name:
// ^[A-Za-z_][A-Za-z0-9_-]*$, checked by hand rather than with a regexp
// compiled in every etld process's start.
func validID(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c == '_':
		case i > 0 && (c >= '0' && c <= '9' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// builder turns the root node of one file into a Pipeline, reporting every
// problem it meets and going on, so that one run shows them all.
type builder struct {
	r    reporter
	reg  *stages.Registry
	file string
	dir  string

	stages map[string]*Stage
	idLine map[string]int // line of each stage's id key
	order  []*Stage       // file order: sources, workers, sinks
	// inputPos holds the nodes of each stage's inputs, parallel to
	// Stage.Inputs; a stage has an entry as soon as it has an inputs key.
	inputPos map[string][]*yaml.Node
	dlNode   *yaml.Node
	// nodes holds each source's and sink's mapping, for diagnostics at
	// its options after the graph is built.
	nodes map[string]*yaml.Node
}

func (b *builder) pos(n *yaml.Node) Pos { return Pos{File: b.file, Line: n.Line, Col: n.Column} }

func (b *builder) pipeline(root *yaml.Node) *Pipeline {
	if b.reg == nil {
		panic("config: Options.Registry is required")
	}
	if root.Kind != yaml.MappingNode {
		b.r.errorf(root, "a pipeline file is a mapping with version, sources, workers and sinks; got %s", describe(root))
		return nil
	}
	b.stages = map[string]*Stage{}
	b.idLine = map[string]int{}
	b.inputPos = map[string][]*yaml.Node{}
	b.nodes = map[string]*yaml.Node{}
	p := &Pipeline{CheckpointInterval: DefaultCheckpointInterval}
	sections := map[string]*yaml.Node{}
	forEachPair(root, b.r, "", func(k, v *yaml.Node) {
		switch k.Value {
		case "version":
			b.version(v)
		case "sources", "workers", "sinks":
			if isNull(v) {
				sections[k.Value] = v
				return
			}
			if v.Kind != yaml.MappingNode {
				b.r.errorf(v, "%s: want a mapping of id -> %s, got %s", k.Value, strings.TrimSuffix(k.Value, "s"), describe(v))
				return
			}
			sections[k.Value] = v
		case "dead_letter":
			if v.Kind != yaml.ScalarNode || isNull(v) {
				b.r.errorf(v, "dead_letter: want the id of a sink, got %s", describe(v))
				return
			}
			p.DeadLetter, b.dlNode = v.Value, v
		case "checkpoint_interval":
			decoder{b.r}.decode(v, reflect.ValueOf(&p.CheckpointInterval).Elem(), "checkpoint_interval")
			if p.CheckpointInterval <= 0 {
				b.r.errorf(v, "checkpoint_interval: must be positive")
			}
		default:
			b.r.errorf(k, "unknown top-level key %q%s", k.Value, suggest(k.Value, topKeys))
		}
	})
	if _, ok := findKey(root, "version"); !ok {
		b.r.errorf(root, "missing required key \"version\" (this etld reads version: %d)", SchemaVersion)
	}
	for _, sec := range []string{"sources", "sinks"} {
		if n := sections[sec]; n == nil || isNull(n) || len(n.Content) == 0 {
			at := root
			if n != nil {
				at = n
			}
			b.r.errorf(at, "a pipeline needs at least one %s (key %q)", strings.TrimSuffix(sec, "s"), sec)
		}
	}
	if n := sections["sources"]; n != nil {
		b.section(n, Source)
	}
	if n := sections["workers"]; n != nil {
		b.section(n, Worker)
	}
	if n := sections["sinks"]; n != nil {
		b.section(n, Sink)
	}
	b.checkDeadLetter(p.DeadLetter)
	b.checkInputs(p.DeadLetter)
	p.Stages = b.topoSort()
	p.byID = b.stages
	if p.Stages == nil {
		return nil
	}
	b.wire(p)
	b.checkSemantics(p)
	return p
}

func (b *builder) version(v *yaml.Node) {
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" {
		b.r.errorf(v, "version: want the integer %d, got %s", SchemaVersion, describe(v))
		return
	}
	if v.Value != fmt.Sprint(SchemaVersion) {
		b.r.errorf(v, "version: unsupported schema version %s (this etld reads version: %d)", v.Value, SchemaVersion)
	}
}

// section decodes every stage of one of sources/workers/sinks.
func (b *builder) section(n *yaml.Node, kind StageKind) {
	sec := string(kind) + "s"
	forEachPair(n, b.r, sec, func(k, v *yaml.Node) {
		id := k.Value
		path := sec + "." + id
		if !validID(id) {
			b.r.errorf(k, "%s: invalid id %q (use letters, digits, _ and -, starting with a letter or _)", path, id)
		}
		if prev, dup := b.stages[id]; dup {
			b.r.errorf(k, "%s: duplicate id %q (already a %s at line %d; ids are unique across sources, workers and sinks)", path, id, prev.Kind, b.idLine[id])
			return
		}
		st := &Stage{ID: id, Kind: kind, Pos: b.pos(k)}
		if kind == Worker {
			// Set before any early return: later passes (wire,
			// checkSemantics) read the spec of every worker.
			st.Type, st.Worker = "worker", &WorkerSpec{}
		}
		b.stages[id] = st
		b.idLine[id] = k.Line
		b.order = append(b.order, st)
		v = resolveAlias(v)
		if v.Kind != yaml.MappingNode {
			b.r.errorf(v, "%s: want a mapping, got %s", path, describe(v))
			return
		}
		st.Pos = b.pos(v)
		if kind == Worker {
			b.worker(st, v, path)
		} else {
			b.typed(st, v, path)
		}
		st.Fingerprint = fingerprint(kind, v, st.WrittenInputs())
	})
}

// typed decodes a source or sink: `type`, `inputs` (sinks), `merge`
// (sinks), and the type's own options.
func (b *builder) typed(st *Stage, v *yaml.Node, path string) {
	kind := stages.KindSource
	common := []string{"type"}
	if st.Kind == Sink {
		kind = stages.KindSink
		common = append(common, "inputs", "merge")
	}
	// Split the mapping into the common keys and the type's options.
	opts := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: v.Line, Column: v.Column}
	forEachPair(v, b.r, path, func(k, val *yaml.Node) {
		switch {
		case k.Value == "type":
		case k.Value == "inputs" && st.Kind == Sink:
			st.Inputs = b.inputs(st, val, path)
		case k.Value == "merge" && st.Kind == Sink:
			st.Merge = b.merge(val, path+".merge")
		default:
			opts.Content = append(opts.Content, k, val)
		}
	})
	typeNode, ok := findKey(v, "type")
	if !ok {
		b.r.errorf(v, "%s: missing required key \"type\" (valid: %s)", path, strings.Join(b.reg.Types(kind), ", "))
		return
	}
	if typeNode.Kind != yaml.ScalarNode || isNull(typeNode) {
		b.r.errorf(typeNode, "%s.type: want a %s type name, got %s", path, st.Kind, describe(typeNode))
		return
	}
	st.Type = typeNode.Value
	f, found := b.reg.Lookup(kind, st.Type)
	if !found {
		b.r.errorf(typeNode, "%s.type: unknown %s type %q%s", path, st.Kind, st.Type, suggest(st.Type, b.reg.Types(kind)))
		return
	}
	st.Factory = f
	var unknown []*yaml.Node
	failed := map[string]bool{} // options already reported as undecodable
	cfg := f.NewConfig()
	rv := reflect.ValueOf(cfg)
	if rv.Kind() != reflect.Pointer {
		panic(fmt.Sprintf("config: %s type %q: NewConfig must return a pointer", st.Kind, st.Type))
	}
	if rv.Elem().Kind() == reflect.Struct {
		valid := append(append([]string{}, common...), fieldNames(rv.Elem().Type())...)
		fields := structFields(rv.Elem().Type())
		d := decoder{b.r}
		for i := 0; i+1 < len(opts.Content); i += 2 {
			k, val := opts.Content[i], opts.Content[i+1]
			idx, ok := fields[k.Value]
			if !ok {
				unknown = append(unknown, k)
				continue
			}
			if !d.decode(val, rv.Elem().FieldByIndex(idx), path+"."+k.Value) {
				failed[k.Value] = true
			}
		}
		for _, k := range unknown {
			b.r.errorf(k, "%s: unknown option %q for %s %s%s", path, k.Value, st.Type, st.Kind, suggest(k.Value, valid))
		}
	} else {
		decoder{b.r}.decode(opts, rv.Elem(), path)
	}
	var verr error
	if val, ok := cfg.(stages.Validator); ok {
		verr = val.Validate()
	}
	b.report(verr, v, path, failed)
	if pr, ok := cfg.(stages.PathResolver); ok {
		pr.ResolvePaths(b.dir)
	}
	if fc, ok := cfg.(stages.FileChecker); ok && verr == nil {
		b.report(fc.CheckFiles(), v, path, failed)
	}
	if fin, ok := cfg.(stages.Finiter); ok {
		st.Finite = fin.Finite()
	}
	st.Config = cfg
	b.nodes[st.ID] = v
}

// report reports the errors of a config's Validate or CheckFiles, each
// FieldError at the option it names (the mapping itself when the option
// is absent, so a missing required key is reported at the mapping that
// lacks it). Errors about options in skip, which were reported as
// undecodable already, are left out: `path: [a, b]` is a wrong type, not
// also a missing path.
func (b *builder) report(verr error, at *yaml.Node, path string, skip map[string]bool) {
	b.reportAs(Error, verr, at, path, skip)
}

// reportAs is report with the diagnostics' severity.
func (b *builder) reportAs(sev Severity, verr error, at *yaml.Node, path string, skip map[string]bool) {
	for _, err := range flatten(verr) {
		var fe *stages.FieldError
		n, p := at, path
		msg := err.Error()
		if errors.As(err, &fe) {
			msg = fe.Err.Error()
			top, _, _ := strings.Cut(fe.Field, ".")
			if top, _, _ = strings.Cut(top, "["); skip[top] {
				continue
			}
			if fe.Field != "" {
				p = path + "." + fe.Field
				if fn := findPath(at, fe.Field); fn != nil {
					n = fn
				}
			}
		}
		b.r.at(n, sev, "%s: %s", p, msg)
	}
}

// flatten splits errors.Join trees into their leaves.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

func (b *builder) worker(st *Stage, v *yaml.Node, path string) {
	d := decoder{b.r}
	forEachPair(v, b.r, path, func(k, val *yaml.Node) {
		switch k.Value {
		case "inputs":
			st.Inputs = b.inputs(st, val, path)
		case "concurrency":
			if d.decode(val, reflect.ValueOf(&st.Worker.Concurrency).Elem(), path+".concurrency") && st.Worker.Concurrency < 1 {
				b.r.errorf(val, "%s.concurrency: must be at least 1 (leave it out for one goroutine per CPU)", path)
			}
		case "ordered":
			d.decode(val, reflect.ValueOf(&st.Worker.Ordered).Elem(), path+".ordered")
		case "steps":
			b.steps(st, val, path+".steps")
		case "routes":
			b.routes(st, val, path+".routes")
		default:
			b.r.errorf(k, "%s: unknown option %q for a worker%s", path, k.Value, suggest(k.Value, workerKeys))
		}
	})
	if _, ok := findKey(v, "inputs"); !ok {
		b.r.errorf(v, "%s: missing required key \"inputs\" (a worker reads at least one source or worker)", path)
	}
}

// routes decodes a worker's `routes`: a mapping of route name to an
// expression, each compiled and type-checked like a filter's.
func (b *builder) routes(st *Stage, n *yaml.Node, path string) {
	n = resolveAlias(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		b.r.errorf(n, "%s: want a mapping of route name -> expression, such as `errors: 'level == \"error\"'`, got %s", path, describe(n))
		return
	}
	ok := true
	var compiled []*steps.CompiledRoute
	forEachPair(n, b.r, path, func(k, v *yaml.Node) {
		v = resolveAlias(v)
		switch {
		case k.Value == Unmatched:
			b.r.errorf(k, "%s: %q is reserved for the records that match no route", path, Unmatched)
			ok = false
		case !validID(k.Value):
			b.r.errorf(k, "%s: invalid route name %q (use letters, digits, _ and -, starting with a letter or _)", path, k.Value)
			ok = false
		}
		if v.Kind != yaml.ScalarNode || isNull(v) {
			b.r.errorf(v, "%s.%s: want an expression string, got %s", path, k.Value, describe(v))
			ok = false
			return
		}
		c, err := steps.CompileRoute(v.Value)
		if err != nil {
			b.r.errorf(v, "%s.%s: %v", path, k.Value, err)
			ok = false
		}
		compiled = append(compiled, c)
		st.Worker.Routes = append(st.Worker.Routes, RouteSpec{Name: k.Value, Expr: v.Value, Pos: b.pos(k)})
	})
	if len(st.Worker.Routes) > steps.MaxRoutes {
		b.r.errorf(n, "%s: %d routes; a worker has at most %d", path, len(st.Worker.Routes), steps.MaxRoutes)
		return
	}
	if !ok || len(st.Worker.Routes) == 0 {
		return
	}
	names := make([]string, len(st.Worker.Routes))
	for i, r := range st.Worker.Routes {
		names[i] = r.Name
	}
	router, err := steps.RouterOf(names, compiled)
	if err != nil {
		b.r.errorf(n, "%s: %v", path, err)
		return
	}
	st.Worker.Router = router
}

func (b *builder) steps(st *Stage, n *yaml.Node, path string) {
	n = resolveAlias(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		b.r.errorf(n, "%s: want a list of steps such as `- parse_json: {}`, got %s", path, describe(n))
		return
	}
	for i, item := range n.Content {
		ip := fmt.Sprintf("%s[%d]", path, i)
		item = resolveAlias(item)
		if item.Kind != yaml.MappingNode || len(item.Content) != 2 {
			b.r.errorf(item, "%s: a step is a mapping with exactly one key, its type (valid: %s)", ip, strings.Join(b.reg.Types(stages.KindStep), ", "))
			continue
		}
		k, val := item.Content[0], item.Content[1]
		f, ok := b.reg.Lookup(stages.KindStep, k.Value)
		if !ok {
			b.r.errorf(k, "%s: unknown step type %q%s", ip, k.Value, suggest(k.Value, b.reg.Types(stages.KindStep)))
			continue
		}
		ip += "." + k.Value
		cfg := f.NewConfig()
		if !(decoder{b.r}).decode(val, reflect.ValueOf(cfg).Elem(), ip) {
			continue
		}
		if v, ok := cfg.(stages.Validator); ok {
			b.report(v.Validate(), val, ip, nil)
		}
		st.Worker.Steps = append(st.Worker.Steps, StepSpec{Type: k.Value, Config: cfg, Factory: f, Pos: b.pos(k), Index: i})
	}
}

// inputs decodes an `inputs` list; existence is checked once every stage
// is known (checkInputs).
func (b *builder) inputs(st *Stage, n *yaml.Node, path string) []string {
	b.inputPos[st.ID] = nil // the key is present, even if its value is bad
	n = resolveAlias(n)
	if n.Kind == yaml.ScalarNode && !isNull(n) {
		// Accept `inputs: orders` as a one-element list.
		b.inputPos[st.ID] = []*yaml.Node{n}
		id, route, _ := strings.Cut(n.Value, ".")
		st.InputRoutes = []string{route}
		return []string{id}
	}
	if n.Kind != yaml.SequenceNode {
		b.r.errorf(n, "%s.inputs: want a list of source or worker ids, got %s", path, describe(n))
		return nil
	}
	var ids []string
	seen := map[string]bool{}
	for _, c := range n.Content {
		c = resolveAlias(c)
		if c.Kind != yaml.ScalarNode || isNull(c) {
			b.r.errorf(c, "%s.inputs: want an id, got %s", path, describe(c))
			continue
		}
		id, route, dotted := strings.Cut(c.Value, ".")
		if dotted && route == "" {
			b.r.errorf(c, "%s.inputs: %q names no route (write %q for every record)", path, c.Value, id)
			continue
		}
		if seen[id] {
			if c.Value == id {
				b.r.errorf(c, "%s.inputs: %q is listed twice", path, c.Value)
			} else {
				b.r.errorf(c, "%s.inputs: %q reads %q a second time; a stage reads one route of a worker, or the worker's every record", path, c.Value, id)
			}
			continue
		}
		seen[id] = true
		ids = append(ids, id)
		st.InputRoutes = append(st.InputRoutes, route)
		b.inputPos[st.ID] = append(b.inputPos[st.ID], c)
	}
	if len(ids) == 0 && len(n.Content) == 0 {
		b.r.errorf(n, "%s.inputs: must name at least one source or worker", path)
	}
	return ids
}

func (b *builder) merge(n *yaml.Node, path string) *MergeSpec {
	m := defaultMerge()
	if !(decoder{b.r}).decode(n, reflect.ValueOf(&m).Elem(), path) {
		return &m
	}
	if m.OrderBy == "" {
		b.r.errorf(n, "%s: missing required key \"order_by\" (the field to merge by)", path)
	}
	if m.MaxLateness < 0 {
		at, _ := findKey(n, "max_lateness")
		b.r.errorf(at, "%s.max_lateness: must not be negative", path)
	}
	if m.IdleTimeout <= 0 {
		at, _ := findKey(n, "idle_timeout")
		b.r.errorf(at, "%s.idle_timeout: must be positive", path)
	}
	switch m.Late {
	case "emit", "dead_letter", "drop":
	default:
		at, _ := findKey(n, "late")
		b.r.errorf(at, "%s.late: unknown policy %q%s", path, m.Late, suggest(m.Late, []string{"emit", "dead_letter", "drop"}))
	}
	return &m
}

func (b *builder) checkDeadLetter(id string) {
	if id == "" {
		return
	}
	st, ok := b.stages[id]
	if !ok || st.Kind != Sink {
		b.r.errorf(b.dlNode, "dead_letter: %q is not a sink%s", id, suggest(id, b.idsOf(Sink)))
		return
	}
	if len(st.Inputs) > 0 {
		b.r.errorf(b.inputPos[id][0], "sinks.%s.inputs: the dead-letter sink receives bad records only and must have no inputs", id)
	}
}

// checkInputs checks that every input names a source or worker and that
// workers and sinks have inputs.
func (b *builder) checkInputs(deadLetter string) {
	upstream := append(b.idsOf(Source), b.idsOf(Worker)...)
	for _, st := range b.order {
		if st.Kind == Source {
			continue
		}
		path := string(st.Kind) + "s." + st.ID
		for i, in := range st.Inputs {
			at := b.inputPos[st.ID][i]
			if _, whole := b.stages[at.Value]; whole && st.InputRoutes[i] != "" {
				// An id with a dot (reported as invalid already) is
				// read as written, not as a route.
				in, st.Inputs[i], st.InputRoutes[i] = at.Value, at.Value, ""
			}
			up, ok := b.stages[in]
			switch {
			case !ok:
				b.r.errorf(at, "%s.inputs: unknown id %q%s", path, in, suggest(in, upstream))
			case up.Kind == Sink:
				b.r.errorf(at, "%s.inputs: %q is a sink; inputs name sources or workers", path, in)
			case up.ID == st.ID:
				b.r.errorf(at, "%s.inputs: a stage cannot read its own output", path)
			default:
				b.checkRoute(st, i, up, at, path)
			}
		}
		if _, hasKey := b.inputPos[st.ID]; st.Kind == Sink && !hasKey && st.ID != deadLetter {
			b.r.errorf(nodeAt(st.Pos), "%s: missing required key \"inputs\" (only the dead-letter sink has none)", path)
		}
	}
}

// checkRoute checks the route of input i of st (`w.route`), if any:
// only a worker has routes, and it must have that one.
func (b *builder) checkRoute(st *Stage, i int, up *Stage, at *yaml.Node, path string) {
	route := st.InputRoutes[i]
	if route == "" {
		return
	}
	if up.Kind != Worker {
		b.r.errorf(at, "%s.inputs: %q: %q is a %s; only a worker has routes", path, at.Value, up.ID, up.Kind)
		return
	}
	if up.Worker.RouteIndex(route) >= 0 {
		return
	}
	valid := []string{Unmatched}
	for _, r := range up.Worker.Routes {
		valid = append(valid, r.Name)
	}
	if len(up.Worker.Routes) == 0 {
		b.r.errorf(at, "%s.inputs: %q: worker %q has no routes (read %q for every record)", path, at.Value, up.ID, up.ID)
		return
	}
	b.r.errorf(at, "%s.inputs: %q: worker %q has no route %q%s", path, at.Value, up.ID, route, suggest(route, valid))
}

func (b *builder) idsOf(k StageKind) []string {
	var out []string
	for _, st := range b.order {
		if st.Kind == k {
			out = append(out, st.ID)
		}
	}
	return out
}

// topoSort orders the stages so that every stage follows its inputs,
// keeping file order among independent stages, and reports cycles with the
// ids on them. Unknown inputs were reported already and are ignored here.
func (b *builder) topoSort() []*Stage {
	indeg := map[string]int{}
	down := map[string][]*Stage{}
	for _, st := range b.order {
		for _, in := range st.Inputs {
			if up, ok := b.stages[in]; ok && up.Kind != Sink && up != st {
				indeg[st.ID]++
				down[in] = append(down[in], st)
			}
		}
	}
	var out []*Stage
	done := map[string]bool{}
	for len(out) < len(b.order) {
		progressed := false
		for _, st := range b.order {
			if done[st.ID] || indeg[st.ID] > 0 {
				continue
			}
			done[st.ID] = true
			out = append(out, st)
			progressed = true
			for _, d := range down[st.ID] {
				indeg[d.ID]--
			}
			break // restart from the top to keep file order stable
		}
		if !progressed {
			b.reportCycles(done)
			return nil
		}
	}
	return out
}

// reportCycles names every cycle among the stages not yet ordered.
func (b *builder) reportCycles(done map[string]bool) {
	reported := map[string]bool{}
	for _, st := range b.order {
		if done[st.ID] || reported[st.ID] {
			continue
		}
		// Walk inputs from st until a stage repeats: that loop is a cycle.
		var path []*Stage
		index := map[string]int{}
		cur := st
		for cur != nil {
			if i, seen := index[cur.ID]; seen {
				cycle := path[i:]
				ids := make([]string, 0, len(cycle)+1)
				skip := false
				for _, c := range cycle {
					if reported[c.ID] {
						skip = true
					}
					ids = append(ids, fmt.Sprintf("%s %q", c.Kind, c.ID))
				}
				if !skip {
					for _, c := range cycle {
						reported[c.ID] = true
					}
					ids = append(ids, ids[0])
					first := cycle[0]
					b.r.errorf(nodeAt(first.Pos), "%ss.%s: cycle: %s", first.Kind, first.ID, strings.Join(ids, " -> "))
				}
				break
			}
			index[cur.ID] = len(path)
			path = append(path, cur)
			var next *Stage
			for _, in := range cur.Inputs {
				if up, ok := b.stages[in]; ok && !done[in] && up.Kind == Worker {
					next = up
					break
				}
			}
			cur = next
		}
	}
}

// wire fills Outputs and the Parses flag in topological order.
func (b *builder) wire(p *Pipeline) {
	for _, st := range p.Stages {
		for _, in := range st.Inputs {
			if up := b.stages[in]; up != nil {
				up.Outputs = append(up.Outputs, st.ID)
			}
		}
		if pr, ok := st.Config.(stages.FieldsProducer); ok && st.Kind == Source {
			st.Parses = pr.ProducesFields()
		}
		if st.Kind == Worker {
			st.Parses = b.inputsParsed(st)
			for _, s := range st.Worker.Steps {
				if s.Factory.Caps.Parses {
					st.Parses = true
				}
			}
		}
	}
}

// checkSemantics reports the rules that need the whole graph: merges,
// unread stages, and steps that need parsed records.
func (b *builder) checkSemantics(p *Pipeline) {
	for _, st := range p.Stages {
		path := string(st.Kind) + "s." + st.ID
		switch st.Kind {
		case Source, Worker:
			if len(st.Outputs) == 0 {
				b.r.warnf(nodeAt(st.Pos), "%s: nothing reads this %s (name it in a worker's or sink's inputs)", path, st.Kind)
			}
		}
		if st.Kind == Worker {
			b.checkStepsNeedParsing(st, path)
			b.checkRoutesRead(p, st, path)
		}
		if uc, ok := st.Config.(stages.UpstreamChecker); ok && st.Kind == Sink {
			var types []string
			for _, src := range p.UpstreamSources(st.ID) {
				types = append(types, p.Stage(src).Type)
			}
			if st.ID == p.DeadLetter { // every stage's rejects reach it
				for _, src := range p.Sources() {
					types = append(types, src.Type)
				}
			}
			slices.Sort(types)
			b.reportAs(Warning, uc.CheckUpstream(slices.Compact(types)), b.nodes[st.ID], path, nil)
		}
		if st.Kind == Sink && st.Merge != nil {
			for i, in := range st.Inputs {
				up := b.stages[in]
				at := b.inputPos[st.ID][i]
				switch {
				case up == nil:
				case up.Kind != Worker || !up.Parses:
					b.r.errorf(at, "%s.inputs: %q does not parse records: merge.order_by reads a field, so every input of a merging sink must be a worker with %s", path, in, b.parsingStep())
				case !up.Worker.Ordered:
					b.r.warnf(at, "%s.inputs: worker %q is not `ordered: true`, so each feed may reach the merge out of order", path, in)
				}
			}
			for _, src := range p.UpstreamSources(st.ID) {
				if other := p.MergingSinkOf(src); other != "" && other != st.ID {
					b.r.errorf(nodeAt(st.Pos), "%s: source %q also feeds the merging sink %q; a source can feed one ordered merge only", path, src, other)
				}
			}
			if st.Merge.Late == "dead_letter" && p.DeadLetter == "" {
				b.r.errorf(nodeAt(st.Pos), "%s.merge.late: dead_letter needs a top-level dead_letter sink", path)
			}
		}
	}
}

// checkRoutesRead warns about a route no stage reads: its expression is
// evaluated for nothing, and a typo in an input is more likely.
func (b *builder) checkRoutesRead(p *Pipeline, st *Stage, path string) {
	if st.Worker.Router == nil {
		return // no routes, or bad ones (reported already)
	}
	read := map[string]bool{}
	for _, out := range st.Outputs {
		d := p.Stage(out)
		if i := slices.Index(d.Inputs, st.ID); i >= 0 {
			read[d.InputRoutes[i]] = true
		}
	}
	for _, r := range st.Worker.Routes {
		if !read[r.Name] {
			b.r.warnf(nodeAt(r.Pos), "%s.routes.%s: no stage reads this route (name %s.%s in a sink's or worker's inputs)", path, r.Name, st.ID, r.Name)
		}
	}
}

// checkStepsNeedParsing warns about a step that needs fields (Caps) when
// no parsing step comes before it, in its worker or upstream.
func (b *builder) checkStepsNeedParsing(st *Stage, path string) {
	parsed := b.inputsParsed(st)
	for _, s := range st.Worker.Steps {
		if s.Factory.Caps.NeedsFields && !parsed {
			b.r.warnf(nodeAt(s.Pos), "%s.steps[%d].%s: records reaching this step are not parsed yet, so it will reject them; add %s before it", path, s.Index, s.Type, b.parsingStep())
		}
		if s.Factory.Caps.Parses {
			parsed = true
		}
	}
}

// inputsParsed reports whether every record reaching the worker st is
// parsed: it has inputs, and all of them are workers that parse or
// sources that produce fields.
func (b *builder) inputsParsed(st *Stage) bool {
	for _, in := range st.Inputs {
		if up := b.stages[in]; up == nil || !up.Parses {
			return false
		}
	}
	return len(st.Inputs) > 0
}

// parsingStep names the registered parsing steps for a message: "a
// parsing step (parse_csv, parse_json, ...)".
func (b *builder) parsingStep() string {
	p := b.reg.Parsers()
	if len(p) == 0 {
		return "a parsing step"
	}
	return "a parsing step (" + strings.Join(p, ", ") + ")"
}

func nodeAt(p Pos) *yaml.Node { return &yaml.Node{Line: p.Line, Column: p.Col} }

// findKey returns the value of key in a mapping node.
func findKey(n *yaml.Node, key string) (*yaml.Node, bool) {
	if n == nil {
		return nil, false
	}
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		return nil, false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1], true
		}
	}
	return nil, false
}

// findPath follows a dotted option path ("rotate.keep", "exclude[1]")
// from a mapping.
func findPath(n *yaml.Node, dotted string) *yaml.Node {
	for _, part := range strings.Split(dotted, ".") {
		key, index := part, -1
		if k, rest, ok := strings.Cut(part, "["); ok && strings.HasSuffix(rest, "]") {
			if i, err := strconv.Atoi(strings.TrimSuffix(rest, "]")); err == nil && i >= 0 {
				key, index = k, i
			}
		}
		v, ok := findKey(n, key)
		if !ok {
			return nil
		}
		if index >= 0 {
			v = resolveAlias(v)
			if v.Kind != yaml.SequenceNode || index >= len(v.Content) {
				return nil
			}
			v = v.Content[index]
		}
		n = v
	}
	return n
}
