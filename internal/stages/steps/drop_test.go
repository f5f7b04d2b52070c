package steps

import (
	"reflect"
	"strings"
	"testing"
)

func TestDrop(t *testing.T) {
	tests := []fieldCase{
		{`[a]`, `{"a":1,"b":2,"c":3}`, `{"b":2,"c":3}`},
		{`[b]`, `{"a":1,"b":2,"c":3}`, `{"a":1,"c":3}`},
		{`[c]`, `{"a":1,"b":2,"c":3}`, `{"a":1,"b":2}`},
		{`[a]`, `{"a":1}`, `{}`},
		{`[a, c]`, `{"a":1,"b":2,"c":3}`, `{"b":2}`},
		{`[a, b, c]`, `{"a":1,"b":2,"c":3}`, `{}`},
		{`[missing]`, `{"a":1}`, `{"a":1}`},
		{`[a]`, `{}`, `{}`},
		{`[a]`, `{"a":1,"b":2,"a":3}`, `{"b":2}`},
		{`["a.b"]`, `{"a":{"b":1},"a.b":2}`, `{"a":{"b":1}}`},
		{`[key]`, `{"k\u0065y":1,"x":[1,{"key":2}]}`, `{"x":[1,{"key":2}]}`},
		{`user`, `{ "user" : "u" , "msg" : "m" }`, `{ "msg" : "m" }`},
	}
	runFieldCases(t, "drop", `{"keep":1}`, tests)
}

// fieldCase is one record through a drop or keep step.
type fieldCase struct{ cfg, in, want string }

// runFieldCases runs each case's record, followed by {"keep":1}, through a
// step of type typ; next is what the step must make of the second record.
func runFieldCases(t *testing.T, typ, next string, tests []fieldCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.cfg+" "+tt.in, func(t *testing.T) {
			b := parsed(t, tt.in, `{"keep":1}`)
			newStep(t, typ, tt.cfg).Process(b)
			if len(b.Rejects) > 0 || len(b.Records) != 2 {
				t.Fatalf("records %q rejects %q", rawLines(b.Records), rejectErrors(b.Rejects))
			}
			if got := string(b.Records[0].Raw); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			decodeRecord(t, b.Records[0].Raw)
			// In-place edits must not spill into the next record.
			if got := string(b.Records[1].Raw); got != next {
				t.Fatalf("next record changed: %s", got)
			}
		})
	}
}

func TestDropUnparsedAndConfig(t *testing.T) {
	b := readBatch(t, `{"a":1}`)
	newStep(t, "drop", `[a]`).Process(b)
	if errs := rejectErrors(b.Rejects); !reflect.DeepEqual(errs, []string{"drop: record is not parsed JSON (add a parse_json step before drop)"}) {
		t.Fatalf("reject errors %q", errs)
	}
	for src, want := range map[string]string{
		`[]`:     "drop: want at least one field",
		`null`:   "drop: want at least one field", // yaml.v3 does not call UnmarshalYAML for null
		`{a: 1}`: "drop: want a list of field names",
		`[[a]]`:  "drop: want a list of field names",
		`[""]`:   "drop: empty field name",
	} {
		if _, err := loadConfig(t, "drop", src); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("drop: %s: err = %v, want %q", src, err, want)
		}
	}
}
