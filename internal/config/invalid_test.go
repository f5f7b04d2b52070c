package config

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// invalidWant is, for every file of testdata/invalid, every diagnostic
// Load must report, in order, as LINE:COL: message (the FILE: prefix is
// testdata/invalid/NAME). $DIR stands for the absolute path of
// testdata/invalid. A file with several problems checks that all of them
// are reported in one pass.
var invalidWant = map[string][]string{
	"bad_byte_size.yaml": {
		`5:21: sources.in.max_line_bytes: invalid size "1XB" (want bytes or a number with KiB, MiB, GiB, KB, MB or GB)`,
		`11:18: sinks.out.buffer_size: invalid size: want a number of bytes or a string like "1MiB"`,
		`12:24: sinks.out.rotate.max_size: invalid size "-5MiB" (want bytes or a number with KiB, MiB, GiB, KB, MB or GB)`,
	},
	"bad_duration.yaml": {
		`2:22: checkpoint_interval: want a duration such as 250ms, 2s or 1m30s, got "soon"`,
		`7:15: sources.gen.interval: want a duration such as 250ms, 2s or 1m30s, got "5"`,
		`13:23: sinks.out.rotate.max_age: want a duration such as 250ms, 2s or 1m30s, got "1 day"`,
	},
	"bad_var_syntax.yaml": {
		`5:16: invalid variable reference ${1DIR} (want ${NAME} or ${NAME:-default})`,
		`10:15: unterminated ${ in "out/${NAME" (write $$ for a literal $)`,
	},
	"cycle.yaml": {
		`6:5: workers.a: cycle: worker "a" -> worker "c" -> worker "b" -> worker "a"`,
		`12:5: workers.x: cycle: worker "x" -> worker "y" -> worker "x"`,
	},
	"routes.yaml": {
		`10:7: workers.w.routes: "_unmatched" is reserved for the records that match no route`,
		`11:7: workers.w.routes: invalid route name "bad name" (use letters, digits, _ and -, starting with a letter or _)`,
		`12:14: workers.w.routes.count: expression returns int, want bool`,
		`13:15: workers.w.routes.broken: unexpected token EOF (1:8)`,
		`17:30: sinks.a.inputs: "w.errrors": worker "w" has no route "errrors" (did you mean "errors"?)`,
		`18:44: sinks.b.inputs: "in.x": "in" is a source; only a worker has routes`,
		`19:30: sinks.c.inputs: "plain.errors": worker "plain" has no routes (read "plain" for every record)`,
		`20:40: sinks.d.inputs: "w._unmatched" reads "w" a second time; a stage reads one route of a worker, or the worker's every record`,
		`21:30: sinks.e.inputs: "w." names no route (write "w" for every record)`,
	},
	"dead_letter_not_sink.yaml": {
		`2:14: dead_letter: "in" is not a sink (valid: out)`,
	},
	"dead_letter_unknown.yaml": {
		`2:14: dead_letter: "rejcts" is not a sink (did you mean "rejects"?)`,
		`7:12: sinks.rejects: missing required key "inputs" (only the dead-letter sink has none)`,
	},
	"dead_letter_with_inputs.yaml": {
		`10:14: sinks.rejects.inputs: the dead-letter sink receives bad records only and must have no inputs`,
	},
	"duplicate_ids.yaml": {
		`6:3: workers.orders: duplicate id "orders" (already a source at line 3; ids are unique across sources, workers and sinks)`,
		`11:3: sinks.enrich: duplicate id "enrich" (already a worker at line 8; ids are unique across sources, workers and sinks)`,
	},
	"duplicate_keys.yaml": {
		`6:5: sources.in: duplicate key "path" (first defined at line 5)`,
		`9:1: duplicate key "sinks" (first defined at line 7)`,
	},
	"empty.yaml": {
		`1:1: empty pipeline file (want at least version, sources and sinks)`,
	},
	"empty_sections.yaml": {
		`2:9: a pipeline needs at least one source (key "sources")`,
		`3:8: a pipeline needs at least one sink (key "sinks")`,
	},
	"eval_compile.yaml": {
		`11:18: workers.w.steps[1].eval.cents: unexpected token EOF (1:12)`,
		`12:16: workers.w.steps[1].eval.bad: unexpected token Operator("*") (1:4)`,
		`13:15: workers.w.steps[2].eval: eval: want at least one field`,
	},
	"file_exclude.yaml": {
		`6:32: sources.logs.exclude[1]: invalid glob "logs/[.log": syntax error in pattern`,
		`6:46: sources.logs.exclude[2]: want a glob, got an empty string`,
		`10:14: sources.more.exclude: want a list, got "more/*.gz"`,
		`11:15: sources.more.start_at: must be "beginning" or "end", got "middle"`,
	},
	"filter_compile.yaml": {
		`9:17: workers.w.steps[1].filter: filter: unexpected token Operator("=") (1:9)`,
		`10:17: workers.w.steps[2].filter: filter: empty expression`,
		`11:17: workers.w.steps[3].filter: filter: want an expression string, e.g. filter: 'level != "debug"'`,
	},
	"multiline_options.yaml": {
		"6:24: sources.app.multiline.start: invalid regular expression: error parsing regexp: missing closing ): `^(\\d`",
		`6:43: sources.app.multiline.max_lines: must be at least 1, got -1`,
		`6:56: sources.app.multiline.timeout: must be positive, got -1s`,
		`10:41: sources.both.multiline.continue: want start or continue, not both`,
		`14:7: sources.in.multiline: want start or continue (a regular expression)`,
	},
	"parse_syslog_options.yaml": {
		`8:34: workers.w.steps[0].parse_syslog.timezone: parse_syslog: unknown time zone "Moon/Tranquility" (want an IANA name such as Europe/Berlin, or UTC)`,
		`9:24: workers.w.steps[1].parse_syslog: unknown option "tz" (valid: timezone, field)`,
	},
	"parse_timestamp_options.yaml": {
		`9:45: workers.w.steps[1].parse_timestamp.format: parse_timestamp: unknown directive %k at byte 9`,
		`11:11: workers.w.steps[2].parse_timestamp.field: parse_timestamp: field is required`,
		`11:19: workers.w.steps[2].parse_timestamp.format: parse_timestamp: %Z at byte 6: zone abbreviations are ambiguous; use %z, or the timezone option for times without an offset`,
		`12:21: workers.w.steps[2].parse_timestamp.timezone: parse_timestamp: unknown time zone "CEST" (want an IANA name such as Europe/Berlin, or UTC)`,
		`13:15: workers.w.steps[2].parse_timestamp.to: parse_timestamp: "iso8601" is not one of rfc3339, unix, unix_ms`,
	},
	"filter_not_bool.yaml": {
		`9:17: workers.w.steps[1].filter: filter: expression returns int, want bool`,
		`10:17: workers.w.steps[2].filter: filter: expression returns string, want bool`,
	},
	"input_is_sink.yaml": {
		`6:18: workers.w.inputs: "out" is a sink; inputs name sources or workers`,
		`8:14: workers.loop.inputs: a stage cannot read its own output`,
		`10:45: sinks.out.inputs: "in" is listed twice`,
	},
	"invalid_ids.yaml": {
		`3:3: sources.1st: invalid id "1st" (use letters, digits, _ and -, starting with a letter or _)`,
		`4:3: sources.in.put: invalid id "in.put" (use letters, digits, _ and -, starting with a letter or _)`,
	},
	"line_breaks_in_names.yaml": {
		`4:3: sources.a\nb: invalid id "a\nb" (use letters, digits, _ and -, starting with a letter or _)`,
		`8:44: workers.w.steps[1].eval.x\ny: unexpected token EOF (1:3)`,
		`8:57: workers.w.steps[2].set: set: line 8: empty field name`,
		`10:36: sinks.out: unknown option "k\nz" for stdout sink (valid: type, inputs, merge, encoding, template, columns, header)`,
	},
	"line_breaks_in_paths.yaml": {
		`8:6: sinks.b: writes $DIR/x\ny, which sink "a" also writes (each output file has exactly one writer)`,
	},
	"merge_inputs.yaml": {
		`14:5: sinks.timeline.merge.late: dead_letter needs a top-level dead_letter sink`,
		"15:14: warning: sinks.timeline.inputs: worker \"parse\" is not `ordered: true`, so each feed may reach the merge out of order",
		`15:21: sinks.timeline.inputs: "raw" does not parse records: merge.order_by reads a field, so every input of a merging sink must be a worker with a parsing step (parse_csv, parse_json, parse_logfmt, parse_regex, parse_syslog)`,
		`15:26: sinks.timeline.inputs: "db" does not parse records: merge.order_by reads a field, so every input of a merging sink must be a worker with a parsing step (parse_csv, parse_json, parse_logfmt, parse_regex, parse_syslog)`,
	},
	"merge_key.yaml": {
		`2:1: unknown top-level key "defaults" (valid: version, sources, workers, sinks, dead_letter, checkpoint_interval)`,
		`6:5: sources.in: YAML merge keys (<<) are not supported`,
		`6:5: sources.in: missing required key "type" (valid: file, generate, nats, stdin)`,
	},
	"merge_options.yaml": {
		`15:7: sinks.a.merge: missing required key "order_by" (the field to merge by)`,
		`15:21: sinks.a.merge.max_lateness: must not be negative`,
		`16:21: sinks.a.merge.idle_timeout: must be positive`,
		`17:13: sinks.a.merge.late: unknown policy "dorp" (did you mean "drop"?)`,
		`19:5: sinks.b: source "app" also feeds the merging sink "a"; a source can feed one ordered merge only`,
		`23:7: sinks.b.merge: unknown option "order" (valid: order_by, max_lateness, idle_timeout, late)`,
		`25:5: sinks.c: source "app" also feeds the merging sink "a"; a source can feed one ordered merge only`,
		`28:12: sinks.c.merge: want a mapping of options, got "by-ts"`,
	},
	"missing_inputs.yaml": {
		`6:5: workers.w: missing required key "inputs" (a worker reads at least one source or worker)`,
		`8:13: workers.w2.inputs: must name at least one source or worker`,
		`11:5: sinks.out: missing required key "inputs" (only the dead-letter sink has none)`,
		`12:33: sinks.empty.inputs: must name at least one source or worker`,
		`13:35: sinks.nothing.inputs: want a list of source or worker ids, got nothing (null)`,
	},
	"missing_required_path.yaml": {
		`4:5: sources.in.path: is required`,
		`8:5: sinks.out.path: required`,
	},
	"missing_type.yaml": {
		`4:5: sources.in: missing required key "type" (valid: file, generate, nats, stdin)`,
		`7:5: sinks.out: missing required key "type" (valid: file, nats, stdout)`,
	},
	"multi_everything.yaml": {
		`2:10: version: unsupported schema version 3 (this etld reads version: 1)`,
		`3:1: unknown top-level key "sorces" (did you mean "sources"?)`,
		`7:11: sources.orders.type: unknown source type "fiel" (did you mean "file"?)`,
		`10:5: warning: sources.payments: nothing reads this source (name it in a worker's or sink's inputs)`,
		`11:11: environment variable PAYMENTS_DIR is not set (use ${PAYMENTS_DIR:-default} for a default)`,
		`12:13: sources.payments.follow: want a boolean (true or false), got "nope"`,
		`15:22: workers.enrich.inputs: unknown id "paymnts" (did you mean "payments"?)`,
		`16:18: workers.enrich.concurrency: must be at least 1 (leave it out for one goroutine per CPU)`,
		`19:17: workers.enrich.steps[1].filter: filter: unexpected token Operator("=") (1:7)`,
		`20:9: workers.enrich.steps[2]: unknown step type "sett" (did you mean "set"?)`,
		`26:12: sinks.merged.fsync: invalid value "alway": want checkpoint, batch or never`,
		`27:3: sinks.orders: duplicate id "orders" (already a source at line 6; ids are unique across sources, workers and sinks)`,
	},
	"multi_graph.yaml": {
		`9:5: workers.p: cycle: worker "p" -> worker "q" -> worker "p"`,
		`13:14: workers.r.inputs: "s1" is a sink; inputs name sources or workers`,
		`15:14: workers.t.inputs: unknown id "nope" (valid: a, p, q, r, t)`,
		`18:7: sinks.s2: missing required key "inputs" (only the dead-letter sink has none)`,
		`19:32: sinks.out.inputs: the dead-letter sink receives bad records only and must have no inputs`,
	},
	"multi_stage_sections.yaml": {
		`6:9: sources.also: want a mapping, got a list`,
		`8:6: workers.w: want a mapping, got nothing (null)`,
		`9:6: workers.v: want a mapping, got "parse_json"`,
		`15:5: sinks.out: missing required key "type" (valid: file, nats, stdout)`,
		"18:14: warning: sinks.merged.inputs: worker \"u\" is not `ordered: true`, so each feed may reach the merge out of order",
		`20:12: sinks.merged.merge: missing required key "order_by" (the field to merge by)`,
		`21:39: sinks.bad: unknown option "extra" for stdout sink (valid: type, inputs, merge, encoding, template, columns, header)`,
	},
	"multi_types.yaml": {
		`2:10: version: want the integer 1, got "1.0"`,
		`3:22: checkpoint_interval: want a duration such as 250ms, 2s or 1m30s, got "10"`,
		`7:12: sources.gen.count: want an integer, got "ten"`,
		`8:15: sources.gen.interval: want a duration such as 250ms, 2s or 1m30s, got "fast"`,
		`9:14: sources.gen.message: want a string, got a list`,
		`13:18: workers.w.concurrency: want an integer, got "lots"`,
		`14:14: workers.w.ordered: want a boolean (true or false), got "sometimes"`,
		"15:12: workers.w.steps: want a list of steps such as `- parse_json: {}`, got \"parse_json\"",
		`21:18: sinks.out.buffer_size: invalid size "huge" (want bytes or a number with KiB, MiB, GiB, KB, MB or GB)`,
		`22:13: sinks.out.rotate: want a mapping of options, got "every day"`,
	},
	"no_stages.yaml": {
		`1:1: a pipeline needs at least one source (key "sources")`,
		`1:1: a pipeline needs at least one sink (key "sinks")`,
	},
	"not_mapping.yaml": {
		`1:1: a pipeline file is a mapping with version, sources, workers and sinks; got a list`,
	},
	"out_of_range.yaml": {
		`2:22: checkpoint_interval: must be positive`,
		`6:12: sources.gen.count: must be >= 0 (0 generates forever), got -1`,
		`7:15: sources.gen.interval: must be >= 0, got -2s`,
		`11:18: workers.w.concurrency: must be at least 1 (leave it out for one goroutine per CPU)`,
		`14:18: workers.w0.concurrency: must be at least 1 (leave it out for one goroutine per CPU)`,
		`20:18: sinks.out.buffer_size: 0 out of range: want 1 byte to 65536KiB`,
		`21:12: sinks.out.fsync: invalid value "sometimes": want checkpoint, batch or never`,
		`22:36: sinks.out.rotate.keep: must not be negative`,
	},
	"parse_steps.yaml": {
		"8:32: workers.w.steps[0].parse_regex.pattern: error parsing regexp: missing closing ): `(?P<a>x`",
		`9:32: workers.w.steps[1].parse_regex.pattern: want at least one named group (?P<name>...): each one is a field`,
		`10:31: workers.w.steps[2].parse_regex.preset: unknown preset "nginx" (valid: apache_combined, apache_common, nginx_combined)`,
		`11:52: workers.w.steps[3].parse_regex.preset: want pattern or preset, not both`,
		`12:22: workers.w.steps[4].parse_regex: parse_regex: want pattern or preset`,
		`13:20: workers.w.steps[5].parse_csv.columns: want at least one column name`,
		`13:32: workers.w.steps[5].parse_csv.delimiter: invalid delimiter ";;": want one ASCII character other than '"' and line breaks`,
		`14:30: workers.w.steps[6].parse_csv.columns: column "a" given twice`,
		`14:30: workers.w.steps[6].parse_csv.columns: column 3 has an empty name`,
		`15:24: workers.w.steps[7].parse_logfmt: unknown option "fields" (did you mean "field"?)`,
		`16:29: workers.w.steps[8].parse_json.field: want a string, got a list`,
		`17:21: workers.w.steps[9].rename.a: empty new name`,
		`18:17: workers.w.steps[10].rename: rename: want at least one old: new pair`,
	},
	"same_sink_path.yaml": {
		`6:6: sinks.b: writes $DIR/out/x.jsonl, which sink "a" also writes (each output file has exactly one writer)`,
	},
	"sink_encoding.yaml": {
		`12:15: sinks.text.template: unclosed {{ at byte 8 of the template: want {{field}}`,
		`13:13: sinks.text.header: only applies to encoding: csv (encoding is text)`,
		`15:5: sinks.csv.columns: required with encoding: csv (the fields to write, in order)`,
		`22:14: sinks.json.columns: only applies to encoding: logfmt or csv (encoding is json)`,
		`26:15: sinks.xml.encoding: invalid value "xml": want json, text, logfmt or csv`,
	},
	"steps_shape.yaml": {
		"7:12: workers.w.steps: want a list of steps such as `- parse_json: {}`, got a mapping",
		`11:9: workers.v.steps[0]: a step is a mapping with exactly one key, its type (valid: drop, eval, filter, keep, parse_csv, parse_json, parse_logfmt, parse_regex, parse_syslog, parse_timestamp, rename, set)`,
		`12:22: workers.v.steps[1].parse_json: unknown option "strict" (valid: field)`,
		`13:15: workers.v.steps[2].drop: drop: want a list of field names, e.g. drop: [user, msg]`,
		`14:15: workers.v.steps[3].keep: keep: want a list of field names, e.g. keep: [user, msg]`,
		`15:9: warning: workers.v.steps[4].keep: records reaching this step are not parsed yet, so it will reject them; add a parsing step (parse_csv, parse_json, parse_logfmt, parse_regex, parse_syslog) before it`,
		`15:15: workers.v.steps[4].keep: keep: empty field name`,
	},
	"trailing_document_syntax.yaml": {
		`8:1: invalid YAML: did not find expected key`,
	},
	"two_documents.yaml": {
		`6:1: a pipeline file holds one YAML document; found a second one`,
	},
	"unknown_input.yaml": {
		`3:11: warning: sources.orders: nothing reads this source (name it in a worker's or sink's inputs)`,
		`6:14: workers.enrich.inputs: unknown id "ordres" (did you mean "orders"?)`,
		`10:22: sinks.out.inputs: unknown id "enrichh" (did you mean "enrich"?)`,
		`10:31: sinks.out.inputs: unknown id "zzzzzzzz" (valid: orders, enrich)`,
	},
	"unknown_sink_option.yaml": {
		`9:5: sinks.out: unknown option "fsyn" for file sink (did you mean "fsync"?)`,
		`11:7: sinks.out.rotate: unknown option "max_sise" (did you mean "max_size"?)`,
		`15:5: sinks.screen: unknown option "path" for stdout sink (valid: type, inputs, merge, encoding, template, columns, header)`,
	},
	"unknown_sink_type.yaml": {
		`5:15: sinks.out.type: unknown sink type "stdot" (did you mean "stdout"?)`,
	},
	"unknown_source_option.yaml": {
		`6:5: sources.orders: unknown option "folow" for file source (did you mean "follow"?)`,
	},
	"unknown_source_type.yaml": {
		`4:11: sources.in.type: unknown source type "fiel" (did you mean "file"?)`,
		`7:11: sources.other.type: unknown source type "kafka" (valid: file, generate, nats, stdin)`,
	},
	"unknown_step_type.yaml": {
		`8:9: workers.w.steps[0]: unknown step type "parse_jsn" (did you mean "parse_json"?)`,
		`9:9: workers.w.steps[1]: unknown step type "filtre" (did you mean "filter"?)`,
		`10:9: workers.w.steps[2]: a step is a mapping with exactly one key, its type (valid: drop, eval, filter, keep, parse_csv, parse_json, parse_logfmt, parse_regex, parse_syslog, parse_timestamp, rename, set)`,
		`11:9: workers.w.steps[3]: a step is a mapping with exactly one key, its type (valid: drop, eval, filter, keep, parse_csv, parse_json, parse_logfmt, parse_regex, parse_syslog, parse_timestamp, rename, set)`,
	},
	"unknown_top_key.yaml": {
		`2:1: unknown top-level key "checkpoint_intervall" (did you mean "checkpoint_interval"?)`,
		`7:1: unknown top-level key "deadletter" (did you mean "dead_letter"?)`,
	},
	"unknown_worker_option.yaml": {
		`7:5: workers.w: unknown option "concurency" for a worker (did you mean "concurrency"?)`,
	},
	"unset_var.yaml": {
		`5:11: environment variable IN_DIR is not set (use ${IN_DIR:-default} for a default)`,
		`10:16: environment variable OUT_FILE is not set (use ${OUT_FILE:-default} for a default)`,
		`14:23: environment variable MISSING is not set (use ${MISSING:-default} for a default)`,
	},
	"version_missing.yaml": {
		`2:1: missing required key "version" (this etld reads version: 1)`,
	},
	"version_not_int.yaml": {
		`1:10: version: want the integer 1, got "1"`,
	},
	"version_unsupported.yaml": {
		`1:10: version: unsupported schema version 2 (this etld reads version: 1)`,
	},
	"wrong_section_type.yaml": {
		`1:1: a pipeline needs at least one source (key "sources")`,
		`2:10: sources: want a mapping of id -> source, got a list`,
		`3:10: workers: want a mapping of id -> worker, got "plenty"`,
		`5:3: sinks.out: missing required key "inputs" (only the dead-letter sink has none)`,
		`5:8: sinks.out: want a mapping, got "stdout"`,
	},
	"wrong_type_bool.yaml": {
		`6:13: sources.in.follow: want a boolean (true or false), got "maybe"`,
		`10:14: workers.w.ordered: want a boolean (true or false), got "1"`,
		`17:36: sinks.out.rotate.gzip: want a boolean (true or false), got "please"`,
	},
	"wrong_type_int.yaml": {
		`5:12: sources.gen.count: want an integer, got "many"`,
		`15:36: sinks.out.rotate.keep: want an integer, got "three"`,
	},
	"wrong_type_string.yaml": {
		`5:11: sources.in.path: want a string, got a list`,
		`6:15: sources.in.start_at: want a string, got a mapping`,
	},
	"yaml_syntax.yaml": {
		`7:1: invalid YAML: did not find expected ',' or ']'`,
	},
	"yaml_syntax_indent.yaml": {
		// yaml.v3 names the block mapping in which parsing failed (the
		// one starting on line 3), not the misindented line.
		`3:1: invalid YAML: did not find expected key`,
	},
	"yaml_syntax_scanner.yaml": {
		`5:1: invalid YAML: mapping values are not allowed in this context`,
	},
}

func TestInvalidPipelines(t *testing.T) {
	dir := filepath.Join("testdata", "invalid")
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	for _, f := range files {
		onDisk = append(onDisk, filepath.Base(f))
	}
	var inTable []string
	for name := range invalidWant {
		inTable = append(inTable, name)
	}
	sort.Strings(inTable)
	equalLines(t, "files in testdata/invalid vs entries of invalidWant", onDisk, inTable)
	if len(onDisk) < 30 {
		t.Errorf("only %d invalid files; want at least 30", len(onDisk))
	}

	for _, name := range inTable {
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			file := filepath.Join(dir, name)
			var want []string
			for _, w := range invalidWant[name] {
				want = append(want, file+":"+strings.ReplaceAll(w, "$DIR", abs))
			}
			pipes, ds := Load(file, testOptions())
			equalLines(t, "diagnostics", diagLines(ds), want)
			if !ds.HasErrors() {
				t.Fatalf("HasErrors() = false")
			}
			if pipes != nil {
				t.Errorf("Load returned %d pipelines along with errors", len(pipes))
			}
			// Err holds the errors only, one per line, in the same order.
			var errLines []string
			for _, d := range ds {
				if d.Severity == Error {
					errLines = append(errLines, d.String())
				}
				if d.File != file {
					t.Errorf("diagnostic %q: File = %q, want %q", d, d.File, file)
				}
			}
			err := ds.Err()
			le, ok := err.(*LoadError)
			if !ok {
				t.Fatalf("Err() = %T, want *LoadError", err)
			}
			equalLines(t, "Err()", strings.Split(le.Error(), "\n"), errLines)
			if len(le.Diagnostics) != len(ds.Errors()) {
				t.Errorf("LoadError has %d diagnostics, want %d", len(le.Diagnostics), len(ds.Errors()))
			}

			// Parse on the same bytes reports the same problems: Load
			// adds only the output-path check, which spans pipelines.
			if name == "same_sink_path.yaml" || name == "line_breaks_in_paths.yaml" {
				return
			}
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			p, pds := Parse(file, src, testOptions())
			if p != nil {
				t.Errorf("Parse returned a pipeline along with errors")
			}
			equalLines(t, "Parse diagnostics", diagLines(pds), diagLines(ds))
		})
	}
}
