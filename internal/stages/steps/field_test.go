package steps

import (
	"testing"
)

// TestParsersKeepLine: the first parser of a record keeps its original
// line in Line (for {{_line}} and dead letters), without copying it; a
// later parser, on the line or a field, leaves Line as it was.
func TestParsersKeepLine(t *testing.T) {
	tests := []struct {
		typ, cfg, line string
		then           string // a second parser's type and config, "" for none
		thenCfg        string
	}{
		{"parse_json", `{}`, ` {"a":1} `, "", ""},
		{"parse_json", `{}`, `{"a":"{\"b\":2}"}`, "parse_json", `{field: a}`},
		{"parse_regex", `{pattern: '^(?P<a>\w+) (?P<b>\w+)$'}`, `x y`, "", ""},
		{"parse_regex", `{preset: apache_common}`, `127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2326`,
			"parse_timestamp", `{field: time_local, format: '%d/%b/%Y:%H:%M:%S %z'}`},
		{"parse_logfmt", `{}`, `level=info msg="a b" kv="k=v"`, "parse_logfmt", `{field: kv}`},
		{"parse_csv", `{columns: [a, b]}`, `1,"x y"`, "", ""},
		{"parse_syslog", `{}`, `<34>1 2003-10-11T22:14:15.003Z host su - ID47 - hi`, "", ""},
		{"parse_logfmt", `{}`, `line="Dec  4 06:00:01 h t: m"`, "parse_syslog", `{field: line}`},
	}
	for _, tt := range tests {
		t.Run(tt.typ+" "+tt.cfg+" "+tt.then, func(t *testing.T) {
			b := readBatch(t, tt.line)
			in := b.Records[0].Raw
			newStep(t, tt.typ, tt.cfg).Process(b)
			if tt.then != "" {
				newStep(t, tt.then, tt.thenCfg).Process(b)
			}
			if len(b.Records) != 1 {
				t.Fatalf("rejected: %v", rejectErrors(b.Rejects))
			}
			r := &b.Records[0]
			if !r.Parsed || string(r.Line) != tt.line || string(r.Original()) != tt.line {
				t.Fatalf("Parsed %v, Line %q, Original %q; want the line %q", r.Parsed, r.Line, r.Original(), tt.line)
			}
			if &r.Line[0] != &in[0] {
				t.Error("Line is a copy, not the line read")
			}
			decodeRecord(t, r.Raw)
		})
	}
}

// TestParserRejectKeepsLine: a record rejected by a step after its first
// parser still carries its original line (its dead-letter "record").
func TestParserRejectKeepsLine(t *testing.T) {
	const line = `level=info ts=yesterday`
	b := readBatch(t, line)
	newStep(t, "parse_logfmt", `{}`).Process(b)
	newStep(t, "parse_timestamp", `{field: ts}`).Process(b)
	if len(b.Records) != 0 || len(b.Rejects) != 1 {
		t.Fatalf("kept %q, rejected %v", rawLines(b.Records), rejectErrors(b.Rejects))
	}
	if got := string(b.Rejects[0].Record.Original()); got != line {
		t.Errorf("rejected record's original line %q, want %q", got, line)
	}
}
