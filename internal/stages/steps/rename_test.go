package steps

import (
	"reflect"
	"testing"
)

func TestRename(t *testing.T) {
	b := parsed(t,
		`{"a":1,"b":2,"c":3}`,
		`{"x":1}`,
		`{ "a" : [1, 2] , "keep" : true }`,
		`{"b":"old b","a":"a"}`,
		`{"\u0061":"escaped a"}`,
		`{"c":1,"d":2}`,
	)
	newStep(t, "rename", "{a: b, b: z, c: d}").Process(b)
	want := []string{
		`{"z":1,"d":3}`, // a->b replaces b, then b->z; c->d
		`{"x":1}`,
		`{"z":[1, 2],"keep" : true}`,
		`{"z":"a"}`,
		`{"z":"escaped a"}`,
		`{"d":1}`,
	}
	if got := rawLines(b.Records); !reflect.DeepEqual(got, want) {
		t.Errorf("records\n got %q\nwant %q", got, want)
	}
	// Unparsed records are bad records; an untouched record keeps its bytes.
	b = readBatch(t, `{"a":1}`)
	newStep(t, "rename", "{a: b}").Process(b)
	if got := rejectErrors(b.Rejects); len(got) != 1 || got[0] != "rename: record is not parsed JSON (add a parse_json step before rename)" {
		t.Errorf("rejects %q", got)
	}
}

func TestRenameConfig(t *testing.T) {
	for src, want := range map[string]string{
		"{}":            "rename: want at least one old: new pair",
		"[a, b]":        "rename: want a mapping of old: new field names",
		"{a: ''}":       "a: empty new name",
		"{a: [b]}":      "rename: line 1: the new name of \"a\" must be a string",
		"{a: b, a: c}":  "rename: line 1: field \"a\" given twice",
		"{a: \"x\\0\"}": "a: field names cannot hold NUL bytes",
	} {
		_, err := loadConfig(t, "rename", src)
		if err == nil || err.Error() != want {
			t.Errorf("%s: error %v, want %q", src, err, want)
		}
	}
}

func BenchmarkRename(b *testing.B) {
	benchParsed(b, "rename", "{remote_addr: client, http_user_agent: agent}",
		`{"remote_addr":"203.0.113.9","remote_user":"-","status":"200","http_user_agent":"curl/8.5.0"}`)
}
