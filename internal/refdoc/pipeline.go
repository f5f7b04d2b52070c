package refdoc

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages"
)

// The keys below are parsed by hand in internal/config (build.go), not
// decoded from tagged structs, so they are listed here. TestHandListsMatchLoader
// checks these names against the loader's own lists, taken from the
// "valid: ..." hint of its unknown-key messages, so a key added to the
// loader fails the tests until it is documented here.

// topKeys are the top-level keys of a pipeline file, in loader order.
func topKeys() []option {
	return []option{
		{Name: "version", Type: "integer", Required: true,
			Doc: fmt.Sprintf("schema version of the file; this etld reads `%d`", config.SchemaVersion)},
		{Name: "sources", Type: "map of id to source", Required: true,
			Doc: "the sources, at least one (see [Sources](#sources))"},
		{Name: "workers", Type: "map of id to worker",
			Doc: "the workers (see [Workers](#workers))"},
		{Name: "sinks", Type: "map of id to sink", Required: true,
			Doc: "the sinks, at least one (see [Sinks](#sinks))"},
		{Name: "dead_letter", Type: "string",
			Doc: "id of the sink that receives bad records (invalid JSON, expression errors, over-long lines, and late records with `merge.late: dead_letter`) as JSON objects; that sink has no `inputs`. Without it bad records are counted, logged and dropped"},
		{Name: "checkpoint_interval", Type: "duration", Default: formatDuration(config.DefaultCheckpointInterval),
			Doc: "how often sources and sinks commit their positions together; on a restart, work after the last commit is read again and written once"},
	}
}

// workerKeys are the keys of a worker, in loader order.
func workerKeys() []option {
	return []option{
		{Name: "inputs", Type: "list of ids", Required: true,
			Doc: "sources or workers this worker reads (a single id may be written without brackets); `w.route` reads one route of worker `w`, `w._unmatched` the records that matched none of its routes"},
		{Name: "concurrency", Type: "integer", DefaultText: "number of CPUs",
			Doc: "goroutines running the steps; at least 1"},
		{Name: "ordered", Type: "bool", Default: "false",
			Doc: "emit records in the order they arrived, per input, while still running `concurrency` goroutines; put it in front of a merging sink"},
		{Name: "steps", Type: "list of steps", Default: "[]",
			Doc: "applied in order to every record; each item is a mapping with exactly one key, the step type (see [Steps](#steps))"},
		{Name: "routes", Type: "mapping", DefaultText: "none",
			Doc: "route name -> expr-lang expression over the fields, evaluated after the steps: a record goes to every route whose expression is true, or to `_unmatched` (a reserved name); stages read a route as `worker.route`, and plain `worker` still gets every record. An expression error makes a bad record"},
	}
}

// commonKeys are the keys every source or sink has besides its type's
// options, in loader order.
func commonKeys(reg *stages.Registry, k stages.Kind) []option {
	types := "`" + strings.Join(reg.Types(k), "`, `") + "`"
	out := []option{{Name: "type", Type: "string", Required: true, Doc: "the " + string(k) + " type: " + types}}
	if k == stages.KindSink {
		out = append(out,
			option{Name: "inputs", Type: "list of ids", DefaultText: "*required*, except for the dead-letter sink",
				Doc: "sources or workers whose records this sink writes (`w.route` or `w._unmatched` for a worker's route); the dead-letter sink has none"},
			option{Name: "merge", Type: "mapping",
				Doc: "write the records in order of a field, merging the sink's feeds (see [Ordered merge](#ordered-merge))"})
	}
	return out
}

// mergeOptions documents the `merge` keys of a sink from config.MergeSpec's
// tags, with the defaults and required keys the loader applies, found by
// loading two small pipelines (probeMerge).
func mergeOptions() ([]option, error) {
	defaults, req, err := probeMerge()
	if err != nil {
		return nil, err
	}
	opts := options(&defaults, req)
	for i := range opts {
		opts[i].Name = "merge." + opts[i].Name
		opts[i].Field = "config." + opts[i].Field
	}
	return opts, nil
}

// probeMerge loads a pipeline with `merge: {order_by: ts}` to read the
// merge defaults the loader fills in, and one with `merge: {}` to see
// which keys it requires. It uses a registry of placeholder types, so the
// result does not depend on the built-in stages.
func probeMerge() (config.MergeSpec, map[string]bool, error) {
	reg, err := probeRegistry()
	if err != nil {
		return config.MergeSpec{}, nil, err
	}
	src := func(merge string) []byte {
		return []byte(`version: 1
sources: {in: {type: probe}}
workers: {w: {inputs: [in], ordered: true, steps: [{probe: {}}]}}
sinks: {out: {type: probe, inputs: [w], merge: ` + merge + `}}
`)
	}
	opts := config.Options{Registry: reg, Env: func(string) (string, bool) { return "", false }}
	p, diags := config.Parse("merge-probe.yaml", src(`{order_by: ts}`), opts)
	if p == nil || len(diags) > 0 {
		return config.MergeSpec{}, nil, fmt.Errorf("refdoc: loading the merge probe pipeline: %v", diags)
	}
	st := p.Stage("out")
	if st == nil || st.Merge == nil {
		return config.MergeSpec{}, nil, errors.New("refdoc: the merge probe pipeline has no merge spec")
	}
	defaults := *st.Merge
	defaults.OrderBy = "" // set by the probe, not a default

	req := map[string]bool{}
	_, diags = config.Parse("merge-probe.yaml", src(`{}`), opts)
	t := reflect.TypeOf(defaults)
	for i := 0; i < t.NumField(); i++ {
		name := config.YAMLKey(t.Field(i))
		for _, d := range diags {
			if strings.Contains(d.Msg, fmt.Sprintf("missing required key %q", name)) {
				req[name] = true
			}
		}
	}
	return defaults, req, nil
}

// probeRegistry has a source, a parsing step and a sink type "probe", none
// with options, to load pipelines that exercise the
// loader's own keys only. Its stages cannot be built.
func probeRegistry() (*stages.Registry, error) {
	reg := stages.NewRegistry()
	noConfig := func() any { return &struct{}{} }
	errProbe := errors.New("refdoc: probe stage is never built")
	for _, f := range []stages.Factory{
		{Kind: stages.KindSource, Type: "probe", NewConfig: noConfig,
			NewSource: func(stages.Settings, any) (stages.Source, error) { return nil, errProbe }},
		// The loader knows a worker parses records by its steps' Caps.
		{Kind: stages.KindStep, Type: "probe", Caps: stages.Caps{Parses: true}, NewConfig: noConfig,
			NewStep: func(stages.Settings, any) (stages.Step, error) { return nil, errProbe }},
		{Kind: stages.KindSink, Type: "probe", NewConfig: noConfig,
			NewSink: func(stages.Settings, any) (stages.Sink, error) { return nil, errProbe }},
	} {
		if err := reg.Add(f); err != nil {
			return nil, err
		}
	}
	return reg, nil
}
