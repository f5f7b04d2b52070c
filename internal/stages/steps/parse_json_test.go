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
	for _, src := range []string{"[1]", "yes"} {
		if _, err := loadConfig(t, "parse_json", src); err == nil {
			t.Errorf("parse_json: %q: no error", src)
		}
	}
}

func TestParseJSONField(t *testing.T) {
	b := parsed(t,
		`{"ts":1,"payload":"{\"a\":1,\"ts\":\"x\",\"o\":{\"k\":[1,2]},\"a\":2}","z":true}`,
		`{"payload":"{\"\\u0061\":\"esc\"}"}`,
		`{"payload":"{}"}`,
		`{"payload":"[1]"}`,
		`{"payload":"{\"a\":"}`,
		`{"payload":{"a":1}}`,
		`{"other":1}`,
	)
	newStep(t, "parse_json", "{field: payload}").Process(b)
	want := []string{
		`{"payload":"{\"a\":1,\"ts\":\"x\",\"o\":{\"k\":[1,2]},\"a\":2}","z":true,"ts":"x","o":{"k":[1,2]},"a":2}`,
		`{"payload":"{\"\\u0061\":\"esc\"}","a":"esc"}`,
		`{"payload":"{}"}`,
	}
	if got := rawLines(b.Records); !reflect.DeepEqual(got, want) {
		t.Errorf("records\n got %q\nwant %q", got, want)
	}
	wantErrs := []string{
		`parse_json: invalid JSON: want an object, got an array at offset 0 of field "payload"`,
		`parse_json: invalid JSON: unexpected end of input, want a value at offset 5 of field "payload"`,
		`parse_json: field "payload" is an object, want a string`,
		`parse_json: field "payload" is missing`,
	}
	if got := rejectErrors(b.Rejects); !reflect.DeepEqual(got, wantErrs) {
		t.Errorf("rejects\n got %q\nwant %q", got, wantErrs)
	}
	b = readBatch(t, `{"payload":"{}"}`)
	newStep(t, "parse_json", "{field: payload}").Process(b)
	if len(b.Rejects) != 1 || !strings.Contains(b.Rejects[0].Err.Error(), "record is not parsed") {
		t.Errorf("unparsed record with field: %q", rejectErrors(b.Rejects))
	}
}

func BenchmarkParseJSONField(b *testing.B) {
	benchParsed(b, "parse_json", "{field: body}", `{"ts":"2024-05-01T10:00:00Z","body":"{\"user\":\"u1\",\"amount\":12.5,\"tags\":[\"a\"]}"}`)
}
