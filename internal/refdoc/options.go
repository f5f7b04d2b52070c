package refdoc

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
)

// option is one documented option of a config struct.
type option struct {
	// Name is the option's YAML key; options of a nested mapping are
	// dotted ("rotate.max_size").
	Name string
	// Type is the option's type in user terms: string, bool, integer,
	// number, duration, byte size, list of strings, mapping, ...
	Type string
	// Default is the value NewConfig sets, as YAML; "" when the option has
	// no default of its own (a nested mapping).
	Default string
	// DefaultText replaces Default in the reference when the default is
	// not a YAML value ("number of CPUs").
	DefaultText string
	// Required is true when Validate rejects the config without it.
	Required bool
	// Doc is the field's `doc` tag.
	Doc string
	// Field is the Go path of the field ("FileConfig.Rotate.MaxSize"),
	// for messages about the struct itself.
	Field string
}

var (
	durationType    = reflect.TypeOf(time.Duration(0))
	byteSizeType    = reflect.TypeOf(stages.ByteSize(0))
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

// options lists the options of a config: defaults is a pointer to a
// struct holding its defaults, as returned by a stages.Factory's
// NewConfig, and req the options its Validate requires (see required).
// Fields of nested structs come right after their parent, dotted. Fields
// tagged `yaml:"-"` are not options (see valueFormOf) and are left out.
func options(defaults any, req map[string]bool) []option {
	rv := reflect.ValueOf(defaults)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return nil
	}
	var out []option
	walk(rv.Elem(), "", rv.Elem().Type().Name()+".", req, &out)
	return out
}

func walk(v reflect.Value, prefix, goPrefix string, req map[string]bool, out *[]option) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if config.Inline(f) {
			walk(v.Field(i), prefix, goPrefix+f.Name+".", req, out)
			continue
		}
		name := config.YAMLKey(f)
		if name == "" {
			continue
		}
		o := option{
			Name:  prefix + name,
			Type:  typeName(f.Type),
			Doc:   f.Tag.Get("doc"),
			Field: goPrefix + f.Name,
		}
		o.Required = req[o.Name]
		if isNested(f.Type) {
			*out = append(*out, o)
			walk(v.Field(i), o.Name+".", o.Field+".", req, out)
			continue
		}
		o.Default = formatValue(v.Field(i))
		*out = append(*out, o)
	}
}

// isNested reports whether a field type is a mapping of further options
// rather than one value.
func isNested(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != durationType &&
		!reflect.PointerTo(t).Implements(unmarshalerType)
}

// typeName names a Go type in the terms a pipeline author uses.
func typeName(t reflect.Type) string {
	switch t {
	case durationType:
		return "duration"
	case byteSizeType:
		return "byte size"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.Slice, reflect.Array:
		return "list of " + plural(typeName(t.Elem()))
	case reflect.Map:
		return "map of " + typeName(t.Key()) + " to " + typeName(t.Elem())
	case reflect.Struct:
		return "mapping"
	default:
		return "any"
	}
}

func plural(s string) string {
	switch s {
	case "any":
		return "values"
	case "mapping":
		return "mappings"
	case "bool":
		return "bools"
	}
	if strings.HasPrefix(s, "list of ") || strings.HasPrefix(s, "map of ") {
		return "(" + s + ")"
	}
	return s + "s"
}

// formatValue writes a default value as YAML, the way a user would write
// it in a pipeline file.
func formatValue(v reflect.Value) string {
	switch v.Type() {
	case durationType:
		return formatDuration(time.Duration(v.Int()))
	case byteSizeType:
		return formatByteSize(v.Int())
	}
	switch v.Kind() {
	case reflect.String:
		return formatString(v.String())
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(v.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return "null"
		}
		return formatValue(v.Elem())
	case reflect.Slice, reflect.Array:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = formatValue(v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case reflect.Map:
		if v.Len() == 0 {
			return "{}"
		}
		b, err := yaml.Marshal(v.Interface())
		if err != nil {
			return fmt.Sprint(v.Interface())
		}
		return "{" + strings.Join(strings.Split(strings.TrimSpace(string(b)), "\n"), ", ") + "}"
	default:
		return fmt.Sprint(v.Interface())
	}
}

// formatString writes a string as YAML, quoted only when it must be to
// read back as that string ("", "true", "{...}").
func formatString(s string) string {
	b, err := yaml.Marshal(s)
	if err != nil || bytes.Count(b, []byte("\n")) > 1 {
		return strconv.Quote(s)
	}
	return strings.TrimSuffix(string(b), "\n")
}

// formatByteSize writes a size with the largest unit that divides it,
// binary units first: 1MiB rather than 1024KiB or 1048576.
func formatByteSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
	} {
		if n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// formatDuration writes a duration without the trailing zero units of
// time.Duration.String: 1m rather than 1m0s.
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// required runs the Validate method of a fresh config, if it has one, and
// returns the options it complains about (a default config lacks exactly
// the required ones) and whether it complains about the config as a whole
// (stages.FieldErr with an empty field: a step whose value is required).
func required(newConfig func() any) (fields map[string]bool, whole bool) {
	fields = map[string]bool{}
	if newConfig == nil {
		return fields, false
	}
	v, ok := newConfig().(stages.Validator)
	if !ok {
		return fields, false
	}
	for _, err := range leaves(v.Validate()) {
		var fe *stages.FieldError
		if errors.As(err, &fe) && fe.Field != "" {
			fields[fe.Field] = true
		} else {
			whole = true
		}
	}
	return fields, whole
}

// leaves splits errors.Join trees into their leaves.
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}
