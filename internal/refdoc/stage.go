package refdoc

import (
	"fmt"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
)

// stageDoc is what the reference says about one stage type.
type stageDoc struct {
	Doc     string
	Options []option
	// Value is set for a type written `type: VALUE` (a step whose config
	// decodes itself from a scalar, list or mapping) instead of a mapping
	// of named options.
	Value *valueForm
}

// valueForm describes the value of a step written `type: VALUE`.
type valueForm struct {
	// Shape is the YAML the value may be, e.g. "a string" or "a list of
	// strings or a string"; "" when the type takes no value at all and is
	// written `type: {}`.
	Shape    string
	Doc      string // the doc tags of the config's `yaml:"-"` fields
	Required bool   // Validate rejects the config without a value
}

func describe(f stages.Factory) stageDoc {
	d := stageDoc{Doc: f.Doc}
	cfg := f.NewConfig()
	req, whole := required(f.NewConfig)
	if isValueForm(cfg) {
		v := valueFormOf(f.NewConfig, cfg)
		v.Required = whole
		d.Value = &v
		return d
	}
	d.Options = options(cfg, req)
	return d
}

// isValueForm reports whether a config decodes itself from a YAML node
// (yaml.Unmarshaler): the loader then hands it the step's whole value.
func isValueForm(cfg any) bool {
	_, ok := cfg.(yaml.Unmarshaler)
	return ok
}

// probes are the YAML values tried on a value-form config to find the
// shapes it accepts.
var probes = []struct{ src, shape string }{
	{`{a: "b"}`, "mapping"},
	{`[a]`, "list"},
	{`a`, "string"},
}

// valueFormOf finds the shapes a value-form config accepts by decoding a
// sample of each into a fresh config, and collects the doc tags of its
// `yaml:"-"` fields, which describe the value.
func valueFormOf(newConfig func() any, cfg any) valueForm {
	var v valueForm
	t := reflect.TypeOf(cfg).Elem()
	var listType reflect.Type
	if t.Kind() == reflect.Struct {
		var docs []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() || f.Tag.Get("yaml") != "-" {
				continue
			}
			if doc := f.Tag.Get("doc"); doc != "" {
				docs = append(docs, doc)
			}
			if k := f.Type.Kind(); (k == reflect.Slice || k == reflect.Array) && f.Type.Elem().Kind() != reflect.Struct {
				listType = f.Type
			}
		}
		v.Doc = strings.Join(docs, "; ")
	}
	var shapes []string
	for _, p := range probes {
		if yaml.Unmarshal([]byte(p.src), newConfig()) != nil {
			continue
		}
		shape := p.shape
		if shape == "list" && listType != nil {
			shape = typeName(listType)
		}
		shapes = append(shapes, "a "+shape)
	}
	switch len(shapes) {
	case 0:
	case 1:
		v.Shape = shapes[0]
	default:
		v.Shape = strings.Join(shapes[:len(shapes)-1], ", ") + " or " + shapes[len(shapes)-1]
	}
	return v
}

// Problems lists what keeps the reference from documenting every option:
// a stage type without Doc, a config that is not a pointer, an exported
// config field without an explicit `yaml` tag (the loader would read it
// under its lowercased Go name) or without a `doc` tag, and a step written
// `type: VALUE` whose `yaml:"-"` field has no `doc` tag. The merge keys
// (config.MergeSpec) are checked too. An empty result means the reference
// is complete.
func Problems(reg *stages.Registry) []string {
	var out []string
	for _, k := range kinds {
		for _, typ := range reg.Types(k.kind) {
			f, _ := reg.Lookup(k.kind, typ)
			where := fmt.Sprintf("%s %q", k.kind, typ)
			if strings.TrimSpace(f.Doc) == "" {
				out = append(out, where+": Factory.Doc is empty")
			}
			cfg := f.NewConfig()
			rv := reflect.ValueOf(cfg)
			if rv.Kind() != reflect.Pointer {
				out = append(out, fmt.Sprintf("%s: NewConfig returns %T, want a pointer", where, cfg))
				continue
			}
			if rv.Elem().Kind() != reflect.Struct {
				out = append(out, fmt.Sprintf("%s: NewConfig returns %T; the reference documents struct configs only", where, cfg))
				continue
			}
			valueForm := isValueForm(cfg)
			probs := checkFields(where, rv.Elem().Type(), rv.Elem().Type().Name()+".", valueForm)
			if valueForm && len(probs) == 0 {
				if v := valueFormOf(f.NewConfig, cfg); v.Shape != "" && v.Doc == "" {
					probs = append(probs, fmt.Sprintf("%s: takes %s but no exported `yaml:\"-\"` field of %T has a doc tag describing it", where, v.Shape, cfg))
				}
			}
			out = append(out, probs...)
		}
	}
	out = append(out, checkFields("merge", reflect.TypeOf(config.MergeSpec{}), "config.MergeSpec.", false)...)
	return out
}

func checkFields(where string, t reflect.Type, goPrefix string, valueForm bool) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		field := goPrefix + f.Name
		if config.Inline(f) {
			out = append(out, checkFields(where, f.Type, field+".", false)...)
			continue
		}
		tag, hasTag := f.Tag.Lookup("yaml")
		name, _, _ := strings.Cut(tag, ",")
		switch {
		case !hasTag || name == "":
			name = strings.ToLower(f.Name)
			out = append(out, fmt.Sprintf("%s: %s has no yaml tag (the loader reads it as %q)", where, field, name))
		case name == "-" && !valueForm:
			continue // not an option and not documented
		}
		if f.Tag.Get("doc") == "" {
			what := "option " + name
			if name == "-" {
				what = "the step's value"
			}
			out = append(out, fmt.Sprintf("%s: %s (%s) has no doc tag", where, field, what))
		}
		if name != "-" && isNested(f.Type) {
			out = append(out, checkFields(where, f.Type, field+".", false)...)
		}
	}
	return out
}
