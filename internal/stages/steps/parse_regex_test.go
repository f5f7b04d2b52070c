package steps

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

const nginxLine = `203.0.113.9 - alice [01/May/2024:10:00:01 +0000] "GET /api/users?id=7 HTTP/1.1" 200 512 "https://example.com/" "Mozilla/5.0 (X11; Linux x86_64)"`

func TestParseRegexPattern(t *testing.T) {
	runParseCases(t, "parse_regex", `{pattern: '^(?P<level>[A-Z]+) (\d+) (?P<msg>.*?)(?: \[(?P<tag>\w+)\])?$'}`, []parseCase{
		{in: `INFO 12 started`, want: `{"level":"INFO","msg":"started"}`},
		{in: `WARN 3 disk "full" [ops]`, want: `{"level":"WARN","msg":"disk \"full\"","tag":"ops"}`},
		{in: "ERROR 1 bad \xff", want: `{"level":"ERROR","msg":"bad \ufffd"}`},
		{in: `info 12 lower case`, err: `parse_regex: no match for the pattern`},
		{in: ``, err: `parse_regex: no match for the pattern`},
	})
	// RE2 allows a name twice: the last group that took part wins.
	runParseCases(t, "parse_regex", `{pattern: '^(?P<a>\d+)-(?:(?P<a>x)|(?P<b>y))$'}`, []parseCase{
		{in: `1-x`, want: `{"a":"x"}`},
		{in: `1-y`, want: `{"a":"1","b":"y"}`},
	})
}

func TestParseRegexPresets(t *testing.T) {
	runParseCases(t, "parse_regex", "{preset: nginx_combined}", []parseCase{
		{in: nginxLine, want: `{"remote_addr":"203.0.113.9","remote_user":"alice","time_local":"01/May/2024:10:00:01 +0000",` +
			`"request":"GET /api/users?id=7 HTTP/1.1","method":"GET","path":"/api/users?id=7","protocol":"HTTP/1.1",` +
			`"status":"200","body_bytes_sent":"512","http_referer":"https://example.com/","http_user_agent":"Mozilla/5.0 (X11; Linux x86_64)"}`},
		{in: `::1 - - [01/May/2024:10:00:02 +0000] "-" 400 0 "-" "-"`, want: `{"remote_addr":"::1","remote_user":"-",` +
			`"time_local":"01/May/2024:10:00:02 +0000","request":"-","status":"400","body_bytes_sent":"0","http_referer":"-","http_user_agent":"-"}`},
		{in: `10.0.0.1 - - [x] "GET  /two-spaces HTTP/1.1" 200 1 "" ""`, want: `{"remote_addr":"10.0.0.1","remote_user":"-","time_local":"x",` +
			`"request":"GET  /two-spaces HTTP/1.1","status":"200","body_bytes_sent":"1","http_referer":"","http_user_agent":""}`},
		{in: ``, err: `parse_regex: want remote_addr at byte 0`},
		{in: `10.0.0.1`, err: `parse_regex: want ' ' after remote_addr at byte 8`},
		{in: `10.0.0.1 x alice [t] "r" 200 1 "-" "-"`, err: `parse_regex: want "- " at byte 9`},
		{in: `10.0.0.1 - alice t] "r" 200 1 "-" "-"`, err: `parse_regex: want "[" at byte 17`},
		{in: `10.0.0.1 - alice [t "r" 200 1 "-" "-"`, err: `parse_regex: want "] \"" at byte 37`},
		{in: `10.0.0.1 - alice [t] "GET / HTTP/1.1 200 1`, err: `parse_regex: want '"' to end the request at byte 42`},
		{in: `10.0.0.1 - alice [t] "r" 20 1 "-" "-"`, err: `parse_regex: want a 3-digit status and ' ' at byte 25`},
		{in: `10.0.0.1 - alice [t] "r" 200 x "-" "-"`, err: `parse_regex: want body_bytes_sent (digits or '-') at byte 29`},
		{in: `10.0.0.1 - alice [t] "r" 200 1 "-"`, err: `parse_regex: want " \"" at byte 34`},
		{in: `10.0.0.1 - alice [t] "r" 200 1 "-" "-" "xff"`, err: `parse_regex: want the end of the line at byte 38`},
	})
	runParseCases(t, "parse_regex", "{preset: apache_common}", []parseCase{
		{in: `127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326`,
			want: `{"remote_addr":"127.0.0.1","ident":"-","remote_user":"frank","time_local":"10/Oct/2000:13:55:36 -0700",` +
				`"request":"GET /apache_pb.gif HTTP/1.0","method":"GET","path":"/apache_pb.gif","protocol":"HTTP/1.0","status":"200","body_bytes_sent":"2326"}`},
		{in: `h id u [t] "r" 304 -`, want: `{"remote_addr":"h","ident":"id","remote_user":"u","time_local":"t","request":"r","status":"304","body_bytes_sent":"-"}`},
		{in: `h id u [t] "r" 304 - "ref" "ua"`, err: `parse_regex: want the end of the line at byte 20`},
	})
	runParseCases(t, "parse_regex", "{preset: apache_combined}", []parseCase{
		{in: `h id u [t] "POST /x HTTP/2.0" 201 - "ref" "ua"`, want: `{"remote_addr":"h","ident":"id","remote_user":"u","time_local":"t",` +
			`"request":"POST /x HTTP/2.0","method":"POST","path":"/x","protocol":"HTTP/2.0","status":"201","body_bytes_sent":"-","http_referer":"ref","http_user_agent":"ua"}`},
	})
}

func TestParseRegexField(t *testing.T) {
	b := parsed(t, `{"host":"web1","line":"`+strings.ReplaceAll(nginxLine, `"`, `\"`)+`","status":"x"}`)
	newStep(t, "parse_regex", "{preset: nginx_combined, field: line}").Process(b)
	if len(b.Records) != 1 {
		t.Fatalf("rejects: %q", rejectErrors(b.Rejects))
	}
	m := decodeRecord(t, b.Records[0].Raw)
	if m["host"] != "web1" || m["status"] != "200" || m["method"] != "GET" || m["line"] == nil {
		t.Errorf("merged record %s", b.Records[0].Raw)
	}
	b = parsed(t, `{"line":"nope"}`)
	newStep(t, "parse_regex", "{preset: nginx_combined, field: line}").Process(b)
	if got, want := rejectErrors(b.Rejects), []string{`parse_regex: want ' ' after remote_addr at byte 4 of field "line"`}; !reflect.DeepEqual(got, want) {
		t.Errorf("rejects %q, want %q", got, want)
	}
}

func TestParseRegexConfig(t *testing.T) {
	for src, want := range map[string]string{
		"{}": "parse_regex: want pattern or preset",
		"{pattern: '(?P<a>x)', preset: apache_common}": "preset: want pattern or preset, not both",
		"{preset: nginx}":      "preset: unknown preset \"nginx\" (valid: apache_combined, apache_common, nginx_combined)",
		"{pattern: '(?P<a>x'}": "pattern: error parsing regexp: missing closing ): `(?P<a>x`",
		"{pattern: '(a)(b)'}":  "pattern: want at least one named group (?P<name>...): each one is a field",
	} {
		_, err := loadConfig(t, "parse_regex", src)
		if err == nil || err.Error() != want {
			t.Errorf("%s: error %v, want %q", src, err, want)
		}
	}
}

// presetLines are access-log lines, good and broken, that the hand-written
// matchers must treat exactly as their regexps do.
var presetLines = []string{
	nginxLine,
	`::1 - - [01/May/2024:10:00:02 +0000] "-" 400 0 "-" "-"`,
	`h id u [t] "r" 304 -`,
	`h id u [t] "r" 304 - "ref" "ua"`,
	`h - u [t] "a b c" 304 - "ref" "ua"`,
	`h - u [t] "a b c d" 304 12 "ref" "ua"`,
	`h - u [t] "a b " 304 12 "ref" "ua"`,
	`h - u [t] " b c" 304 12 "ref" "ua"`,
	`h - u [t] "a\tb c" 304 12 "ref" "ua"`,
	`h - u [] "" 999 -`,
	`h - u [t]] "x" 200 1 "" ""`,
	`h - u [t] "x" 2000 1 "" ""`,
	`h - u [t] "x" 200 -1 "" ""`,
	`h - u [t] "x" 200 1 "" "" `,
	"h - u [\xff] \"\xe2\x80\" 200 1 \"\" \"\xc3\"",
	"h - u [t\nu] \"a\nb c\" 200 1 \"\" \"\"",
	`h  - u [t] "x" 200 1 "" ""`,
	` - u [t] "x" 200 1 "" ""`,
	`h - u [t] "x" 200 1`,
}

func checkPresetAgrees(t *testing.T, name, line string) {
	p := presets[name]
	re := regexp.MustCompile(p.pattern)
	want := re.FindSubmatchIndex([]byte(line))
	got := make([]int, 2*(re.NumSubexp()+1))
	err := p.match([]byte(line), got, fieldSource{})
	switch {
	case want == nil && err == nil:
		t.Errorf("%s %q: the matcher accepts %v, the regexp does not", name, line, got)
	case want != nil && err != nil:
		t.Errorf("%s %q: the matcher rejects (%v), the regexp gives %v", name, line, err, want)
	case want != nil && !reflect.DeepEqual(got, want):
		t.Errorf("%s %q: matcher %v, regexp %v", name, line, got, want)
	}
}

func TestPresetsAgreeWithRegexp(t *testing.T) {
	for name := range presets {
		for _, line := range presetLines {
			checkPresetAgrees(t, name, line)
		}
	}
}

func FuzzPresetsAgreeWithRegexp(f *testing.F) {
	for _, line := range presetLines {
		f.Add(line)
	}
	f.Fuzz(func(t *testing.T, line string) {
		for name := range presets {
			checkPresetAgrees(t, name, line)
		}
	})
}

func BenchmarkNginxPreset(b *testing.B) {
	benchParser(b, "parse_regex", "{preset: nginx_combined}", nginxLine)
}

// BenchmarkNginxRegexp is the same format through package regexp: the
// baseline the hand-written preset is measured against.
func BenchmarkNginxRegexp(b *testing.B) {
	benchParser(b, "parse_regex", "{pattern: '"+presets["nginx_combined"].pattern+"'}", nginxLine)
}
