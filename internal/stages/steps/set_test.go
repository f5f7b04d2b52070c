package steps

import (
	"reflect"
	"strings"
	"testing"

	"github.com/etld/etld/internal/stages"
)

func TestSet(t *testing.T) {
	tests := []struct {
		name string
		cfg  string
		in   string
		want string // exact output text
	}{
		{"append", `{pipeline: w2}`, `{"a":1}`, `{"a":1,"pipeline":"w2"}`},
		{"append to empty", `{pipeline: w2}`, `{}`, `{"pipeline":"w2"}`},
		{"replace keeps position", `{a: x}`, `{"a":1,"b":2}`, `{"a":"x","b":2}`},
		{"replace last", `{b: [1, 2]}`, `{"a":1,"b":{"c":3}}`, `{"a":1,"b":[1,2]}`},
		{"replace and append in order", `{z: 1, a: true, m: null}`, `{"a":0}`, `{"a":true,"z":1,"m":null}`},
		{"duplicate keys collapse", `{a: 9}`, `{"a":1,"b":2,"a":3}`, `{"a":9,"b":2}`},
		{"escaped key matches", `{key: v}`, `{"k\u0065y":1}`, `{"k\u0065y":"v"}`},
		{"keys are literal", `{"a.b": 1, "c*": 2, "#": 3}`, `{"a":{"b":0}}`, `{"a":{"b":0},"a.b":1,"c*":2,"#":3}`},
		{"yaml scalar types", `{s: "3", i: 3, f: 2.5, b: yes, t: true, n: ~, hex: 0x10, d: 2026-01-02, q: "a\"b"}`, `{}`,
			`{"s":"3","i":3,"f":2.5,"b":"yes","t":true,"n":null,"hex":16,"d":"2026-01-02","q":"a\"b"}`},
		{"nested order kept", `{m: {z: 1, a: [x, {k: v}]}}`, `{}`, `{"m":{"z":1,"a":["x",{"k":"v"}]}}`},
		{"value mentions the key", `{pipeline: w2}`, `{"x":"pipeline"}`, `{"x":"pipeline","pipeline":"w2"}`},
		{"nested key is not top-level", `{pipeline: w2}`, `{"o":{"pipeline":1}}`, `{"o":{"pipeline":1},"pipeline":"w2"}`},
		{"escape elsewhere forces a walk", `{pipeline: w2}`, `{"m":"a\nb","pipeline":0}`, `{"m":"a\nb","pipeline":"w2"}`},
		{"whitespace kept", `{k: 1}`, `{ "a" : 1 }`, `{ "a" : 1 ,"k":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := parsed(t, tt.in, `{"other":true}`)
			newStep(t, "set", tt.cfg).Process(b)
			if len(b.Rejects) > 0 || len(b.Records) != 2 {
				t.Fatalf("records %q rejects %q", rawLines(b.Records), rejectErrors(b.Rejects))
			}
			r := b.Records[0]
			if string(r.Raw) != tt.want {
				t.Fatalf("got  %s\nwant %s", r.Raw, tt.want)
			}
			decodeRecord(t, r.Raw)
			decodeRecord(t, b.Records[1].Raw)
			if !r.Parsed || cap(r.Raw) != len(r.Raw) {
				t.Fatalf("Parsed %v, cap %d len %d: Raw must be capped", r.Parsed, cap(r.Raw), len(r.Raw))
			}
		})
	}
}

func TestSetUnparsed(t *testing.T) {
	b := readBatch(t, `{"a":1}`)
	newStep(t, "set", `{x: 1}`).Process(b)
	want := []string{"set: record is not parsed JSON (add a parse_json step before set)"}
	if got := rejectErrors(b.Rejects); len(b.Records) != 0 || !reflect.DeepEqual(got, want) {
		t.Fatalf("records %q rejects %q", rawLines(b.Records), got)
	}
	if string(b.Rejects[0].Record.Raw) != `{"a":1}` {
		t.Fatalf("reject lost its line: %q", b.Rejects[0].Record.Raw)
	}
}

func TestSetConfigErrors(t *testing.T) {
	tests := []struct {
		src     string
		wantErr string
		field   string // "-" when not a FieldError
	}{
		{`{x: .nan}`, "x: .nan cannot be represented in JSON", "x"},
		{`{ok: 1, y: -.inf}`, "y: -.inf cannot be represented in JSON", "y"},
		{`{}`, "set: want at least one field", ""},
		{`null`, "set: want at least one field", ""},
		{`[a, b]`, "set: want a mapping of field: value", "-"},
		{`'x'`, "set: want a mapping of field: value", "-"},
		{"a: 1\na: 2", `set: line 2: field "a" given twice`, "-"},
		{`{"": 1}`, "set: line 1: empty field name", "-"},
		{`{[1]: 1}`, "set: line 1: field names must be strings", "-"},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			_, err := loadConfig(t, "set", tt.src)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if tt.field != "-" {
				if fe := fieldErr(t, err); fe.Field != tt.field {
					t.Fatalf("field = %q, want %q", fe.Field, tt.field)
				}
			}
		})
	}
}

func TestSetConfigInGo(t *testing.T) {
	f, _ := registry(t).Lookup(stages.KindStep, "set")
	st, err := f.NewStep(stages.Settings{}, &SetConfig{Fields: []SetField{{Name: "n", Value: 3}, {Name: "l", Value: []any{"a"}}}})
	if err != nil {
		t.Fatal(err)
	}
	b := parsed(t, `{}`)
	st.Process(b)
	if got := string(b.Records[0].Raw); got != `{"n":3,"l":["a"]}` {
		t.Fatalf("got %s", got)
	}
	if _, err := f.NewStep(stages.Settings{}, &SetConfig{Fields: []SetField{{Name: "x", Value: make(chan int)}}}); err == nil || !strings.Contains(err.Error(), "x: cannot encode chan int") {
		t.Fatalf("err = %v", err)
	}
}

// TestSurelyAbsent checks surelyAbsent against its definition: false
// whenever the key's quoted form or a backslash occurs in the text.
func TestSurelyAbsent(t *testing.T) {
	objs := []string{
		`{}`, `{"a":1}`, `{"pipeline":1}`, `{"a":"pipeline"}`, `{"a":"xpipeline\""}`, `{"pipelinex":1}`,
		`{"xpipeline":1}`, `{"a":"ppipeline","pipeline":2}`, `{"a":"pipeline"pipeline"}`, `{"":1}`, `{"a":"","b":1}`,
		`{"pi\u0070eline":1}`, `{"a":"x\\y"}`, `{"é":1,"pipeline":2}`, `{"p":"pipeline"}`,
	}
	for _, o := range objs {
		for _, names := range [][]string{{"pipeline"}, {"a"}, {""}, {"b", "pipeline"}, {"é"}, {"p"}} {
			var keys []fieldKey
			want := !strings.Contains(o, `\`)
			for _, n := range names {
				k := newFieldKey(n)
				keys = append(keys, k)
				if strings.Contains(o, string(k.quoted)) {
					want = false
				}
			}
			if got := surelyAbsent([]byte(o), keys); got != want {
				t.Errorf("surelyAbsent(%s, %q) = %v, want %v", o, names, got, want)
			}
		}
	}
}
