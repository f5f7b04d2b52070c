package steps

import (
	"reflect"
	"strings"
	"testing"
)

func TestEval(t *testing.T) {
	tests := []struct {
		name string
		cfg  string
		in   string
		want string // exact output
	}{
		{"cents", `{cents: 'int(amount * 100)'}`, `{"amount":2.5}`, `{"amount":2.5,"cents":250}`},
		{"missing is nil", `{m: 'missing ?? "none"'}`, `{"a":1}`, `{"a":1,"m":"none"}`},
		{"replace in place", `{a: 'a + 1', b: 'upper(b)'}`, `{"a":1,"b":"x\ny","c":0}`, `{"a":2,"b":"X\nY","c":0}`},
		{"sequential", `{a: '10', b: 'a * 2'}`, `{"a":1}`, `{"a":10,"b":20}`},
		{"strings with escapes", `{s: 'msg + "!"'}`, `{"msg":"\"q\" \u00e9"}`, `{"msg":"\"q\" \u00e9","s":"\"q\" é!"}`},
		{"composite results", `{l: '[a, nil, true]', o: '{"k": a}'}`, `{"a":1.5}`, `{"a":1.5,"l":[1.5,null,true],"o":{"k":1.5}}`},
		{"nested field", `{n: 'user.name'}`, `{"user":{"name":"ann","id":1}}`, `{"user":{"name":"ann","id":1},"n":"ann"}`},
		{"dotted key", `{x: '$env["a.b"] * 2'}`, `{"a.b":4}`, `{"a.b":4,"x":8}`},
		{"all fields", `{k: 'len(keys($env))'}`, `{"a":1,"b":2}`, `{"a":1,"b":2,"k":2}`},
		{"target mentioned in a value", `{n: 'x + 1'}`, `{"x":1,"s":"n"}`, `{"x":1,"s":"n","n":2}`},
		{"target nested", `{n: 'x + 1'}`, `{"x":1,"o":{"n":0}}`, `{"x":1,"o":{"n":0},"n":2}`},
		{"duplicate target collapses", `{a: '"x"'}`, `{"a":1,"a":2}`, `{"a":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := parsed(t, tt.in)
			newStep(t, "eval", tt.cfg).Process(b)
			if len(b.Rejects) > 0 || len(b.Records) != 1 {
				t.Fatalf("records %q rejects %q", rawLines(b.Records), rejectErrors(b.Rejects))
			}
			if got := string(b.Records[0].Raw); got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
			decodeRecord(t, b.Records[0].Raw)
		})
	}
}

func TestEvalBadRecords(t *testing.T) {
	b := parsed(t, `{"amount":1.5}`, `{"amount":"x"}`, `{"amount":0}`, `{"amount":3}`)
	newStep(t, "eval", `{cents: 'int(amount * 100)', r: '1 / amount'}`).Process(b)
	if got := rawLines(b.Records); !reflect.DeepEqual(got, []string{`{"amount":1.5,"cents":150,"r":0.6666666666666666}`, `{"amount":3,"cents":300,"r":0.3333333333333333}`}) {
		t.Fatalf("records %q", got)
	}
	errs := rejectErrors(b.Rejects)
	if len(errs) != 2 || !strings.HasPrefix(errs[0], "eval cents: invalid operation: string * int") ||
		errs[1] != "eval r: cannot encode +Inf as JSON" {
		t.Fatalf("reject errors %q", errs)
	}
	if string(b.Rejects[0].Record.Raw) != `{"amount":"x"}` {
		t.Fatalf("a rejected record must keep its line, got %s", b.Rejects[0].Record.Raw)
	}

	b = readBatch(t, `{"amount":1}`)
	newStep(t, "eval", `{c: 'amount'}`).Process(b)
	if errs := rejectErrors(b.Rejects); !reflect.DeepEqual(errs, []string{"eval: record is not parsed JSON (add a parse_json step before eval)"}) {
		t.Fatalf("reject errors %q", errs)
	}
}

func TestEvalConfigErrors(t *testing.T) {
	tests := []struct {
		src     string
		wantErr string
		fields  []string // FieldError fields, nil when not FieldErrors
	}{
		{`{cents: 'int(amount *', ok: 'a', bad: '1 +'}`, "cents: unexpected token EOF (1:12)\nbad: unexpected token EOF (1:3)", []string{"cents", "bad"}},
		{`{x: ''}`, "x: empty expression", []string{"x"}},
		{`{}`, "eval: want at least one field", []string{""}},
		{`{x: [1]}`, `eval: field "x": want an expression string`, nil},
		{`{x: }`, `eval: field "x": want an expression string`, nil},
		{`x`, "eval: want a mapping of field: expression", nil},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			_, err := loadConfig(t, "eval", tt.src)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if tt.fields == nil {
				return
			}
			var got []string
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				for _, e := range j.Unwrap() {
					got = append(got, fieldErr(t, e).Field)
				}
			} else {
				got = []string{fieldErr(t, err).Field}
			}
			if !reflect.DeepEqual(got, tt.fields) {
				t.Fatalf("fields %q, want %q", got, tt.fields)
			}
		})
	}
}
