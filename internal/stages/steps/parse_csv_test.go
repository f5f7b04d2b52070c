package steps

import (
	"encoding/csv"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseCSV(t *testing.T) {
	runParseCases(t, "parse_csv", "{columns: [a, b, c]}", []parseCase{
		{in: `1,two,3`, want: `{"a":"1","b":"two","c":"3"}`},
		{in: `,,`, want: `{"a":"","b":"","c":""}`},
		{in: `"x, y","say ""hi""",z`, want: `{"a":"x, y","b":"say \"hi\"","c":"z"}`},
		{in: `"",a"b,""""`, want: `{"a":"","b":"a\"b","c":"\""}`},
		{in: "caf\xc3\xa9,\xff,", want: `{"a":"café","b":"\ufffd","c":""}`},
		{in: `1,2`, err: `parse_csv: got 2 columns, want 3`},
		{in: `1,2,3,4`, err: `parse_csv: got 4 columns, want 3`},
		{in: ``, err: `parse_csv: got 1 columns, want 3`},
		{in: `1,"open,3`, err: `parse_csv: want a closing '"' (the quoted field opened at byte 2) at byte 9`},
		{in: `1,"x"y,3`, err: `parse_csv: want ',' or the end of the line after a quoted field at byte 5`},
	})
	runParseCases(t, "parse_csv", `{columns: [a, b], delimiter: "\t"}`, []parseCase{
		{in: "x y\t\"q\tq\"", want: `{"a":"x y","b":"q\tq"}`},
		{in: "a,b", err: `parse_csv: got 1 columns, want 2`},
	})
}

func TestParseCSVConfig(t *testing.T) {
	for src, want := range map[string]string{
		"{}":                                 "columns: want at least one column name",
		"{columns: [a, '', a]}":              "columns: column 2 has an empty name\ncolumns: column \"a\" given twice",
		"{columns: [a], delimiter: ';;'}":    `delimiter: invalid delimiter ";;": want one ASCII character other than '"' and line breaks`,
		`{columns: [a], delimiter: '"'}`:     `delimiter: invalid delimiter "\"": want one ASCII character other than '"' and line breaks`,
		"{columns: [], delimiter: '\u00a7'}": "columns: want at least one column name\ndelimiter: invalid delimiter \"\u00a7\": want one ASCII character other than '\"' and line breaks",
	} {
		_, err := loadConfig(t, "parse_csv", src)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", src, err, want)
		}
	}
}

func TestParseCSVField(t *testing.T) {
	b := parsed(t, `{"row":"1,\"a \"\"b\"\"\"","x":0}`, `{"row":"1"}`)
	newStep(t, "parse_csv", "{columns: [n, s], field: row}").Process(b)
	if got, want := rawLines(b.Records), []string{`{"row":"1,\"a \"\"b\"\"\"","x":0,"n":"1","s":"a \"b\""}`}; !reflect.DeepEqual(got, want) {
		t.Errorf("records\n got %q\nwant %q", got, want)
	}
	if got, want := rejectErrors(b.Rejects), []string{`parse_csv: got 1 columns, want 2 of field "row"`}; !reflect.DeepEqual(got, want) {
		t.Errorf("rejects %q, want %q", got, want)
	}
}

// FuzzParseCSV checks parse_csv against encoding/csv (LazyQuotes for
// quotes inside unquoted fields): when both accept a line they agree on
// every column, and parse_csv's errors carry a byte offset or a count.
func FuzzParseCSV(f *testing.F) {
	for _, s := range []string{`a,b,c`, `"a,b",c,`, `"x""y",,z`, `"open`, `a"b,c,d`, `"a"b,c,d`, "\xff,,"} {
		f.Add(s)
	}
	st := newStep(f, "parse_csv", "{columns: [a, b, c]}")
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, "\r\n") {
			return
		}
		b := readBatch(t, line)
		st.Process(b)
		r := csv.NewReader(strings.NewReader(line))
		r.LazyQuotes, r.FieldsPerRecord = true, -1
		ref, refErr := r.Read()
		if len(b.Rejects) == 1 {
			if msg := b.Rejects[0].Err.Error(); !strings.Contains(msg, " at byte ") && !strings.Contains(msg, " columns, want 3") {
				t.Fatalf("%q: error without an offset: %v", line, msg)
			}
			return
		}
		var m map[string]string
		if err := json.Unmarshal(b.Records[0].Raw, &m); err != nil {
			t.Fatalf("%q: %s: %v", line, b.Records[0].Raw, err)
		}
		if refErr == nil && len(ref) == 3 && utf8.ValidString(line) && (m["a"] != ref[0] || m["b"] != ref[1] || m["c"] != ref[2]) {
			t.Fatalf("%q: got %v, encoding/csv %q", line, m, ref)
		}
	})
}

func BenchmarkParseCSV(b *testing.B) {
	benchParser(b, "parse_csv", "{columns: [ts, user, action, amount, note]}",
		`2024-05-01T10:00:00Z,u1234,checkout,19.99,"gift, wrapped"`)
}
