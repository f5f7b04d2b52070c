package steps

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseJSON(t *testing.T) {
	lines := []string{
		`{"a":1}`,
		`  {"b":"x"}  `,
		``,
		`[1]`,
		`"x"`,
		`{"a":`,
		"{\"a\":\"\xff\"}",
		`{}`,
		`not json`,
	}
	b := readBatch(t, lines...)
	newStep(t, "parse_json", "{}").Process(b)

	if got, want := rawLines(b.Records), []string{`{"a":1}`, `{"b":"x"}`, `{}`}; !reflect.DeepEqual(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
	for _, r := range b.Records {
		if !r.Parsed {
			t.Errorf("record %s not marked Parsed", r.Raw)
		}
	}
	wantErrs := []string{
		"invalid JSON: empty input at offset 0",
		"invalid JSON: want an object, got an array at offset 0",
		"invalid JSON: want an object, got a string at offset 0",
		"invalid JSON: unexpected end of input, want a value at offset 5",
		"invalid UTF-8 at offset 6",
		"invalid JSON: want an object, got character 'n' at offset 0",
	}
	if got := rejectErrors(b.Rejects); !reflect.DeepEqual(got, wantErrs) {
		t.Fatalf("reject errors\n got %q\nwant %q", got, wantErrs)
	}
	// Rejects keep the original line and origin, for the dead-letter sink.
	if r := b.Rejects[4]; string(r.Record.Raw) != lines[6] || r.Record.Parsed || r.Record.OriginString() == "" {
		t.Fatalf("reject record = %+v", r.Record)
	}
	if r := b.Rejects[0]; r.Record.Offset != int64(len(lines[0])+len(lines[1])+2) {
		t.Fatalf("reject offset = %d", r.Record.Offset)
	}
}

func TestParseJSONConfig(t *testing.T) {
	for _, src := range []string{"{}", "null", "~", ""} {
		if _, err := loadConfig(t, "parse_json", src); err != nil {
			t.Errorf("parse_json: %q: %v", src, err)
		}
	}
	for _, src := range []string{"{strict: true}", "[1]", "yes"} {
		_, err := loadConfig(t, "parse_json", src)
		if err == nil || !strings.Contains(err.Error(), "parse_json: takes no options") {
			t.Errorf("parse_json: %q: err = %v", src, err)
		}
	}
}
