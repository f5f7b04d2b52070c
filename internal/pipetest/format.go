// Package pipetest runs the test files of `etld test`: input lines per
// source, expected lines per sink. A test runs the pipeline's real steps,
// routes, encodings and ordered merges in the real engine, with every
// source replaced by one that reads the test's lines and every sink by
// one that keeps the lines it would write: no file, state directory or
// listener is touched.
package pipetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/config"
)

// File is one parsed test file.
type File struct {
	Path string // as given
	// Pipeline is the path of the pipeline file, joined with the test
	// file's directory when relative; PipelinePos is where it is named.
	Pipeline    string
	PipelinePos config.Pos
	Tests       []*Test
}

// Test is one test of a file.
type Test struct {
	Name   string
	Pos    config.Pos // of the test's mapping
	Input  []Lines    // by source, in file order
	Expect []Lines    // by sink, in file order
}

// Lines are the lines given for one stage.
type Lines struct {
	ID    string
	Pos   config.Pos // of the id
	Lines []string
}

// parser collects the diagnostics of one test file.
type parser struct {
	file  string
	diags config.Diagnostics
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	d := config.Diagnostic{File: p.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		d.Line, d.Col = n.Line, n.Column
	}
	p.diags = append(p.diags, d)
}

func (p *parser) pos(n *yaml.Node) config.Pos {
	return config.Pos{File: p.file, Line: n.Line, Col: n.Column}
}

// Parse parses a test file's bytes; file names it in diagnostics and
// anchors a relative pipeline path. The result is nil when there are
// errors, reported as FILE:LINE:COL like a pipeline file's.
func Parse(file string, src []byte) (*File, config.Diagnostics) {
	p := &parser{file: file}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(&yaml.Node{Line: 1, Column: 1}, "empty test file (want pipeline and tests)")
		} else {
			line, msg := config.SyntaxError(err)
			p.errorf(&yaml.Node{Line: line, Column: 1}, "invalid YAML: %s", msg)
		}
		return nil, p.diags
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	f := &File{Path: file}
	p.mapping(root, "the test file", map[string]bool{"pipeline": true, "tests": true}, func(key string, k, v *yaml.Node) {
		switch key {
		case "pipeline":
			if s, ok := p.str(v, "pipeline"); ok {
				f.Pipeline, f.PipelinePos = s, p.pos(v)
				if !filepath.IsAbs(s) {
					f.Pipeline = filepath.Join(filepath.Dir(file), s)
				}
			}
		case "tests":
			f.Tests = p.tests(v)
		}
	})
	if len(p.diags) > 0 {
		return nil, p.diags
	}
	return f, nil
}

// mapping walks a mapping's members, reporting keys that are not in
// known and the missing ones (all of known are required).
func (p *parser) mapping(n *yaml.Node, what string, known map[string]bool, member func(key string, k, v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s must be a mapping, got %s", what, config.DescribeNode(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case !known[k.Value]:
			p.errorf(k, "unknown key %q in %s (valid: %s)", k.Value, what, keys(known))
		case seen[k.Value]:
			p.errorf(k, "duplicate key %q", k.Value)
		default:
			seen[k.Value] = true
			member(k.Value, k, v)
		}
	}
	for _, k := range sortedKeys(known) {
		if !seen[k] {
			p.errorf(n, "%s: missing %s", what, k)
		}
	}
}

func (p *parser) str(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" || n.Value == "" {
		p.errorf(n, "%s must be a non-empty string", what)
		return "", false
	}
	return n.Value, true
}

func (p *parser) tests(n *yaml.Node) []*Test {
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		p.errorf(n, "tests must be a non-empty list of tests (name, input, expect)")
		return nil
	}
	var out []*Test
	names := map[string]int{}
	for _, tn := range n.Content {
		t := &Test{Pos: p.pos(tn)}
		p.mapping(tn, "a test", map[string]bool{"name": true, "input": true, "expect": true}, func(key string, k, v *yaml.Node) {
			switch key {
			case "name":
				if s, ok := p.str(v, "name"); ok {
					if line, dup := names[s]; dup {
						p.errorf(v, "test name %q is used twice (first at line %d)", s, line)
					}
					names[s] = v.Line
					t.Name = s
				}
			case "input":
				t.Input = p.lineSets(v, "input", "source")
			case "expect":
				t.Expect = p.lineSets(v, "expect", "sink")
				if v.Kind == yaml.MappingNode && len(v.Content) == 0 {
					p.errorf(v, "expect names no sink: a test checks at least one")
				}
			}
		})
		out = append(out, t)
	}
	return out
}

// lineSets decodes `id: [lines]` members.
func (p *parser) lineSets(n *yaml.Node, what, kind string) []Lines {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s must be a mapping of %s id to lines, got %s", what, kind, config.DescribeNode(n))
		return nil
	}
	var out []Lines
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			p.errorf(k, "%s %q is listed twice", kind, k.Value)
			continue
		}
		seen[k.Value] = true
		ls := Lines{ID: k.Value, Pos: p.pos(k), Lines: []string{}}
		switch {
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			// `rejects:` with nothing: no lines.
		case v.Kind != yaml.SequenceNode:
			p.errorf(v, "%s %q: want a list of lines, got %s", kind, k.Value, config.DescribeNode(v))
		default:
			for _, ln := range v.Content {
				if ln.Kind != yaml.ScalarNode {
					p.errorf(ln, "%s %q: a line is a string, got %s (quote JSON lines: '{\"a\": 1}')", kind, k.Value, config.DescribeNode(ln))
					continue
				}
				ls.Lines = append(ls.Lines, ln.Value)
			}
		}
		out = append(out, ls)
	}
	return out
}

// Check reports the ids of f that are not sources (input) or sinks
// (expect) of the pipeline.
func Check(f *File, pipe *config.Pipeline) config.Diagnostics {
	p := &parser{file: f.Path}
	check := func(ls []Lines, want config.StageKind, what string) {
		for _, l := range ls {
			n := &yaml.Node{Line: l.Pos.Line, Column: l.Pos.Col}
			st := pipe.Stage(l.ID)
			switch {
			case st == nil:
				p.errorf(n, "%s: %q is not a stage of pipeline %s (%ss: %s)", what, l.ID, pipe.File, want, ids(pipe, want))
			case st.Kind != want:
				p.errorf(n, "%s: %q is a %s of pipeline %s, want a %s (%ss: %s)", what, l.ID, st.Kind, pipe.File, want, want, ids(pipe, want))
			}
		}
	}
	for _, t := range f.Tests {
		check(t.Input, config.Source, "input")
		check(t.Expect, config.Sink, "expect")
	}
	return p.diags
}

func ids(pipe *config.Pipeline, k config.StageKind) string {
	var out []string
	for _, st := range pipe.Stages {
		if st.Kind == k {
			out = append(out, st.ID)
		}
	}
	return strings.Join(out, ", ")
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

func keys(m map[string]bool) string { return strings.Join(sortedKeys(m), ", ") }
