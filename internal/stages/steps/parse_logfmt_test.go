package steps

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// parseCase is one line of a parser's table test: the record it becomes,
// or the error of the bad record.
type parseCase struct {
	in, want, err string
}

// runParseCases runs the step typ (config src) on every case's line, one
// batch, and checks each outcome in order.
func runParseCases(t *testing.T, typ, src string, cases []parseCase) {
	t.Helper()
	lines := make([]string, len(cases))
	for i, c := range cases {
		lines[i] = c.in
	}
	b := readBatch(t, lines...)
	newStep(t, typ, src).Process(b)
	kept, rejected := 0, 0
	for _, c := range cases {
		if c.err != "" {
			if rejected >= len(b.Rejects) {
				t.Errorf("%q: kept, want error %q", c.in, c.err)
				continue
			}
			r := b.Rejects[rejected]
			rejected++
			if string(r.Record.Raw) != c.in || r.Err.Error() != c.err {
				t.Errorf("%q: rejected %q with\n %q, want\n %q", c.in, r.Record.Raw, r.Err, c.err)
			}
			continue
		}
		if kept >= len(b.Records) {
			t.Errorf("%q: rejected, want %s", c.in, c.want)
			continue
		}
		r := b.Records[kept]
		kept++
		if string(r.Raw) != c.want || !r.Parsed {
			t.Errorf("%q: got %s (parsed %v), want %s", c.in, r.Raw, r.Parsed, c.want)
		}
		decodeRecord(t, r.Raw)
	}
	if kept != len(b.Records) || rejected != len(b.Rejects) {
		t.Errorf("%d records and %d rejects, want %d and %d: %q %q", len(b.Records), len(b.Rejects), kept, rejected, rawLines(b.Records), rejectErrors(b.Rejects))
	}
}

func TestParseLogfmt(t *testing.T) {
	runParseCases(t, "parse_logfmt", "{}", []parseCase{
		{in: `level=info msg=hello`, want: `{"level":"info","msg":"hello"}`},
		{in: `  a=1   b=two  `, want: `{"a":"1","b":"two"}`},
		{in: `msg="quoted \" v" x=y`, want: `{"msg":"quoted \" v","x":"y"}`},
		{in: `msg="tab\tnl\nbs\\"`, want: `{"msg":"tab\tnl\nbs\\"}`},
		{in: `cached`, want: `{"cached":true}`},
		{in: `a b=`, want: `{"a":true,"b":""}`},
		{in: `e=""`, want: `{"e":""}`},
		{in: `a=1 b=2 a=3`, want: `{"b":"2","a":"3"}`},
		{in: ``, want: `{}`},
		{in: "k=caf\xc3\xa9 u=\xff", want: `{"k":"café","u":"\ufffd"}`},
		{in: `path=/a?b=c`, err: `parse_logfmt: want a space or a quoted value, got '=' in an unquoted value at byte 9`},
		{in: `msg="unterminated`, err: `parse_logfmt: want a closing '"' (the value opened at byte 4) at byte 17`},
		{in: `msg="ends in backslash\`, err: `parse_logfmt: want a closing '"' (the value opened at byte 4) at byte 23`},
		{in: `=v`, err: `parse_logfmt: want a key before '=' at byte 0`},
		{in: `a=1 =v`, err: `parse_logfmt: want a key before '=' at byte 4`},
		{in: `"k"=v`, err: `parse_logfmt: want a key, got '"' at byte 0`},
		{in: `k"=v`, err: `parse_logfmt: want '=' or a space after key "k", got '"' at byte 1`},
		{in: `a="x"b`, err: `parse_logfmt: want a space after the closing '"' at byte 5`},
		{in: `a=x"y`, err: `parse_logfmt: want a space or a quoted value, got '"' in an unquoted value at byte 3`},
	})
}

func TestParseLogfmtField(t *testing.T) {
	b := parsed(t,
		`{"ts":1,"msg":"level=warn a=\"x y\" ts=2","keep":true}`,
		`{"msg":"a=\"unterminated"}`,
		`{"other":1}`,
		`{"msg":5}`,
	)
	newStep(t, "parse_logfmt", "{field: msg}").Process(b)
	want := []string{`{"msg":"level=warn a=\"x y\" ts=2","keep":true,"level":"warn","a":"x y","ts":"2"}`}
	if got := rawLines(b.Records); !reflect.DeepEqual(got, want) {
		t.Errorf("records\n got %q\nwant %q", got, want)
	}
	wantErrs := []string{
		`parse_logfmt: want a closing '"' (the value opened at byte 2) at byte 15 of field "msg"`,
		`parse_logfmt: field "msg" is missing`,
		`parse_logfmt: field "msg" is a number, want a string`,
	}
	if got := rejectErrors(b.Rejects); !reflect.DeepEqual(got, wantErrs) {
		t.Errorf("rejects\n got %q\nwant %q", got, wantErrs)
	}
	// Not parsed: the field cannot be read.
	b = readBatch(t, `msg=x`)
	newStep(t, "parse_logfmt", "{field: msg}").Process(b)
	if len(b.Rejects) != 1 || !strings.Contains(b.Rejects[0].Err.Error(), "record is not parsed") {
		t.Errorf("unparsed record with field: %q", rejectErrors(b.Rejects))
	}
}

// FuzzParseLogfmt: any line is either a bad record with a byte offset or
// a valid JSON object whose values are strings or true.
func FuzzParseLogfmt(f *testing.F) {
	for _, s := range []string{`a=1 b="x \" y" c`, `=`, `"`, `a="\`, "a=\xff", `a=1 a=2`, `k=v k2= k3`} {
		f.Add(s)
	}
	st := newStep(f, "parse_logfmt", "{}")
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, "\n") {
			return
		}
		b := readBatch(t, line)
		st.Process(b)
		if len(b.Rejects) == 1 {
			if !strings.Contains(b.Rejects[0].Err.Error(), " at byte ") {
				t.Fatalf("%q: error without an offset: %v", line, b.Rejects[0].Err)
			}
			return
		}
		var m map[string]any
		if err := json.Unmarshal(b.Records[0].Raw, &m); err != nil || !utf8.Valid(b.Records[0].Raw) {
			t.Fatalf("%q: %s: %v", line, b.Records[0].Raw, err)
		}
		for k, v := range m {
			if _, ok := v.(string); !ok && v != true {
				t.Fatalf("%q: field %q = %v", line, k, v)
			}
		}
	})
}

func BenchmarkParseLogfmt(b *testing.B) {
	line := `ts=2024-05-01T10:00:00.123Z level=info msg="request served" method=GET path=/api/v1/users status=200 duration_ms=12 cached`
	benchParser(b, "parse_logfmt", "{}", line)
}

// benchParser runs a parser over batches of 256 copies of line, reporting
// lines/s.
func benchParser(b *testing.B, typ, src, line string) { benchStep(b, typ, src, line, false) }

// benchParsed is benchParser for steps that need parsed records.
func benchParsed(b *testing.B, typ, src, line string) { benchStep(b, typ, src, line, true) }

func benchStep(b *testing.B, typ, src, line string, isParsed bool) {
	lines := make([]string, 256)
	for i := range lines {
		lines[i] = line
	}
	tmpl := readBatch(b, lines...)
	if isParsed {
		tmpl = parsed(b, lines...)
	}
	benchRecords(b, newStep(b, typ, src), tmpl.Records)
}

// TestParseLogfmtManyKeys crosses manyFields, where duplicate keys are
// found through an index instead of one by one.
func TestParseLogfmtManyKeys(t *testing.T) {
	var line strings.Builder
	want := map[string]any{}
	for i := range 80 {
		k := fmt.Sprintf("k%d", i%50) // k0..k29 come twice
		fmt.Fprintf(&line, "%s=%d ", k, i)
		want[k] = fmt.Sprint(i)
	}
	b := readBatch(t, line.String())
	newStep(t, "parse_logfmt", "{}").Process(b)
	if len(b.Records) != 1 {
		t.Fatalf("rejected: %q", rejectErrors(b.Rejects))
	}
	if got := decodeRecord(t, b.Records[0].Raw); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	if n := strings.Count(string(b.Records[0].Raw), `":`); n != 50 {
		t.Errorf("%d members, want 50 (no duplicate keys): %s", n, b.Records[0].Raw)
	}
}
