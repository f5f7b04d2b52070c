package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/etld/etld/internal/stages/sinks"
	"github.com/etld/etld/internal/stages/sources"
	"github.com/etld/etld/internal/stages/steps"
)

// specExample is the pipeline of SPEC §2, plus a dead-letter sink.
const specExample = `version: 1                 # required; the schema version

sources:                   # id -> source
  orders:
    type: file
    path: data/orders-*.jsonl
    follow: false
  payments:
    type: file
    path: data/payments.jsonl

workers:                   # id -> worker (fan-out)
  enrich:
    inputs: [orders, payments]
    concurrency: 4         # goroutines; default: number of CPUs
    steps:                 # applied in order to every record
      - parse_json: {}
      - filter: 'level != "debug"'          # keep the record when true
      - set: { pipeline: merge-demo }       # literal values
      - eval: { cents: 'int(amount * 100)' } # expressions

sinks:                     # id -> sink (fan-in)
  merged:
    type: file
    inputs: [enrich]
    path: out/merged.jsonl
  rejects:
    type: file
    path: out/rejects.jsonl

dead_letter: rejects
`

func TestSpecExample(t *testing.T) {
	p, ds := Parse("/etc/etld/pipelines/orders.yaml", []byte(specExample), testOptions())
	if len(ds) != 0 || p == nil {
		t.Fatalf("Parse: %v", diagLines(ds))
	}
	if p.Name != "orders" || p.File != "/etc/etld/pipelines/orders.yaml" || p.Dir != "/etc/etld/pipelines" {
		t.Errorf("Name, File, Dir = %q, %q, %q", p.Name, p.File, p.Dir)
	}
	if p.DeadLetter != "rejects" {
		t.Errorf("DeadLetter = %q", p.DeadLetter)
	}
	if p.CheckpointInterval != DefaultCheckpointInterval {
		t.Errorf("CheckpointInterval = %v, want the default %v", p.CheckpointInterval, DefaultCheckpointInterval)
	}
	equalLines(t, "stages", stageIDs(p.Stages), []string{"orders", "payments", "enrich", "merged", "rejects"})
	equalLines(t, "Sources()", stageIDs(p.Sources()), []string{"orders", "payments"})
	equalLines(t, "Workers()", stageIDs(p.Workers()), []string{"enrich"})
	equalLines(t, "Sinks()", stageIDs(p.Sinks()), []string{"merged", "rejects"})
	if p.Stage("nope") != nil {
		t.Errorf("Stage(nope) != nil")
	}

	orders := p.Stage("orders")
	if orders.Kind != Source || orders.Type != "file" || orders.Factory.Type != "file" || !orders.Finite {
		t.Errorf("orders = %+v", orders)
	}
	if orders.Pos != (Pos{File: p.File, Line: 5, Col: 5}) {
		t.Errorf("orders.Pos = %+v", orders.Pos)
	}
	oc := orders.Config.(*sources.FileConfig)
	if oc.Path != "/etc/etld/pipelines/data/orders-*.jsonl" || oc.Follow || oc.StartAt != "beginning" {
		t.Errorf("orders config = %+v", oc)
	}
	if p.Stage("payments").Finite || p.Finite() {
		t.Errorf("a following file source is not finite")
	}

	enrich := p.Stage("enrich")
	if enrich.Kind != Worker || enrich.Type != "worker" || enrich.Worker == nil {
		t.Fatalf("enrich = %+v", enrich)
	}
	if enrich.Worker.Concurrency != 4 || enrich.Worker.Ordered || !enrich.Parses {
		t.Errorf("enrich worker = %+v, Parses %v", enrich.Worker, enrich.Parses)
	}
	var types []string
	for _, s := range enrich.Worker.Steps {
		types = append(types, s.Type)
		if s.Factory.Type != s.Type || s.Config == nil || s.Pos.File != p.File {
			t.Errorf("step %s = %+v", s.Type, s)
		}
	}
	equalLines(t, "steps", types, []string{"parse_json", "filter", "set", "eval"})
	if pos := enrich.Worker.Steps[1].Pos; pos.Line != 18 || pos.Col != 9 {
		t.Errorf("filter step Pos = %+v, want 18:9", pos)
	}
	if f := enrich.Worker.Steps[1].Config.(*steps.FilterConfig); f.Expr != `level != "debug"` {
		t.Errorf("filter = %q", f.Expr)
	}

	merged := p.Stage("merged")
	mc := merged.Config.(*sinks.FileConfig)
	if mc.Path != "/etc/etld/pipelines/out/merged.jsonl" || mc.Fsync != "checkpoint" || merged.Merge != nil {
		t.Errorf("merged = %+v, config %+v", merged, mc)
	}
	if rejects := p.Stage("rejects"); len(rejects.Inputs) != 0 || len(rejects.Outputs) != 0 {
		t.Errorf("rejects = %+v", rejects)
	}
	if len(p.Hash) != 64 {
		t.Errorf("Hash = %q", p.Hash)
	}
	for _, st := range p.Stages {
		if len(st.Fingerprint) != 16 {
			t.Errorf("%s: Fingerprint = %q", st.ID, st.Fingerprint)
		}
	}
}

// TestTopologicalOrder checks that every stage follows its inputs and that
// independent stages keep file order (sources, workers, sinks), and that
// Outputs lists the readers of a stage in that order.
func TestTopologicalOrder(t *testing.T) {
	const src = `version: 1
sources:
  s2: {type: stdin}
  s1: {type: generate, count: 1}
workers:
  c: {inputs: [b, s1]}
  b: {inputs: [a]}
  a: {inputs: [s2]}
  lone: {inputs: [s1]}
  d: {inputs: [c, a]}
sinks:
  z: {type: stdout, inputs: [d, lone]}
  y: {type: stdout, inputs: [s2]}
  x: {type: stdout, inputs: [c]}
`
	p := parseOK(t, "p.yaml", src, testOptions())
	equalLines(t, "order", stageIDs(p.Stages), []string{"s2", "s1", "a", "b", "c", "lone", "d", "z", "y", "x"})
	outputs := map[string][]string{
		"s2": {"a", "y"}, "s1": {"c", "lone"},
		"a": {"b", "d"}, "b": {"c"}, "c": {"d", "x"}, "lone": {"z"}, "d": {"z"},
		"z": nil, "y": nil, "x": nil,
	}
	for id, want := range outputs {
		if got := p.Stage(id).Outputs; !reflect.DeepEqual(got, want) {
			t.Errorf("%s.Outputs = %q, want %q", id, got, want)
		}
	}
	if got := p.Stage("c").Inputs; !reflect.DeepEqual(got, []string{"b", "s1"}) {
		t.Errorf("c.Inputs = %q, want as written", got)
	}
	pos := map[string]int{}
	for i, st := range p.Stages {
		pos[st.ID] = i
	}
	for _, st := range p.Stages {
		for _, in := range st.Inputs {
			if pos[in] >= pos[st.ID] {
				t.Errorf("%s comes before its input %s", st.ID, in)
			}
		}
	}
}

func TestParsesAndFinite(t *testing.T) {
	const src = `version: 1
sources:
  f: {type: file, path: a.log, follow: false}
  g: {type: generate, count: 5}
  i: {type: stdin}
workers:
  raw: {inputs: [f], steps: [filter: 'true']}
  parsed: {inputs: [f, g], steps: [parse_json: {}, filter: 'true']}
  late_parse: {inputs: [raw], steps: [filter: 'true', parse_json: {}]}
  after_parsed: {inputs: [parsed], steps: [set: {a: 1}]}
  after_both: {inputs: [parsed, raw]}
  after_chain: {inputs: [after_parsed, late_parse]}
sinks:
  out: {type: stdout, inputs: [i, raw, parsed, late_parse, after_parsed, after_both, after_chain]}
`
	p := parseOK(t, "p.yaml", src, testOptions())
	parses := map[string]bool{
		"raw": false, "parsed": true, "late_parse": true,
		"after_parsed": true, // its input parses: records arrive parsed
		"after_both":   false,
		"after_chain":  true,
	}
	for id, want := range parses {
		if got := p.Stage(id).Parses; got != want {
			t.Errorf("%s.Parses = %v, want %v", id, got, want)
		}
	}
	for _, st := range p.Sources() {
		if !st.Finite {
			t.Errorf("%s: Finite = false", st.ID)
		}
	}
	if !p.Finite() {
		t.Errorf("Finite() = false with file (follow: false), generate (count) and stdin sources")
	}

	for _, tt := range []struct{ source, finite string }{
		{"{type: file, path: a.log}", "false"},
		{"{type: file, path: a.log, follow: true}", "false"},
		{"{type: generate}", "false"},
		{"{type: generate, count: 0}", "false"},
		{"{type: generate, count: 1}", "true"},
		{"{type: stdin}", "true"},
	} {
		src := "version: 1\nsources:\n  s: " + tt.source + "\n  i: {type: stdin}\nsinks:\n  out: {type: stdout, inputs: [s, i]}\n"
		p := parseOK(t, "p.yaml", src, testOptions())
		if got := p.Stage("s").Finite; got != (tt.finite == "true") || p.Finite() != got {
			t.Errorf("%s: Finite = %v, pipeline Finite() = %v, want %s", tt.source, got, p.Finite(), tt.finite)
		}
	}
}

func TestDefaultsAndOptions(t *testing.T) {
	const src = `version: 1
checkpoint_interval: 250ms
sources:
  app: {type: file, path: /var/log/app.jsonl, start_at: end, max_line_bytes: 64KiB}
  gen: {type: generate, count: 3, interval: 1m30s, message: 42}
  other: {type: stdin}
workers:
  parse:
    inputs: [app, gen]
    ordered: true
    steps: [parse_json: {}, drop: password]
  parse2:
    inputs: [other]
    ordered: true
    steps: [parse_json: {}]
sinks:
  timeline:
    type: file
    inputs: [parse]
    path: timeline.jsonl
    fsync: never
    buffer_size: 1MiB
    rotate: {max_size: 10MB, max_age: 1h, keep: 3, gzip: true}
    merge: {order_by: ts}
  custom:
    type: file
    inputs: [parse2]
    path: custom.jsonl
    merge: {order_by: t, max_lateness: 0, idle_timeout: 5s, late: drop}
`
	p := parseOK(t, "/srv/p.yml", src, testOptions())
	if p.Name != "p" || p.CheckpointInterval != 250*time.Millisecond {
		t.Errorf("Name %q, CheckpointInterval %v", p.Name, p.CheckpointInterval)
	}
	app := p.Stage("app").Config.(*sources.FileConfig)
	if !reflect.DeepEqual(*app, sources.FileConfig{Path: "/var/log/app.jsonl", Follow: true, StartAt: "end", MaxLineBytes: 64 << 10, MaxOpenFiles: 1024, Multiline: sources.MultilineConfig{MaxLines: 500, Timeout: time.Second}}) {
		t.Errorf("app = %+v", *app)
	}
	gen := p.Stage("gen").Config.(*sources.GenerateConfig)
	if *gen != (sources.GenerateConfig{Count: 3, Interval: 90 * time.Second, Message: "42"}) {
		t.Errorf("gen = %+v (a string option takes any scalar)", *gen)
	}
	w := p.Stage("parse").Worker
	if w.Concurrency != 0 || !w.Ordered {
		t.Errorf("parse = %+v (concurrency 0 means one per CPU)", w)
	}
	if d := w.Steps[1].Config.(*steps.DropConfig); !reflect.DeepEqual(d.Fields, []string{"password"}) {
		t.Errorf("drop = %q", d.Fields)
	}
	tl := p.Stage("timeline")
	tc := tl.Config.(*sinks.FileConfig)
	wantRotate := sinks.RotateConfig{MaxSize: 10_000_000, MaxAge: time.Hour, Keep: 3, Gzip: true}
	if tc.Path != "/srv/timeline.jsonl" || tc.Fsync != "never" || tc.BufferSize != 1<<20 || tc.Rotate != wantRotate {
		t.Errorf("timeline = %+v", *tc)
	}
	if *tl.Merge != (MergeSpec{OrderBy: "ts", MaxLateness: time.Second, IdleTimeout: 30 * time.Second, Late: "emit"}) {
		t.Errorf("timeline merge = %+v, want the defaults", *tl.Merge)
	}
	if m := p.Stage("custom").Merge; *m != (MergeSpec{OrderBy: "t", MaxLateness: 0, IdleTimeout: 5 * time.Second, Late: "drop"}) {
		t.Errorf("custom merge = %+v", *m)
	}
}

// TestWarnings checks that warnings do not make a config invalid.
func TestWarnings(t *testing.T) {
	const src = `version: 1
sources:
  used: {type: stdin}
  unread: {type: stdin}
workers:
  w:
    inputs: [used]
    steps: [set: {a: 1}, parse_json: {}, eval: {b: '1'}]
  idle:
    inputs: [used]
    steps: [parse_json: {}]
sinks:
  out:
    type: file
    inputs: [w]
    path: out.jsonl
    merge: {order_by: ts}
`
	p, ds := Parse("w.yaml", []byte(src), testOptions())
	if ds.HasErrors() || p == nil || ds.Err() != nil {
		t.Fatalf("Parse: %v", diagLines(ds))
	}
	want := []string{
		"w.yaml:4:11: warning: sources.unread: nothing reads this source (name it in a worker's or sink's inputs)",
		"w.yaml:8:13: warning: workers.w.steps[0].set: records reaching this step are not parsed yet, so it will reject them; add a parsing step (parse_csv, parse_json, parse_logfmt, parse_regex, parse_syslog) before it",
		"w.yaml:10:5: warning: workers.idle: nothing reads this worker (name it in a worker's or sink's inputs)",
		"w.yaml:15:14: warning: sinks.out.inputs: worker \"w\" is not `ordered: true`, so each feed may reach the merge out of order",
	}
	equalLines(t, "warnings", diagLines(ds), want)
	if len(ds.Warnings()) != 4 || len(ds.Errors()) != 0 {
		t.Errorf("Warnings() %d, Errors() %d", len(ds.Warnings()), len(ds.Errors()))
	}

	// Through Load too: the pipeline comes back with its warnings.
	dir := t.TempDir()
	file := filepath.Join(dir, "w.yaml")
	writeFile(t, file, src)
	pipes, lds := Load(file, testOptions())
	if len(pipes) != 1 || lds.HasErrors() || len(lds.Warnings()) != 4 {
		t.Errorf("Load: %d pipelines, %v", len(pipes), diagLines(lds))
	}
	if !strings.HasPrefix(lds[0].String(), file+":4:11: warning: ") {
		t.Errorf("Load diagnostic = %q", lds[0])
	}
}

func TestDiagnosticString(t *testing.T) {
	for _, tt := range []struct {
		d    Diagnostic
		want string
	}{
		{Diagnostic{File: "a.yaml", Line: 3, Col: 7, Msg: "boom"}, "a.yaml:3:7: boom"},
		{Diagnostic{File: "a.yaml", Line: 3, Col: 7, Severity: Warning, Msg: "hm"}, "a.yaml:3:7: warning: hm"},
		{Diagnostic{File: "missing.yaml", Msg: "no such file or directory"}, "missing.yaml: no such file or directory"},
	} {
		if got := tt.d.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	if (Diagnostics{{Severity: Warning}}).Err() != nil {
		t.Errorf("Err() with warnings only != nil")
	}
}

func TestLoadMissingPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	pipes, ds := Load(path, testOptions())
	equalLines(t, "diagnostics", diagLines(ds), []string{path + ": no such file or directory"})
	if pipes != nil || !ds.HasErrors() {
		t.Errorf("Load(missing) = %v, HasErrors %v", pipes, ds.HasErrors())
	}
}

// fingerprintBase is the pipeline the fingerprint tests edit.
const fingerprintBase = `version: 1
sources:
  src: {type: file, path: in.log, follow: false}
  other: {type: stdin}
workers:
  w:
    inputs: [src]
    concurrency: 2
    steps: [{parse_json: {}}, {filter: 'x > 1'}]
sinks:
  out: {type: file, inputs: [w], path: out.jsonl}
  side: {type: stdout, inputs: [other]}
`

func fingerprints(t *testing.T, src string, env map[string]string) (map[string]string, string) {
	t.Helper()
	opts := testOptions()
	if env != nil {
		opts.Env = mapEnv(env)
	}
	p := parseOK(t, "/etc/etld/fp.yaml", src, opts)
	out := map[string]string{}
	for _, st := range p.Stages {
		out[st.ID] = st.Fingerprint
	}
	return out, p.Hash
}

func TestFingerprints(t *testing.T) {
	base, baseHash := fingerprints(t, fingerprintBase, nil)
	if len(base) != 5 {
		t.Fatalf("fingerprints = %v", base)
	}
	seen := map[string]string{}
	for id, fp := range base {
		if prev, dup := seen[fp]; dup {
			t.Errorf("%s and %s have the same fingerprint", id, prev)
		}
		seen[fp] = id
	}

	tests := []struct {
		name    string
		src     string
		env     map[string]string
		changed []string // stages whose fingerprint changes; the others keep theirs
		hash    string   // "same" or "changed": what Hash does; "" not checked
	}{{
		name: "comments, layout and quoting",
		src: `# A comment.
version: 1
sources:
  src:
    type: "file"      # quoted
    path: 'in.log'
    follow: false
  other:
    type: stdin
workers:
  w:
    inputs: [ src ]
    concurrency: 2
    steps:
      - parse_json: {}
      - filter: "x > 1"
sinks:
  out:
    type: file
    inputs:
      - w
    path: out.jsonl
  side: {type: stdout, inputs: [other]}
`,
		hash: "same",
	}, {
		name: "values from the environment",
		src:  strings.Replace(fingerprintBase, "path: in.log", `path: "${IN:-in.log}"`, 1),
		hash: "same",
	}, {
		// Hash is over the document's form: a different form of the
		// same inputs may change it, but no stage is replaced.
		name: "one input without brackets",
		src:  strings.Replace(fingerprintBase, "inputs: [src]", "inputs: src", 1),
	}, {
		name: "section order",
		src: `version: 1
sinks:
  out: {type: file, inputs: [w], path: out.jsonl}
  side: {type: stdout, inputs: [other]}
workers:
  w:
    inputs: [src]
    concurrency: 2
    steps: [{parse_json: {}}, {filter: 'x > 1'}]
sources:
  src: {type: file, path: in.log, follow: false}
  other: {type: stdin}
`,
		hash: "changed", // the document changed; no stage did
	}, {
		name:    "a worker's own option",
		src:     strings.Replace(fingerprintBase, "concurrency: 2", "concurrency: 3", 1),
		changed: []string{"w"},
		hash:    "changed",
	}, {
		name:    "a worker's steps",
		src:     strings.Replace(fingerprintBase, "x > 1", "x > 2", 1),
		changed: []string{"w"},
		hash:    "changed",
	}, {
		// Not transitive: w reads src, out reads w; neither changes.
		name:    "an upstream source's options",
		src:     strings.Replace(fingerprintBase, "path: in.log", "path: other.log", 1),
		changed: []string{"src"},
		hash:    "changed",
	}, {
		name:    "an environment value",
		src:     strings.Replace(fingerprintBase, "path: in.log", `path: "${IN:-in.log}"`, 1),
		env:     map[string]string{"IN": "elsewhere.log"},
		changed: []string{"src"},
		hash:    "changed",
	}, {
		name:    "a sink's option",
		src:     strings.Replace(fingerprintBase, "path: out.jsonl", "path: out.jsonl, fsync: batch", 1),
		changed: []string{"out"},
		hash:    "changed",
	}, {
		name:    "a worker's input ids",
		src:     strings.Replace(fingerprintBase, "inputs: [src]", "inputs: [src, other]", 1),
		changed: []string{"w"},
		hash:    "changed",
	}, {
		name:    "the order of a sink's inputs",
		src:     strings.Replace(fingerprintBase, "inputs: [other]", "inputs: [other, w]", 1),
		changed: []string{"side"},
		hash:    "changed",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, hash := fingerprints(t, tt.src, tt.env)
			changed := map[string]bool{}
			for _, id := range tt.changed {
				changed[id] = true
			}
			for id, fp := range base {
				if (got[id] != fp) != changed[id] {
					t.Errorf("%s: fingerprint changed = %v, want %v", id, got[id] != fp, changed[id])
				}
			}
			if tt.hash != "" && (hash != baseHash) != (tt.hash == "changed") {
				t.Errorf("Hash changed = %v, want %s", hash != baseHash, tt.hash)
			}
		})
	}

	// A renamed worker keeps its fingerprint (own options and inputs);
	// the sink that reads it gets a new one (its input ids changed).
	renamed, _ := fingerprints(t, strings.NewReplacer("  w:\n", "  w2:\n", "inputs: [w]", "inputs: [w2]").Replace(fingerprintBase), nil)
	if renamed["w2"] != base["w"] || renamed["out"] == base["out"] || renamed["src"] != base["src"] {
		t.Errorf("rename w -> w2: w2 %v (want %v), out changed %v (want true)", renamed["w2"], base["w"], renamed["out"] != base["out"])
	}

	// The same options under another kind are another stage.
	a := parseOK(t, "k.yaml", "version: 1\nsources:\n  s: {type: stdin}\nsinks:\n  x: {type: stdout, inputs: [s]}\n", testOptions())
	if a.Stage("s").Fingerprint == "" || a.Stage("s").Fingerprint == a.Stage("x").Fingerprint {
		t.Errorf("fingerprints of s and x: %q, %q", a.Stage("s").Fingerprint, a.Stage("x").Fingerprint)
	}
}
