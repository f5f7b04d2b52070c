package config

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// decoder decodes yaml.Nodes into Go values strictly: unknown keys,
// duplicate keys and wrong types are reported with their line and column,
// all of them, instead of stopping at the first. (yaml.v3's KnownFields is
// lost by Node.Decode, go-yaml/yaml#460, and stops at the first error.)
type decoder struct{ r reporter }

var (
	durationType    = reflect.TypeOf(time.Duration(0))
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

// decode decodes n into v (a settable value), naming it path in messages.
// It returns false when it reported an error.
func (d decoder) decode(n *yaml.Node, v reflect.Value, path string) bool {
	n = resolveAlias(n)
	if v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if err := n.Decode(v.Addr().Interface()); err != nil {
			d.r.errorf(n, "%s: %s", path, cleanYAMLError(err))
			return false
		}
		return true
	}
	if isNull(n) && v.Kind() != reflect.Interface {
		return true // keep the default
	}
	if v.Type() == durationType {
		return d.duration(n, v, path)
	}
	switch v.Kind() {
	case reflect.Struct:
		return d.structure(n, v, path)
	case reflect.Map:
		return d.mapping(n, v, path)
	case reflect.Slice:
		return d.sequence(n, v, path)
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, v.Elem(), path)
	case reflect.Interface:
		var out any
		if err := n.Decode(&out); err != nil {
			d.r.errorf(n, "%s: %s", path, cleanYAMLError(err))
			return false
		}
		if out != nil {
			v.Set(reflect.ValueOf(out))
		}
		return true
	default:
		return d.scalar(n, v, path)
	}
}

func (d decoder) structure(n *yaml.Node, v reflect.Value, path string) bool {
	if n.Kind != yaml.MappingNode {
		d.r.errorf(n, "%s: want a mapping of options, got %s", path, describe(n))
		return false
	}
	fields := structFields(v.Type())
	ok := true
	forEachPair(n, d.r, path, func(k, val *yaml.Node) {
		idx, found := fields[k.Value]
		if !found {
			d.r.errorf(k, "%s: unknown option %q%s", path, k.Value, suggest(k.Value, fieldNames(v.Type())))
			ok = false
			return
		}
		if !d.decode(val, v.FieldByIndex(idx), join(path, k.Value)) {
			ok = false
		}
	})
	return ok
}

func (d decoder) mapping(n *yaml.Node, v reflect.Value, path string) bool {
	if n.Kind != yaml.MappingNode {
		d.r.errorf(n, "%s: want a mapping, got %s", path, describe(n))
		return false
	}
	if v.Type().Key().Kind() != reflect.String {
		panic("config: only string-keyed maps are supported")
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	ok := true
	forEachPair(n, d.r, path, func(k, val *yaml.Node) {
		elem := reflect.New(v.Type().Elem()).Elem()
		if !d.decode(val, elem, join(path, k.Value)) {
			ok = false
			return
		}
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), elem)
	})
	return ok
}

func (d decoder) sequence(n *yaml.Node, v reflect.Value, path string) bool {
	if n.Kind != yaml.SequenceNode {
		d.r.errorf(n, "%s: want a list, got %s", path, describe(n))
		return false
	}
	out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	ok := true
	for i, c := range n.Content {
		if !d.decode(c, out.Index(i), fmt.Sprintf("%s[%d]", path, i)) {
			ok = false
		}
	}
	v.Set(out)
	return ok
}

func (d decoder) scalar(n *yaml.Node, v reflect.Value, path string) bool {
	want := map[reflect.Kind]string{
		reflect.Bool: "a boolean (true or false)", reflect.String: "a string",
		reflect.Float32: "a number", reflect.Float64: "a number",
	}[v.Kind()]
	if want == "" {
		want = "an integer"
		if k := v.Kind(); k >= reflect.Uint && k <= reflect.Uintptr {
			want = "a non-negative integer"
		}
	}
	if n.Kind != yaml.ScalarNode {
		d.r.errorf(n, "%s: want %s, got %s", path, want, describe(n))
		return false
	}
	// A string option takes any scalar as its text (`message: 42`).
	if v.Kind() == reflect.String {
		v.SetString(n.Value)
		return true
	}
	tmp := reflect.New(v.Type())
	if err := n.Decode(tmp.Interface()); err != nil {
		d.r.errorf(n, "%s: want %s, got %q", path, want, n.Value)
		return false
	}
	v.Set(tmp.Elem())
	return true
}

func (d decoder) duration(n *yaml.Node, v reflect.Value, path string) bool {
	if n.Kind == yaml.ScalarNode {
		if n.Value == "0" {
			v.SetInt(0)
			return true
		}
		if dur, err := time.ParseDuration(n.Value); err == nil {
			v.SetInt(int64(dur))
			return true
		}
	}
	d.r.errorf(n, "%s: want a duration such as 250ms, 2s or 1m30s, got %s", path, describe(n))
	return false
}

// forEachPair calls fn for every key/value of a mapping, reporting
// duplicate keys (yaml.v3 accepts them silently in a Node) and non-scalar
// keys.
func forEachPair(n *yaml.Node, r reporter, path string, fn func(k, v *yaml.Node)) {
	seen := map[string]*yaml.Node{}
	prefix := ""
	if path != "" { // the top level has no path
		prefix = path + ": "
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			r.errorf(k, "%skeys must be plain names, got %s", prefix, describe(k))
			continue
		}
		if k.Tag == "!!merge" {
			r.errorf(k, "%sYAML merge keys (<<) are not supported", prefix)
			continue
		}
		if prev, dup := seen[k.Value]; dup {
			r.errorf(k, "%sduplicate key %q (first defined at line %d)", prefix, k.Value, prev.Line)
			continue
		}
		seen[k.Value] = k
		fn(k, v)
	}
}

// structFields maps yaml tag names to field index paths (for
// reflect.Value.FieldByIndex): an inline struct's fields are the
// enclosing struct's options (see Inline).
func structFields(t reflect.Type) map[string][]int {
	m := map[string][]int{}
	eachOption(t, nil, func(name string, index []int) { m[name] = index })
	return m
}

func fieldNames(t reflect.Type) []string {
	var out []string
	eachOption(t, nil, func(name string, _ []int) { out = append(out, name) })
	return out
}

// eachOption calls fn with every option of struct type t, in field
// order, descending into inline structs.
func eachOption(t reflect.Type, at []int, fn func(name string, index []int)) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		index := append(append([]int(nil), at...), i)
		if Inline(f) {
			eachOption(f.Type, index, fn)
		} else if name := YAMLKey(f); name != "" {
			fn(name, index)
		}
	}
}

// Inline reports whether a config struct field is tagged `yaml:",inline"`:
// a struct whose options are written at the level of the enclosing one,
// so that stage types can share a group of options (a broker connection)
// without nesting them in the file.
func Inline(f reflect.StructField) bool {
	_, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return f.IsExported() && f.Type.Kind() == reflect.Struct && opts == "inline"
}

// YAMLKey is the key the loader decodes a config struct field from: its
// yaml tag name, else its lowercased name; "" for unexported, inline and
// `yaml:"-"` fields. The reference (internal/refdoc) documents options by
// it.
func YAMLKey(f reflect.StructField) string {
	if !f.IsExported() || Inline(f) {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		name = strings.ToLower(f.Name)
	}
	return name
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// DescribeNode names what a node is, for "want X, got Y" messages of
// other YAML files (the test files of `etld test`).
func DescribeNode(n *yaml.Node) string { return describe(n) }

// describe names what a node is, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing (null)"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an alias"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlErrPrefix is compiled on the first error, not in every start.
var yamlErrPrefix = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^(yaml: )?(unmarshal errors:\s*)?(line \d+: )?`)
})

// cleanYAMLError strips yaml.v3's prefixes ("yaml: unmarshal errors: line
// 3:") since our messages carry the position themselves.
func cleanYAMLError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		parts := make([]string, len(te.Errors))
		for i, e := range te.Errors {
			parts[i] = yamlErrPrefix().ReplaceAllString(e, "")
		}
		return strings.Join(parts, "; ")
	}
	return yamlErrPrefix().ReplaceAllString(err.Error(), "")
}
