package config

import (
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Severity of a Diagnostic.
type Severity int

const (
	Error Severity = iota
	Warning
)

// Diagnostic is one problem found in a pipeline file, at a position.
type Diagnostic struct {
	File     string
	Line     int // 1-based; 0 when the problem has no position (a missing file)
	Col      int
	Severity Severity
	Msg      string
}

// String formats the diagnostic as FILE:LINE:COL: message (warnings say so).
func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(d.File)
	if d.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", d.Line, d.Col)
	}
	b.WriteString(": ")
	if d.Severity == Warning {
		b.WriteString("warning: ")
	}
	b.WriteString(d.Msg)
	return b.String()
}

// Diagnostics is every problem found by one Load, errors and warnings.
type Diagnostics []Diagnostic

// Errors returns only the errors.
func (ds Diagnostics) Errors() Diagnostics { return ds.filter(Error) }

// Warnings returns only the warnings.
func (ds Diagnostics) Warnings() Diagnostics { return ds.filter(Warning) }

func (ds Diagnostics) filter(s Severity) Diagnostics {
	var out Diagnostics
	for _, d := range ds {
		if d.Severity == s {
			out = append(out, d)
		}
	}
	return out
}

// HasErrors reports whether any diagnostic is an error.
func (ds Diagnostics) HasErrors() bool { return len(ds.Errors()) > 0 }

// Err returns the errors as one error (one per line), or nil.
func (ds Diagnostics) Err() error {
	errs := ds.Errors()
	if len(errs) == 0 {
		return nil
	}
	return &LoadError{Diagnostics: errs}
}

func (ds Diagnostics) sort() {
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

// LoadError is the error returned for an invalid config: every problem, one
// per line, as FILE:LINE:COL: message.
type LoadError struct{ Diagnostics Diagnostics }

func (e *LoadError) Error() string {
	lines := make([]string, len(e.Diagnostics))
	for i, d := range e.Diagnostics {
		lines[i] = d.String()
	}
	return strings.Join(lines, "\n")
}

// reporter collects diagnostics for one file.
type reporter struct {
	file  string
	diags *Diagnostics
}

func (r reporter) at(n *yaml.Node, sev Severity, format string, args ...any) {
	d := Diagnostic{File: r.file, Severity: sev, Msg: oneLine(fmt.Sprintf(format, args...))}
	if n != nil {
		d.Line, d.Col = n.Line, n.Column
	}
	*r.diags = append(*r.diags, d)
}

func (r reporter) errorf(n *yaml.Node, format string, args ...any) {
	r.at(n, Error, format, args...)
}

func (r reporter) warnf(n *yaml.Node, format string, args ...any) {
	r.at(n, Warning, format, args...)
}

// lineBreaks escapes line breaks that user text (a quoted id or field
// name, a path) can bring into a message.
var lineBreaks = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// oneLine keeps a message on one line, as `etld validate` prints one
// problem per line.
func oneLine(msg string) string { return lineBreaks.Replace(msg) }
