package stages

import (
	"fmt"
	"sort"
)

// Kind is the kind of a stage type in the registry.
type Kind string

const (
	KindSource Kind = "source"
	KindStep   Kind = "step"
	KindSink   Kind = "sink"
)

// Factory describes one stage type: its name, its options and how to build
// it. NewConfig returns a pointer to the type's config with defaults set;
// the config loader decodes the user's YAML into it strictly (unknown keys
// are errors), then calls the optional Validator / PathResolver methods.
// New must do no I/O and start no goroutines: that is Open's job.
type Factory struct {
	Kind Kind
	Type string
	Doc  string // one sentence for `etld` docs and the README reference
	// Caps say what a step does to records, for the config loader's
	// checks and the reference; zero for sources and sinks.
	Caps Caps
	// NewConfig returns a pointer to a fresh config with defaults.
	NewConfig func() any
	// Exactly one of these is set, matching Kind.
	NewSource func(Settings, any) (Source, error)
	NewStep   func(Settings, any) (Step, error)
	NewSink   func(Settings, any) (Sink, error)
}

// Caps are the capabilities of a step type: what the config loader and
// the reference need to know about its effect on records. Nothing outside
// the type's own file names a type, so a new parser (parse_logfmt, ...)
// works wherever parse_json does by setting Parses.
type Caps struct {
	// Parses: the records the step keeps have fields (Record.Parsed), so
	// steps that need fields may follow it, and its worker may feed an
	// ordered merge (which reads the order_by field).
	Parses bool
	// NeedsFields: the step rejects records without fields as bad records;
	// the loader warns when no parsing step comes before it.
	NeedsFields bool
}

func (f Factory) check() error {
	if f.Type == "" || f.NewConfig == nil {
		return fmt.Errorf("stage factory %q: Type and NewConfig are required", f.Type)
	}
	if f.Kind != KindStep && f.Caps != (Caps{}) {
		return fmt.Errorf("%s type %q: Caps describe steps only", f.Kind, f.Type)
	}
	n := 0
	for _, set := range []bool{f.NewSource != nil, f.NewStep != nil, f.NewSink != nil} {
		if set {
			n++
		}
	}
	ok := n == 1 && ((f.Kind == KindSource && f.NewSource != nil) ||
		(f.Kind == KindStep && f.NewStep != nil) ||
		(f.Kind == KindSink && f.NewSink != nil))
	if !ok {
		return fmt.Errorf("%s type %q: exactly the constructor matching its kind must be set", f.Kind, f.Type)
	}
	return nil
}

// Registry maps stage types to factories. The zero value is not usable;
// call NewRegistry. A Registry is not safe for concurrent Add, but any
// number of goroutines may look types up once it is built.
type Registry struct {
	byKind map[Kind]map[string]Factory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byKind: map[Kind]map[string]Factory{
		KindSource: {}, KindStep: {}, KindSink: {},
	}}
}

// Add registers a factory. A second factory with the same kind and type is
// an error.
func (r *Registry) Add(f Factory) error {
	if err := f.check(); err != nil {
		return err
	}
	m, ok := r.byKind[f.Kind]
	if !ok {
		return fmt.Errorf("stage type %q: unknown kind %q", f.Type, f.Kind)
	}
	if _, dup := m[f.Type]; dup {
		return fmt.Errorf("%s type %q registered twice", f.Kind, f.Type)
	}
	m[f.Type] = f
	return nil
}

// Lookup returns the factory of a type.
func (r *Registry) Lookup(k Kind, typ string) (Factory, bool) {
	f, ok := r.byKind[k][typ]
	return f, ok
}

// Types lists the registered types of a kind, sorted.
func (r *Registry) Types(k Kind) []string {
	out := make([]string, 0, len(r.byKind[k]))
	for t := range r.byKind[k] {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Parsers lists the step types whose Caps say they parse records, sorted:
// what error messages and the reference offer as "a parsing step".
func (r *Registry) Parsers() []string {
	var out []string
	for _, t := range r.Types(KindStep) {
		if r.byKind[KindStep][t].Caps.Parses {
			out = append(out, t)
		}
	}
	return out
}
