package config

import (
	"testing"

	"github.com/etld/etld/internal/stages/sources"
	"github.com/etld/etld/internal/stages/steps"
)

func TestExpand(t *testing.T) {
	env := mapEnv(testEnv)
	tests := []struct {
		in, want string
	}{
		{"plain", "plain"},
		{"${HOME}", "/home/etld"},
		{"${HOME}/x/${N}", "/home/etld/x/4"},
		{"${N}${N}", "44"},
		{"${UNSET:-fallback}", "fallback"},
		{"${UNSET:-}", ""},
		{"${UNSET:-a b:-c}", "a b:-c"},
		{"${N:-9}", "4"},           // set: the default is ignored
		{"${EMPTY:-dflt}", "dflt"}, // :- also replaces an empty value, as in sh
		{"${EMPTY}", ""},
		{"$$", "$"},
		{"$$HOME", "$HOME"},
		{"$${HOME}", "${HOME}"},
		{"$$$${N}", "$${N}"},
		{"$$${N}", "$4"},
		{"cost: $5", "cost: $5"}, // a lone $ is kept
		{"end$", "end$"},
		{"${DOLLAR_IN}", "$HOME"}, // values are not expanded again
		{"${UNSET:-${N}", "${N"},  // no nesting: the default ends at the first }
		{"${_under_1}", ""},       // set below
	}
	envWith := func(name string) (string, bool) {
		if name == "_under_1" {
			return "", true
		}
		return env(name)
	}
	for _, tt := range tests {
		got, _, err := expand(tt.in, envWith)
		if err != nil || got != tt.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestExpandErrors(t *testing.T) {
	tests := []struct {
		in      string
		wantOff int
		wantErr string
	}{
		{"${UNSET}", 0, "environment variable UNSET is not set (use ${UNSET:-default} for a default)"},
		{"x/${HOME}/${UNSET}/y", 10, "environment variable UNSET is not set (use ${UNSET:-default} for a default)"},
		{"$$${UNSET}", 2, "environment variable UNSET is not set (use ${UNSET:-default} for a default)"},
		{"a${}", 1, "invalid variable reference ${} (want ${NAME} or ${NAME:-default})"},
		{"${1X}", 0, "invalid variable reference ${1X} (want ${NAME} or ${NAME:-default})"},
		{"${A-B}", 0, "invalid variable reference ${A-B} (want ${NAME} or ${NAME:-default})"},
		{"${A:B}", 0, "invalid variable reference ${A:B} (want ${NAME} or ${NAME:-default})"},
		{"ok ${N} ${OPEN", 8, `unterminated ${ in "ok ${N} ${OPEN" (write $$ for a literal $)`},
	}
	for _, tt := range tests {
		_, off, err := expand(tt.in, mapEnv(testEnv))
		if err == nil || err.Error() != tt.wantErr || off != tt.wantOff {
			t.Errorf("expand(%q) = offset %d, %v; want offset %d, %q", tt.in, off, err, tt.wantOff, tt.wantErr)
		}
	}
}

// TestInterpolationInConfig checks that ${VAR} reaches the typed configs,
// expressions included, and that plain scalars are re-typed after
// expansion.
func TestInterpolationInConfig(t *testing.T) {
	const src = `version: 1
sources:
  in:
    type: file
    path: ${DATA_DIR}/in-${UNSET:-default}.log
    follow: ${FOLLOW:-false}
    max_line_bytes: ${MAX:-2KiB}
  gen:
    type: generate
    count: ${N}
    message: '{"home": "${HOME}", "cost": "$$5", "raw": "$$HOME"}'
workers:
  w:
    inputs: [in, gen]
    concurrency: ${N:-1}
    steps:
      - parse_json: {}
      - filter: 'level != "${LEVEL}" && note != "$${LEVEL}"'
      - eval: {tag: '"${OUT_NAME}-" + string(seq)'}
sinks:
  out: {type: file, inputs: [w], path: "out/${OUT_NAME}.jsonl"}
`
	p := parseOK(t, "/etc/etld/p.yaml", src, testOptions())

	in := p.Stage("in").Config.(*sources.FileConfig)
	if in.Path != "/etc/etld/data/in-default.log" {
		t.Errorf("in.path = %q", in.Path)
	}
	if in.Follow {
		t.Errorf("in.follow = true; ${FOLLOW:-false} must decode as the boolean false")
	}
	if in.MaxLineBytes != 2048 {
		t.Errorf("in.max_line_bytes = %d, want 2048", in.MaxLineBytes)
	}
	gen := p.Stage("gen").Config.(*sources.GenerateConfig)
	if gen.Count != 4 {
		t.Errorf("gen.count = %d, want 4", gen.Count)
	}
	if want := `{"home": "/home/etld", "cost": "$5", "raw": "$HOME"}`; gen.Message != want {
		t.Errorf("gen.message = %q, want %q", gen.Message, want)
	}
	w := p.Stage("w").Worker
	if w.Concurrency != 4 {
		t.Errorf("w.concurrency = %d, want 4", w.Concurrency)
	}
	filter := w.Steps[1].Config.(*steps.FilterConfig)
	if want := `level != "debug" && note != "${LEVEL}"`; filter.Expr != want {
		t.Errorf("filter = %q, want %q", filter.Expr, want)
	}
	eval := w.Steps[2].Config.(*steps.EvalConfig)
	if len(eval.Fields) != 1 || eval.Fields[0].Expr != `"merged-" + string(seq)` {
		t.Errorf("eval = %+v", eval.Fields)
	}
	out := p.Stage("out").Config.(interface{ OutputPath() string })
	if out.OutputPath() != "/etc/etld/out/merged.jsonl" {
		t.Errorf("out.path = %q", out.OutputPath())
	}
}

// TestInterpolationErrors checks where an interpolation problem is
// reported: at the "${" of the reference, or at the scalar when the
// reference is not on the scalar's first line.
func TestInterpolationErrors(t *testing.T) {
	const notSet = "environment variable NOPE is not set (use ${NOPE:-default} for a default)"
	tests := []struct {
		name, src string
		want      []string
	}{{
		name: "plain",
		src:  "path: ${NOPE}/x",
		want: []string{"5:11: " + notSet},
	}, {
		name: "second reference",
		src:  "path: ${DATA_DIR}/${NOPE}",
		want: []string{"5:23: " + notSet},
	}, {
		name: "double quoted",
		src:  `path: "a ${NOPE}"`,
		want: []string{"5:14: " + notSet},
	}, {
		name: "single quoted",
		src:  `path: 'ab ${NOPE}'`,
		want: []string{"5:15: " + notSet},
	}, {
		name: "in a flow mapping",
		// In a flow collection a reference must be quoted: { and } are
		// flow indicators.
		src:  `{type: file, path: "${NOPE}"}`,
		want: []string{"4:25: " + notSet},
	}, {
		name: "block literal: at its indicator",
		src:  "path: |\n      ${NOPE}",
		want: []string{"5:11: " + notSet},
	}, {
		name: "block folded: at its indicator",
		src:  "path: >-\n      a ${NOPE}",
		want: []string{"5:11: " + notSet},
	}, {
		name: "multi-line plain scalar: at the scalar",
		src:  "path: a\n      b ${NOPE}",
		want: []string{"5:11: " + notSet},
	}, {
		name: "multi-line quoted scalar: at the scalar",
		src:  "path: \"a\n      b ${NOPE}\"",
		want: []string{"5:11: " + notSet},
	}, {
		name: "escape before the reference: at the scalar",
		src:  `path: "a\tb ${NOPE}"`,
		want: []string{"5:11: " + notSet},
	}, {
		name: "quote escape before the reference: at the scalar",
		src:  `path: 'it''s ${NOPE}'`,
		want: []string{"5:11: " + notSet},
	}, {
		name: "columns count characters, not bytes",
		src:  `path: "données/${NOPE}"`,
		want: []string{"5:20: " + notSet},
	}, {
		name: "two errors in one file",
		src:  "path: ${NOPE}\n    start_at: ${X",
		want: []string{
			"5:11: " + notSet,
			`6:15: unterminated ${ in "${X" (write $$ for a literal $)`,
			// A failed reference stays as written, so an option that
			// checks its value also reports it, at the same position.
			`6:15: sources.in.start_at: must be "beginning" or "end", got "${X"`,
		},
	}, {
		name: "keys are not expanded",
		src:  "path: x\n    ${NOPE}: 1",
		want: []string{`6:5: sources.in: unknown option "${NOPE}" for file source (valid: type, path, follow, start_at, max_line_bytes, exclude, max_open_files, multiline)`},
	}, {
		name: "typed option",
		src:  "path: x\n    follow: ${NOPE}",
		want: []string{
			"6:13: " + notSet,
			`6:13: sources.in.follow: want a boolean (true or false), got "${NOPE}"`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "version: 1\nsources:\n  in:\n    type: file\n    " + tt.src +
				"\nsinks:\n  out: {type: stdout, inputs: [in]}\n"
			if tt.name == "in a flow mapping" {
				src = "version: 1\nsources:\n  in:\n    " + tt.src + "\nsinks:\n  out: {type: stdout, inputs: [in]}\n"
			}
			var want []string
			for _, w := range tt.want {
				want = append(want, "p.yaml:"+w)
			}
			equalLines(t, "diagnostics", parseDiags(t, "p.yaml", src, testOptions()), want)
		})
	}
}

// TestInterpolationUsesOptionsEnv checks that Options.Env is the only
// source of variables when set, and that os.LookupEnv is used when it is
// nil.
func TestInterpolationUsesOptionsEnv(t *testing.T) {
	t.Setenv("ETLD_CONFIG_TEST_DIR", "from-process")
	const src = "version: 1\nsources:\n  in: {type: file, path: '${ETLD_CONFIG_TEST_DIR}/x'}\nsinks:\n  out: {type: stdout, inputs: [in]}\n"

	got := parseDiags(t, "p.yaml", src, testOptions())
	equalLines(t, "with Options.Env", got, []string{
		"p.yaml:3:27: environment variable ETLD_CONFIG_TEST_DIR is not set (use ${ETLD_CONFIG_TEST_DIR:-default} for a default)",
	})

	opts := testOptions()
	opts.Env = nil
	p := parseOK(t, "/p/p.yaml", src, opts)
	if path := p.Stage("in").Config.(*sources.FileConfig).Path; path != "/p/from-process/x" {
		t.Errorf("with the process environment: path = %q", path)
	}
}
