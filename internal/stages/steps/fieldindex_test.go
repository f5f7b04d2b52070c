package steps

import (
	"slices"
	"testing"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// checkIndex fails t when the batch's field index gives, for any record,
// members other than a walk of its Raw finds, and returns how many
// records it answered for.
func checkIndex(t *testing.T, what string, b *stages.Batch) int {
	t.Helper()
	n := 0
	for i := range b.Records {
		ms, closeBrace, ok := b.Fields(i, nil)
		if !ok {
			continue
		}
		n++
		want, wantClose, err := jsonrec.Members(b.Records[i].Raw, nil)
		if err != nil {
			t.Fatalf("%s: record %d %s: %v", what, i, b.Records[i].Raw, err)
		}
		if !slices.Equal(ms, want) || closeBrace != wantClose {
			t.Fatalf("%s: record %d %s:\n index %+v close %d\n walk  %+v close %d", what, i, b.Records[i].Raw, ms, closeBrace, want, wantClose)
		}
	}
	return n
}

type stepCfg struct{ typ, cfg string }

// TestFieldIndexChains runs chains of steps over lines with escapes,
// duplicate keys, bad records and filtered ones, and checks after every
// step that the batch's field index agrees with the records' texts: the
// steps that index their output index every record they keep, and a
// step that rewrites records without indexing them leaves no entry.
func TestFieldIndexChains(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		steps []stepCfg
		// indexed[k] tells whether step k indexes every kept record.
		indexed []bool
		want    []string // the records at the end, when given
	}{
		{
			name: "access log",
			lines: []string{
				`192.0.2.1 - bob [31/Dec/2025:23:59:59 +0100] "POST /x HTTP/2.0" 500 - "https://r/" "é ü"`,
				nginxLine,
				`198.51.100.4 - - [01/Jan/2026:00:00:00 +0000] "GET /a\"b HTTP/1.1" 200 7 "-" "agent \\ \"x\""`,
				`not an access log line`,
				`192.0.2.1 - bob [99/Dec/2025:23:59:59 +0100] "POST /x HTTP/2.0" 500 - "-" "-"`,
			},
			steps: []stepCfg{
				{"parse_regex", `{preset: nginx_combined}`},
				{"parse_timestamp", `{field: time_local, format: '%d/%b/%Y:%H:%M:%S %z', target: ts}`},
				{"filter", `'status != "500"'`},
				{"rename", `{ts: time, remote_user: user}`},
			},
			indexed: []bool{true, true, true, true},
		},
		{
			name: "logfmt",
			lines: []string{
				`ts=2026-01-01T00:00:00.015Z level=info msg="a \"quoted\" one" ts=2026-01-01T00:00:01Z`,
				`ts=2026-01-01T00:00:00.010Z level=warn msg=x cached`,
				`ts=2026-01-01T01:00:00+01:00 lev\\el=error msg="tab\t"`,
				`ts=bad level=info`,
				`level=info msg=no-ts`,
			},
			steps: []stepCfg{
				{"parse_logfmt", `{}`},
				{"parse_timestamp", `{field: ts, format: rfc3339}`},
				{"parse_timestamp", `{field: ts, format: rfc3339, to: unix_ms, target: ms}`},
				{"set", `{pipeline: p}`},
				{"rename", `{level: severity}`},
			},
			// parse_logfmt leaves the record with a duplicate key
			// unindexed; set indexes nothing.
			indexed: []bool{false, true, true, false, true},
		},
		{
			name: "syslog",
			lines: []string{
				`<86>Jan  1 00:00:00 db1 postfix/smtpd[2231]: connect from unknown[192.0.2.77]`,
				`Jan  1 00:00:00 web2 CRON[4312]: (root) CMD "quoted\path"`,
				`<165>1 2026-01-01T00:00:00.003Z host app 12 ID47 [ex@1 a="1" b="x\"y"] message`,
				`garbage`,
			},
			steps: []stepCfg{
				{"parse_syslog", `{timezone: UTC}`},
				{"rename", `{timestamp: ts, hostname: "h\"ost"}`},
				{"drop", `[appname]`},
				{"rename", `{message: msg}`},
			},
			indexed: []bool{true, true, false, true},
		},
		{
			name: "json field",
			lines: []string{
				`{"a":1,"inner":"{\"b\":2,\"a\":3}","lf":"k=v a=9 q=\"x y\"","z":"\u00e9"}`,
				`{ "inner" : "{\"c\":\"x\\\\y\"}" , "k" : [1,2], "lf": "k=\\\"" }`,
				`{"inner":"not json"}`,
			},
			steps: []stepCfg{
				{"parse_json", `{}`},
				{"parse_json", `{field: inner}`},
				{"parse_logfmt", `{field: lf}`},
			},
			// parse_json without field indexes the members it validates;
			// parse_json with field and the parse_logfmt after it merge
			// their fields into the record.
			indexed: []bool{true, true, true},
		},
		{
			// W2: filter and set read parse_json's index instead of
			// walking; keys written with escapes, duplicates, a field
			// that set replaces and values of other kinds must give what
			// the walk gives.
			name: "parse filter set",
			lines: []string{
				`{"ts":"t1","level":"info","msg":"a"}`,
				`{"ts":"t2","level":"debug","msg":"b"}`,
				` {"lev\u0065l":"debug","level":"info"} `, // the first level counts
				`{"level":"info","level":"debug"}`,
				`{"level":"de\u0062ug","pipeline":"old","x":1,"pipeline":2}`,
				`{"level":7,"pip\u0065line":true}`,
				`{"msg":"no level"}`,
				`{"msg":"drop me","level":"info"}`,
				`{"level":"error","msg":"x"}`,
				`{"level":"info",}`,
				`{}`,
			},
			steps: []stepCfg{
				{"parse_json", `{}`},
				{"filter", `'level != "debug"'`},
				{"filter", `'level != "error" && msg != "drop me"'`}, // on the VM
				{"set", `{pipeline: w2, n: 1}`},
			},
			indexed: []bool{true, true, true, false},
			want: []string{
				`{"ts":"t1","level":"info","msg":"a","pipeline":"w2","n":1}`,
				`{"level":"info","level":"debug","pipeline":"w2","n":1}`,
				`{"level":7,"pip\u0065line":"w2","n":1}`,
				`{"msg":"no level","pipeline":"w2","n":1}`,
				`{"pipeline":"w2","n":1}`,
			},
		},
		{
			name:  "csv",
			lines: []string{`1,"a,b",x`, `2,"say ""hi""",y`, `3,only`},
			steps: []stepCfg{
				{"parse_csv", `{columns: [n, text, tag]}`},
				{"rename", `{tag: label}`},
			},
			indexed: []bool{true, true},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Without IndexFields the steps index nothing; the output is
			// the same either way.
			plain := readBatch(t, tc.lines...)
			for _, sc := range tc.steps {
				newStep(t, sc.typ, sc.cfg).Process(plain)
				if n := checkIndex(t, sc.typ, plain); n != 0 {
					t.Fatalf("%s indexed %d records without IndexFields", sc.typ, n)
				}
			}
			b := readBatch(t, tc.lines...)
			b.IndexFields = true
			for k, sc := range tc.steps {
				newStep(t, sc.typ, sc.cfg).Process(b)
				what := sc.typ + " " + sc.cfg
				n := checkIndex(t, what, b)
				if tc.indexed[k] && n != len(b.Records) {
					t.Errorf("%s: %d of %d records indexed", what, n, len(b.Records))
				}
				if !tc.indexed[k] && n == len(b.Records) {
					t.Errorf("%s: every record indexed, want some not", what)
				}
			}
			if len(b.Records) == 0 {
				t.Fatal("no record left: the chain checks nothing")
			}
			if got, want := rawLines(b.Records), rawLines(plain.Records); !slices.Equal(got, want) {
				t.Fatalf("with the index:\n%q\nwithout:\n%q", got, want)
			}
			if tc.want != nil && !slices.Equal(rawLines(b.Records), tc.want) {
				t.Fatalf("got\n%q\nwant\n%q", rawLines(b.Records), tc.want)
			}
		})
	}
}

// TestFieldIndexRewriteInvalidates: a step that rewrites Raw without
// indexing it (set) must leave no usable entry, and the steps after it
// must then walk the record and get it right.
func TestFieldIndexRewriteInvalidates(t *testing.T) {
	b := readBatch(t, `ts=2026-01-01T00:00:00Z a=1`, `ts=2026-01-01T00:00:02Z a=2`)
	b.IndexFields = true
	newStep(t, "parse_logfmt", `{}`).Process(b)
	if checkIndex(t, "parse_logfmt", b) != 2 {
		t.Fatal("parse_logfmt did not index its records")
	}
	// set puts a field first-come: the old index would point ts at the
	// wrong bytes.
	newStep(t, "set", `{a: "a much longer value that moves ts"}`).Process(b)
	if n := checkIndex(t, "set", b); n != 0 {
		t.Fatalf("set left %d index entries for the records it rewrote", n)
	}
	newStep(t, "parse_timestamp", `{field: ts, to: unix, target: t}`).Process(b)
	checkIndex(t, "parse_timestamp", b)
	for i, want := range []string{
		`{"ts":"2026-01-01T00:00:00Z","a":"a much longer value that moves ts","t":1767225600}`,
		`{"ts":"2026-01-01T00:00:02Z","a":"a much longer value that moves ts","t":1767225602}`,
	} {
		if got := string(b.Records[i].Raw); got != want {
			t.Errorf("record %d = %s, want %s", i, got, want)
		}
	}
}

// TestParseTimestampKeepsNormalised: a time already written as the step
// would write it keeps its record's text (no copy), indexed.
func TestParseTimestampKeepsNormalised(t *testing.T) {
	b := readBatch(t, `ts=2026-01-01T00:00:00.015Z a=1`, `ts=2026-01-01T00:00:00.010Z a=2`)
	b.IndexFields = true
	newStep(t, "parse_logfmt", `{}`).Process(b)
	before := []*byte{&b.Records[0].Raw[0], &b.Records[1].Raw[0]}
	newStep(t, "parse_timestamp", `{field: ts}`).Process(b)
	if checkIndex(t, "parse_timestamp", b) != 2 {
		t.Fatal("parse_timestamp did not index its records")
	}
	if &b.Records[0].Raw[0] != before[0] {
		t.Error("an already normalised time was copied")
	}
	if &b.Records[1].Raw[0] == before[1] {
		t.Error(".010Z was not rewritten")
	}
	if got, want := string(b.Records[1].Raw), `{"ts":"2026-01-01T00:00:00.01Z","a":"2"}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
