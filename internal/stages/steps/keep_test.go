package steps

import (
	"reflect"
	"strings"
	"testing"
)

func TestKeep(t *testing.T) {
	runFieldCases(t, "keep", `{"keep":1}`, []fieldCase{
		{`[a, keep]`, `{"a":1,"b":2,"c":3}`, `{"a":1}`},
		{`[b, keep]`, `{"a":1,"b":2,"c":3}`, `{"b":2}`},
		{`[c, a, keep]`, `{"a":1,"b":2,"c":3}`, `{"a":1,"c":3}`}, // record order, not list order
		{`[a, b, c, keep]`, `{"a":1,"b":2,"c":3}`, `{"a":1,"b":2,"c":3}`},
		{`[missing, keep]`, `{"a":1}`, `{}`},
		{`[a, keep]`, `{}`, `{}`},
		{`[a, keep]`, `{"a":1,"b":2,"a":3}`, `{"a":1,"a":3}`},
		{`["a.b", keep]`, `{"a":{"b":1},"a.b":2}`, `{"a.b":2}`},
		{`[key, keep]`, `{"k\u0065y":1,"x":[1,{"key":2}]}`, `{"k\u0065y":1}`},
		{`keep`, `{ "user" : "u" , "keep" : "m" }`, `{ "keep" : "m" }`},
	})
	// A field the list does not name goes, in the next record too.
	runFieldCases(t, "keep", `{}`, []fieldCase{{`user`, `{"user":"u","msg":"m"}`, `{"user":"u"}`}})
}

func TestKeepUnparsedAndConfig(t *testing.T) {
	b := readBatch(t, `{"a":1}`)
	newStep(t, "keep", `[a]`).Process(b)
	if errs := rejectErrors(b.Rejects); !reflect.DeepEqual(errs, []string{"keep: record is not parsed JSON (add a parse_json step before keep)"}) {
		t.Fatalf("reject errors %q", errs)
	}
	if len(b.Records) != 0 {
		t.Fatalf("unparsed record kept: %q", rawLines(b.Records))
	}
	for src, want := range map[string]string{
		`[]`:      "keep: want at least one field",
		`null`:    "keep: want at least one field",
		`{a: 1}`:  "keep: want a list of field names, e.g. keep: [user, msg]",
		`[[a]]`:   "keep: want a list of field names",
		`[a, ""]`: "keep: empty field name",
	} {
		if _, err := loadConfig(t, "keep", src); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("keep: %s: err = %v, want %q", src, err, want)
		}
	}
}
