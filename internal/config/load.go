// Package config loads pipeline files: it decodes them strictly from
// yaml.v3 nodes, expands ${VAR}, checks every rule of the pipeline format
// and builds a typed, topologically ordered graph per pipeline, reporting
// every problem at once as FILE:LINE:COL: message.
//
// config knows stage types only through a stages.Registry; it never
// imports a stage implementation.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/rotate"
	"github.com/etld/etld/internal/stages"
)

// DefaultCheckpointInterval is used when a pipeline sets none.
const DefaultCheckpointInterval = time.Second

// Options tune a Load.
type Options struct {
	Registry *stages.Registry
	// Env looks up ${VAR}s; nil means os.LookupEnv.
	Env LookupEnv
}

// Load reads PATH: one pipeline file, or a directory whose *.yaml and *.yml
// files are one pipeline each (named after the file without extension).
// It returns the valid pipelines and every diagnostic; pipelines are
// returned only when there are no errors at all.
func Load(path string, opts Options) ([]*Pipeline, Diagnostics) {
	l := LoadEach(path, opts)
	if l.Diags.HasErrors() {
		return nil, l.Diags
	}
	return l.Pipelines, l.Diags
}

// Loaded is the result of LoadEach.
type Loaded struct {
	// Pipelines are the valid pipelines, in file order.
	Pipelines []*Pipeline
	// Failed names the pipelines whose file has errors (reload keeps
	// their running version).
	Failed []string
	// Diags holds every diagnostic, sorted.
	Diags Diagnostics
	// Dir is true when PATH is a directory.
	Dir bool
}

// LoadEach is Load for hot reload: every file is judged on its own, so one
// file's bad edit does not hide the other pipelines.
func LoadEach(path string, opts Options) Loaded {
	var l Loaded
	fi, err := os.Stat(path)
	if err != nil {
		l.Diags = Diagnostics{{File: path, Msg: statMessage(err)}}
		return l
	}
	var files []string
	if fi.IsDir() {
		l.Dir = true
		files, err = PipelineFiles(path)
		if err != nil {
			l.Diags = Diagnostics{{File: path, Msg: err.Error()}}
			return l
		}
		if len(files) == 0 {
			l.Diags = append(l.Diags, Diagnostic{File: path, Severity: Warning, Msg: "no pipeline files (*.yaml, *.yml) in this directory"})
		}
	} else {
		files = []string{path}
	}
	names := map[string]string{}
	failed := map[string]bool{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			l.Diags = append(l.Diags, Diagnostic{File: f, Msg: statMessage(err)})
			failed[PipelineName(f)] = true
			continue
		}
		p, ds := Parse(f, src, opts)
		l.Diags = append(l.Diags, ds...)
		if p == nil {
			failed[PipelineName(f)] = true
			continue
		}
		if prev, dup := names[p.Name]; dup {
			l.Diags = append(l.Diags, Diagnostic{File: f, Msg: oneLine(fmt.Sprintf("pipeline name %q is also used by %s (names come from file names without extension)", p.Name, prev))})
			failed[p.Name] = true
			continue
		}
		names[p.Name] = f
		l.Pipelines = append(l.Pipelines, p)
	}
	conflicts := checkSinkPaths(l.Pipelines)
	for _, d := range conflicts {
		failed[PipelineName(d.File)] = true
	}
	l.Diags = append(l.Diags, conflicts...)
	l.Diags = append(l.Diags, checkOwnInputs(l.Pipelines)...)
	l.Diags.sort()
	l.Pipelines = slices.DeleteFunc(l.Pipelines, func(p *Pipeline) bool { return failed[p.Name] })
	for n := range failed {
		l.Failed = append(l.Failed, n)
	}
	sort.Strings(l.Failed)
	return l
}

// PipelineFiles lists the pipeline files of a directory, sorted. Hidden
// files (editor swap files, "..data" links) are skipped.
func PipelineFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !IsPipelineFile(name) {
			continue
		}
		full := filepath.Join(dir, name)
		if st, err := os.Stat(full); err != nil || st.IsDir() {
			continue
		}
		out = append(out, full)
	}
	sort.Strings(out)
	return out, nil
}

// IsPipelineFile reports whether a file name is a pipeline file name:
// *.yaml or *.yml, except the test files of `etld test` (*.test.yaml,
// *.test.yml), which sit next to the pipelines they test.
func IsPipelineFile(name string) bool {
	ext := filepath.Ext(name)
	return (ext == ".yaml" || ext == ".yml") && !IsTestFile(name)
}

// IsTestFile reports whether a file name is a test file of `etld test`.
func IsTestFile(name string) bool {
	return strings.HasSuffix(name, ".test.yaml") || strings.HasSuffix(name, ".test.yml")
}

// PipelineName is the pipeline name of a file: its base name without
// extension.
func PipelineName(file string) string {
	base := filepath.Base(file)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

func statMessage(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// yamlSyntaxLine is compiled on the first syntax error, not in every start.
var yamlSyntaxLine = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
})

// Parse validates one pipeline file's bytes. file is used in messages and
// names the pipeline; relative paths in it resolve against its directory.
func Parse(file string, src []byte, opts Options) (*Pipeline, Diagnostics) {
	var diags Diagnostics
	r := reporter{file: file, diags: &diags}
	env := opts.Env
	if env == nil {
		env = os.LookupEnv
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(src))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			r.errorf(&yaml.Node{Line: 1, Column: 1}, "empty pipeline file (want at least version, sources and sinks)")
			return nil, diags
		}
		r.errorf(syntaxPos(err), "invalid YAML: %s", syntaxMsg(err))
		return nil, diags
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		r.errorf(&extra, "a pipeline file holds one YAML document; found a second one")
	case !errors.Is(err, io.EOF):
		// A broken second document is still broken YAML, not nothing.
		r.errorf(syntaxPos(err), "invalid YAML: %s", syntaxMsg(err))
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	interpolate(root, env, r, bytes.Split(src, []byte("\n")))
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		dir = filepath.Dir(file)
	}
	b := &builder{r: r, reg: opts.Registry, file: file, dir: dir}
	p := b.pipeline(root)
	diags.sort()
	if diags.HasErrors() || p == nil {
		return nil, diags
	}
	p.Name = PipelineName(file)
	p.File = file
	p.Dir = dir
	p.Hash = hashNode(root)
	return p, diags
}

// yamlParserProblems are the problems yaml.v3 reports as parser (not
// scanner) errors. For those, the "line N" of its message is 0-based: it
// is the line of the construct being parsed (or of the problem, when that
// construct starts on the first line), and yaml.v3's parser.fail adds 1
// only for scanner errors.
var yamlParserProblems = []string{
	"did not find expected <stream-start>",
	"did not find expected <document start>",
	"found undefined tag handle",
	"did not find expected node content",
	"did not find expected '-' indicator",
	"did not find expected key",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found duplicate %TAG directive",
}

// SyntaxError returns the line (1-based; 1 when yaml.v3 gives none) and
// the message of a yaml.v3 syntax error, for files other than pipelines
// (the test files of `etld test`) to report it like a pipeline's.
func SyntaxError(err error) (line int, msg string) {
	return syntaxPos(err).Line, syntaxMsg(err)
}

func syntaxPos(err error) *yaml.Node {
	if m := yamlSyntaxLine().FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		if slices.Contains(yamlParserProblems, m[2]) {
			line++
		}
		return &yaml.Node{Line: line, Column: 1}
	}
	return &yaml.Node{Line: 1, Column: 1}
}

func syntaxMsg(err error) string {
	if m := yamlSyntaxLine().FindStringSubmatch(err.Error()); m != nil {
		return m[2]
	}
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

// checkSinkPaths reports two sinks, in one pipeline or in two, that write
// the same file: their lines would interleave without a single writer.
func checkSinkPaths(pipes []*Pipeline) Diagnostics {
	var diags Diagnostics
	type owner struct {
		pipe  *Pipeline
		stage *Stage
	}
	seen := map[string]owner{}
	for _, p := range pipes {
		for _, s := range p.Sinks() {
			op, ok := s.Config.(stages.OutputPather)
			if !ok || op.OutputPath() == "" {
				continue
			}
			path := filepath.Clean(op.OutputPath())
			if prev, dup := seen[path]; dup {
				where := fmt.Sprintf("sink %q", prev.stage.ID)
				if prev.pipe != p {
					where = fmt.Sprintf("sink %q of pipeline %q (%s:%d:%d)", prev.stage.ID, prev.pipe.Name, prev.stage.Pos.File, prev.stage.Pos.Line, prev.stage.Pos.Col)
				}
				diags = append(diags, Diagnostic{File: s.Pos.File, Line: s.Pos.Line, Col: s.Pos.Col,
					Msg: oneLine(fmt.Sprintf("sinks.%s: writes %s, which %s also writes (each output file has exactly one writer)", s.ID, path, where))})
				continue
			}
			seen[path] = owner{p, s}
		}
	}
	return diags
}

// checkOwnInputs warns about a source, in any pipeline, whose files can
// include what a sink writes: its output, a rotated segment of it or a
// dead-letter file. Read back, those lines would be written again at
// every flush; the runtime skips such files (stages.OwnOutputs), and the
// warning says so, naming both stages.
func checkOwnInputs(pipes []*Pipeline) Diagnostics {
	// Every output once, by directory: with hundreds of pipelines, a
	// source whose glob names its directory (InputDir) is compared with
	// the outputs there only, not with every sink of every pipeline.
	type output struct {
		q    *Pipeline
		out  stages.OwnOutput
		path string // clean
	}
	var all []output
	byDir := map[string][]output{}
	for _, q := range pipes {
		for _, out := range q.OwnOutputs() {
			o := output{q, out, filepath.Clean(out.Path)}
			all = append(all, o)
			d := filepath.Dir(o.path) // rotated segments live next to it
			byDir[d] = append(byDir[d], o)
		}
	}
	var diags Diagnostics
	for _, p := range pipes {
		for _, src := range p.Sources() {
			m, ok := src.Config.(stages.InputMatcher)
			if !ok {
				continue
			}
			outs := all
			if d, ok := src.Config.(inputDirer); ok && d.InputDir() != "" {
				outs = byDir[d.InputDir()]
			}
			for _, o := range outs {
				file, hit := readsOutput(m, o.path)
				if !hit {
					continue
				}
				what := "sink"
				if o.out.Stage == o.q.DeadLetter {
					what = "dead-letter sink"
				}
				sink := o.q.Stage(o.out.Stage)
				diags = append(diags, Diagnostic{File: src.Pos.File, Line: src.Pos.Line, Col: src.Pos.Col, Severity: Warning,
					Msg: oneLine(fmt.Sprintf("sources.%s: can read %s, which %s %s writes (%s:%d:%d); etld never reads its own outputs and skips such files: add them to exclude or narrow path",
						src.ID, file, what, o.out, sink.Pos.File, sink.Pos.Line, sink.Pos.Col))})
			}
		}
	}
	return diags
}

// inputDirer is a source config whose files all lie in one directory
// (InputDir; "" when its glob has wildcards in the directory part).
type inputDirer interface{ InputDir() string }

// readsOutput reports whether m reads the sink output path or one of its
// rotated segments (the first of them stands for all), and which.
func readsOutput(m stages.InputMatcher, path string) (string, bool) {
	first := rotate.SealedName(path, 1)
	for _, f := range []string{path, first, first + ".gz"} {
		if m.MatchesInput(f) {
			return f, true
		}
	}
	return "", false
}
