package jsonrec

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidObject(t *testing.T) {
	tests := []struct {
		in      string
		want    string // trimmed object when valid
		wantErr string // substring of the error
	}{
		{in: `{}`, want: `{}`},
		{in: "  {\"a\":1}\t\r\n", want: `{"a":1}`},
		{in: `{"a":[1,2,{"b":null}],"c":"x\"y\u00e9","d":-0.5e+3,"e":true,"f":false}`, want: `{"a":[1,2,{"b":null}],"c":"x\"y\u00e9","d":-0.5e+3,"e":true,"f":false}`},
		{in: `{"é":"ü"}`, want: `{"é":"ü"}`},
		{in: "\n {\"k\\u0065y\":\"v\\n\" , \"n\" : {\"x\":[1]},\"k\":null} ", want: `{"k\u0065y":"v\n" , "n" : {"x":[1]},"k":null}`},
		{in: ``, wantErr: "invalid JSON: empty input at offset 0"},
		{in: `   `, wantErr: "empty input"},
		{in: `[1]`, wantErr: "want an object, got an array"},
		{in: `"x"`, wantErr: "want an object, got a string"},
		{in: `12`, wantErr: "want an object, got a number"},
		{in: `null`, wantErr: "want an object, got null"},
		{in: `hello`, wantErr: "want an object, got character 'h'"},
		{in: `{"a":1`, wantErr: "unexpected end of input"},
		{in: `{"a":1}x`, wantErr: "after the object at offset 7"},
		{in: `{"a":1}{}`, wantErr: "after the object"},
		{in: `{"a" 1}`, wantErr: "want ':'"},
		{in: `{a:1}`, wantErr: "want a string key"},
		{in: `{"a":1,}`, wantErr: "want a string key"},
		{in: `{"a":01}`, wantErr: "want ',' or '}'"},
		{in: `{"a":1.}`, wantErr: "digit after '.'"},
		{in: `{"a":1e}`, wantErr: "digit in the exponent"},
		{in: `{"a":-}`, wantErr: "want a digit"},
		{in: `{"a":tru}`, wantErr: `want "true"`},
		{in: `{"a":"\x"}`, wantErr: "invalid escape"},
		{in: `{"a":"\u12g4"}`, wantErr: "hex digit"},
		{in: "{\"a\":\"\x01\"}", wantErr: "control byte 0x01 in string"},
		{in: `{"a":"abc`, wantErr: "unterminated string"},
		{in: "{\"a\":\"\xff\"}", wantErr: "invalid UTF-8 at offset 6"},
		{in: `{"a":[1 2]}`, wantErr: "want ',' or ']'"},
		{in: strings.Repeat("[", 20000), wantErr: "want an object"},
		{in: `{"a":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`, wantErr: "nesting too deep"},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			checkValidObjectSpans(t, []byte(tt.in))
			got, err := ValidObject([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if string(got) != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// checkValidObjectSpans checks that ValidObjectSpans gives exactly
// ValidObject's answer (object, error) and, on a valid object, Members'
// members and closing brace, appended after what the slice held.
func checkValidObjectSpans(t *testing.T, b []byte) {
	t.Helper()
	wantObj, wantErr := ValidObject(b)
	prefix := []Span{{Key: 99}}
	obj, spans, closeBrace, err := ValidObjectSpans(b, prefix)
	if fmt.Sprint(err) != fmt.Sprint(wantErr) || !bytes.Equal(obj, wantObj) {
		t.Fatalf("ValidObjectSpans(%q) = %q, %v; ValidObject gives %q, %v", b, obj, err, wantObj, wantErr)
	}
	if len(spans) < 1 || spans[0] != prefix[0] {
		t.Fatalf("ValidObjectSpans(%q) lost the spans it was given: %+v", b, spans)
	}
	if err != nil {
		if len(spans) != 1 || closeBrace != -1 {
			t.Fatalf("ValidObjectSpans(%q) failed but returned spans %+v, close %d", b, spans, closeBrace)
		}
		return
	}
	want, wantClose, err := Members(obj, nil)
	if err != nil {
		t.Fatalf("Members(%q): %v", obj, err)
	}
	var got []Member
	for _, sp := range spans[1:] {
		got = append(got, sp.Member())
		if m := sp.Member(); SpanOf(&m) != sp || sp.KeyEscaped() != m.Escaped || !bytes.Equal(sp.RawKey(obj), m.RawKey(obj)) {
			t.Fatalf("span %+v and member %+v disagree", sp, m)
		}
	}
	if !slices.Equal(got, want) || closeBrace != wantClose {
		t.Fatalf("ValidObjectSpans(%q) = %+v, close %d; Members gives %+v, close %d", b, got, closeBrace, want, wantClose)
	}
}

func TestErrorTypes(t *testing.T) {
	_, err := ValidObject([]byte("{\"a\":\"\xc3\"}"))
	var ue *UTF8Error
	if !errors.As(err, &ue) || ue.Offset != 6 {
		t.Fatalf("err = %#v, want *UTF8Error at 6", err)
	}
	_, err = ValidObject([]byte(`{"a":}`))
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset != 5 {
		t.Fatalf("err = %#v, want *SyntaxError at 5", err)
	}
}

// FuzzValidObject checks ValidObject against encoding/json plus utf8.Valid.
func FuzzValidObject(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, ` {"a":[1,{"b":"\u00e9\n"}]} `, `[1]`, `{"a":1e5,"b":-0}`, `{"a":"\ud800"}`, "{\"a\":\"\xff\"}", `{"a":1,}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkValidObjectSpans(t, b)
		obj, err := ValidObject(b)
		trimmed := bytes.TrimLeft(b, " \t\r\n")
		want := json.Valid(b) && utf8.Valid(b) && len(trimmed) > 0 && trimmed[0] == '{'
		if (err == nil) != want {
			t.Fatalf("ValidObject(%q) err = %v, encoding/json says valid object = %v", b, err, want)
		}
		if err == nil && !bytes.Equal(obj, bytes.TrimSpace(b)) {
			t.Fatalf("ValidObject(%q) = %q, want the trimmed input", b, obj)
		}
		if err == nil {
			// Members and DecodeValue must agree with encoding/json.
			var ref map[string]any
			d := json.NewDecoder(bytes.NewReader(obj))
			d.UseNumber()
			if err := d.Decode(&ref); err != nil {
				t.Fatal(err)
			}
			ms, _, err := Members(obj, nil)
			if err != nil {
				t.Fatalf("Members(%q): %v", obj, err)
			}
			for _, m := range ms {
				v, err := DecodeValue(obj[m.Val:m.End], false)
				if err != nil {
					t.Fatalf("DecodeValue(%q): %v", obj[m.Val:m.End], err)
				}
				if fast, err := m.Value(obj, false); err != nil || !reflect.DeepEqual(fast, v) {
					t.Fatalf("Member.Value(%q) = %#v, %v; DecodeValue gives %#v", obj[m.Val:m.End], fast, err, v)
				}
			}
			if out, ok := AppendMembers(nil, obj, []byte(`"zz":1`)); !ok || !json.Valid(out) {
				t.Fatalf("AppendMembers(%q) = %q, %v", obj, out, ok)
			}
		}
	})
}

func TestIterAndKeyIs(t *testing.T) {
	obj := []byte(`{ "a" : 1 , "a.b":{"x":[1,"}"]}, "k\u0065y":"v", "":null }`)
	var it = NewIter(obj)
	var m Member
	var keys, vals []string
	for it.Next(&m) {
		keys = append(keys, string(m.RawKey(obj)))
		vals = append(vals, string(obj[m.Val:m.End]))
	}
	if it.Err() != nil {
		t.Fatal(it.Err())
	}
	wantKeys := []string{"a", "a.b", `k\u0065y`, ""}
	wantVals := []string{"1", `{"x":[1,"}"]}`, `"v"`, "null"}
	if !reflect.DeepEqual(keys, wantKeys) || !reflect.DeepEqual(vals, wantVals) {
		t.Fatalf("keys %q vals %q", keys, vals)
	}
	if obj[it.Close()] != '}' || it.Close() != len(obj)-1 {
		t.Fatalf("Close() = %d", it.Close())
	}
	ms, _, _ := Members(obj, nil)
	for _, tt := range []struct {
		i    int
		name string
		want bool
	}{
		{0, "a", true}, {0, "b", false}, {1, "a.b", true}, {2, "key", true}, {2, `k\u0065y`, false}, {3, "", true}, {2, "keyy", false},
	} {
		if got := ms[tt.i].KeyIs(obj, tt.name); got != tt.want {
			t.Errorf("member %d KeyIs(%q) = %v, want %v", tt.i, tt.name, got, tt.want)
		}
	}
}

func TestIterMalformed(t *testing.T) {
	for _, in := range []string{``, `[1]`, `{"a"}`, `{"a":1 "b":2}`, `{"a":[}`, `{"a":1,`} {
		ms, closeBrace, err := Members([]byte(in), nil)
		if err == nil {
			t.Errorf("Members(%q) = %v, %d, want an error", in, ms, closeBrace)
		}
	}
}

func TestDecodeValue(t *testing.T) {
	tests := []struct {
		in   string
		want any
	}{
		{`null`, nil},
		{`true`, true},
		{`false`, false},
		{`0`, 0},
		{`-42`, -42},
		{`9223372036854775807`, math.MaxInt64},
		{`9223372036854775808`, 9223372036854775808.0},
		{`1.5`, 1.5},
		{`1e3`, 1000.0},
		{`426.01`, 426.01},
		{`""`, ""},
		{`"a\"b\\c\/d\b\f\n\r\t"`, "a\"b\\c/d\b\f\n\r\t"},
		{`"\u00e9\ud83d\ude00"`, "é😀"},
		{`"\ud800x"`, "\ufffdx"},
		{`[]`, []any{}},
		{`[1,"x",[null]]`, []any{1, "x", []any{nil}}},
		{`{"a":{"b":2.5},"a":3}`, map[string]any{"a": map[string]any{"b": 2.5}}},
		{` {} `, map[string]any{}},
	}
	for _, tt := range tests {
		for _, alias := range []bool{false, true} {
			got, err := DecodeValue([]byte(tt.in), alias)
			if err != nil {
				t.Fatalf("DecodeValue(%s): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DecodeValue(%s, %v) = %#v, want %#v", tt.in, alias, got, tt.want)
			}
		}
	}
	for _, bad := range []string{``, `1 2`, `{`, `"x`, `[1,]`} {
		if v, err := DecodeValue([]byte(bad), false); err == nil {
			t.Errorf("DecodeValue(%q) = %v, want an error", bad, v)
		}
	}
}

func TestDecodeAliasing(t *testing.T) {
	b := []byte(`"abc"`)
	copied, _ := DecodeValue(b, false)
	aliased, _ := DecodeValue(b, true)
	b[1] = 'X'
	if copied != "abc" {
		t.Errorf("copied string changed: %q", copied)
	}
	if aliased != "Xbc" {
		t.Errorf("aliased string = %q, want it to share the input", aliased)
	}
}

func TestAppendValue(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{nil, `null`},
		{true, `true`},
		{"a\"b\\\n\t\x01<>&\u2028é", `"a\"b\\\n\t\u0001<>&\u2028é"`},
		{"bad\xffutf8", `"bad\ufffdutf8"`},
		{42, `42`},
		{int64(-7), `-7`},
		{uint8(255), `255`},
		{1.5, `1.5`},
		{42600.0, `42600`},
		{1e21, `1e+21`},
		{1e-7, `1e-7`},
		{float32(0.1), `0.1`},
		{[]any{1, "x", nil}, `[1,"x",null]`},
		{map[string]any{"b": 1, "a": []any{}}, `{"a":[],"b":1}`},
		{[]string{"x"}, `["x"]`},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), `"2026-01-02T03:04:05Z"`},
	}
	for _, tt := range tests {
		got, err := AppendValue([]byte("pre"), tt.in)
		if err != nil {
			t.Fatalf("AppendValue(%#v): %v", tt.in, err)
		}
		if string(got) != "pre"+tt.want {
			t.Errorf("AppendValue(%#v) = %s, want pre%s", tt.in, got, tt.want)
		}
		if !json.Valid(got[3:]) {
			t.Errorf("AppendValue(%#v) is not valid JSON: %s", tt.in, got[3:])
		}
	}
	for _, bad := range []any{math.NaN(), math.Inf(1), []any{math.Inf(-1)}, make(chan int)} {
		if got, err := AppendValue(nil, bad); err == nil {
			t.Errorf("AppendValue(%v) = %s, want an error", bad, got)
		}
	}
}

func TestAppendEdited(t *testing.T) {
	tests := []struct {
		name  string
		obj   string
		edits []Edit
		add   string
		want  string
	}{
		{"append to empty", `{}`, nil, `"k":1`, `{"k":1}`},
		{"append", `{"a":1}`, nil, `"k":1`, `{"a":1,"k":1}`},
		{"append keeps spacing", `{ "a" : 1 }`, nil, `"k":1`, `{ "a" : 1 ,"k":1}`},
		{"no change", `{"a":1}`, nil, ``, `{"a":1}`},
		{"replace", `{"a":1,"b":2}`, []Edit{{Member: 1, Value: []byte(`"x"`)}}, ``, `{"a":1,"b":"x"}`},
		{"remove first", `{"a":1,"b":2,"c":3}`, []Edit{{Member: 0, Remove: true}}, ``, `{"b":2,"c":3}`},
		{"remove middle", `{"a":1,"b":2,"c":3}`, []Edit{{Member: 1, Remove: true}}, ``, `{"a":1,"c":3}`},
		{"remove last", `{"a":1,"b":2,"c":3}`, []Edit{{Member: 2, Remove: true}}, ``, `{"a":1,"b":2}`},
		{"remove only", `{"a":1}`, []Edit{{Member: 0, Remove: true}}, ``, `{}`},
		{"remove all", `{"a":1, "b":2}`, []Edit{{Member: 0, Remove: true}, {Member: 1, Remove: true}}, ``, `{}`},
		{"remove all then add", `{"a":1,"b":2}`, []Edit{{Member: 0, Remove: true}, {Member: 1, Remove: true}}, `"k":true`, `{"k":true}`},
		{"remove first two", `{"a":1,"b":2,"c":3}`, []Edit{{Member: 0, Remove: true}, {Member: 1, Remove: true}}, ``, `{"c":3}`},
		{"remove last two", `{"a":1,"b":2,"c":3}`, []Edit{{Member: 1, Remove: true}, {Member: 2, Remove: true}}, ``, `{"a":1}`},
		{"remove first and last", `{"a":1,"b":2,"c":3}`, []Edit{{Member: 0, Remove: true}, {Member: 2, Remove: true}}, ``, `{"b":2}`},
		{"replace then remove", `{"a":1,"b":2,"c":3}`, []Edit{{Member: 0, Value: []byte(`0`)}, {Member: 1, Remove: true}}, `"d":4`, `{"a":0,"c":3,"d":4}`},
		{"remove then replace", `{"a":1,"b":2,"c":3}`, []Edit{{Member: 0, Remove: true}, {Member: 2, Value: []byte(`[]`)}}, ``, `{"b":2,"c":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := []byte(tt.obj)
			ms, closeBrace, err := Members(obj, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := AppendEdited(nil, obj, ms, closeBrace, tt.edits, []byte(tt.add))
			if string(got) != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Fatalf("invalid JSON %s", got)
			}
			checkEditedMembers(t, ms, closeBrace, tt.edits, []byte(tt.add), got)
			removalsOnly := tt.add == ""
			for _, e := range tt.edits {
				removalsOnly = removalsOnly && e.Remove
			}
			if removalsOnly { // in place must give the same result
				inPlace := AppendEdited(obj[:0], obj, ms, closeBrace, tt.edits, nil)
				if string(inPlace) != tt.want {
					t.Fatalf("in place got %s, want %s", inPlace, tt.want)
				}
			}
		})
	}
}

func TestAppendMembers(t *testing.T) {
	for in, want := range map[string]string{
		`{}`:            `{"k":1}`,
		`{ }`:           `{ "k":1}`,
		`{"a":1}`:       `{"a":1,"k":1}`,
		`{"a":{"b":2}}`: `{"a":{"b":2},"k":1}`,
	} {
		got, ok := AppendMembers([]byte("x"), []byte(in), []byte(`"k":1`))
		if !ok || string(got) != "x"+want {
			t.Errorf("AppendMembers(%s) = %s, %v; want x%s", in, got, ok, want)
		}
	}
	for _, in := range []string{``, `{`, `[]`, `{"a":1} `} {
		if got, ok := AppendMembers(nil, []byte(in), []byte(`"k":1`)); ok || got != nil {
			t.Errorf("AppendMembers(%q) = %q, %v; want a refusal", in, got, ok)
		}
	}
}

var benchLine = []byte(`{"ts":"2026-11-26T10:00:00.001171Z","feed":"feed-2","seq":0,"level":"info","user":"u7578","amount":426.01,"msg":"login queue quebec alpha india"}`)

func BenchmarkValidObject(b *testing.B) {
	b.SetBytes(int64(len(benchLine)))
	for b.Loop() {
		if _, err := ValidObject(benchLine); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidObjectSpans(b *testing.B) {
	b.SetBytes(int64(len(benchLine)))
	var spans []Span
	for b.Loop() {
		var err error
		if _, spans, _, err = ValidObjectSpans(benchLine, spans[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodingJSONValid is the reference for BenchmarkValidObject.
func BenchmarkEncodingJSONValid(b *testing.B) {
	b.SetBytes(int64(len(benchLine)))
	for b.Loop() {
		if !json.Valid(benchLine) || !utf8.Valid(benchLine) {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkMembers(b *testing.B) {
	var ms []Member
	for b.Loop() {
		ms, _, _ = Members(benchLine, ms[:0])
	}
}

func BenchmarkFind(b *testing.B) {
	for b.Loop() {
		if _, ok, err := Find(benchLine, "level"); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// findRef is Find written with an Iter, its reference.
func findRef(obj []byte, name string) (Member, bool, error) {
	it := NewIter(obj)
	var m Member
	for it.Next(&m) {
		if m.KeyIs(obj, name) {
			return m, true, nil
		}
	}
	return Member{}, false, it.Err()
}

func checkFind(t *testing.T, obj []byte, name string) {
	t.Helper()
	m, found, err := Find(obj, name)
	wm, wfound, werr := findRef(obj, name)
	if m != wm || found != wfound || fmt.Sprint(err) != fmt.Sprint(werr) {
		t.Fatalf("Find(%q, %q) = %+v, %v, %v; an Iter gives %+v, %v, %v", obj, name, m, found, err, wm, wfound, werr)
	}
}

func TestFind(t *testing.T) {
	for _, in := range []string{
		`{}`, ` { } `, `{"level":"info"}`, `{"a":1,"level":"debug"}`, `{"a":{"level":1},"level":2}`,
		`{"le\u0076el":"x","level":"y"}`, `{"a":"\"level\"","level":true}`, `{ "a" : [1,{"level":0}] , "level" : null }`,
		`{"a":1,"b":2}`, `{"level":1,"level":2}`, string(benchLine),
		``, `[]`, `{"a"}`, `{"a":1 "level":2}`, `{"a":[}`, `{"a":1,`, `{"a":1,"level":`, `{"a":"\xff","level":1}`, `{"level":1}x`,
	} {
		for _, name := range []string{"level", "a", "", "missing"} {
			checkFind(t, []byte(in), name)
		}
	}
}

func FuzzFind(f *testing.F) {
	for _, s := range []string{`{"level":"info"}`, `{"a":{"level":1},"level":2}`, `{"le\u0076el":"x"}`, `{"a":1,`, string(benchLine)} {
		f.Add([]byte(s), "level")
	}
	f.Fuzz(func(t *testing.T, obj []byte, name string) { checkFind(t, obj, name) })
}

// checkEditedMembers fails t unless EditedMembers gives what Members finds
// in got, the object AppendEdited wrote.
func checkEditedMembers(t *testing.T, ms []Member, closeBrace int, edits []Edit, add, got []byte) {
	t.Helper()
	want, wantClose, err := Members(got, nil)
	if err != nil {
		t.Fatalf("Members(%s): %v", got, err)
	}
	prefix := []Member{{Key: -1}} // EditedMembers appends after what is there
	em, emClose, ok := EditedMembers(prefix, ms, closeBrace, edits, add)
	if !ok {
		t.Fatalf("EditedMembers of %s: not ok", got)
	}
	if !slices.Equal(em[1:], want) || emClose != wantClose {
		t.Fatalf("EditedMembers of %s:\n got %+v close %d\nwant %+v close %d", got, em[1:], emClose, want, wantClose)
	}
}

// TestEditedMembersRandom compares EditedMembers with a walk of the
// edited object over random objects (spacing, escaped keys and values)
// and random edits.
func TestEditedMembersRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []string{`"a"`, `"b\"q"`, `"long_key_name"`, `"\u00e9t\u00e9"`, `""`}
	vals := []string{`1`, `-2.5e3`, `"x"`, `"esc\n\"aped"`, `[1,{"n":"}"}]`, `{"a":[]}`, `true`, `null`, `"héllo"`}
	ws := []string{``, ` `, "\n\t"}
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	for range 3000 {
		n := rng.IntN(6)
		obj := "{" + pick(ws)
		for i := range n {
			if i > 0 {
				obj += pick(ws) + "," + pick(ws)
			}
			obj += pick(keys) + pick(ws) + ":" + pick(ws) + pick(vals)
		}
		obj += pick(ws) + "}" + pick(ws)
		ms, closeBrace, err := Members([]byte(obj), nil)
		if err != nil {
			t.Fatalf("%s: %v", obj, err)
		}
		var edits []Edit
		for i := range n {
			switch rng.IntN(3) {
			case 1:
				edits = append(edits, Edit{Member: i, Remove: true})
			case 2:
				edits = append(edits, Edit{Member: i, Value: []byte(pick(vals))})
			}
		}
		var add []byte
		for i := range rng.IntN(3) {
			if i > 0 {
				add = append(add, ',')
			}
			add = append(add, pick(keys)+":"+pick(vals)...)
		}
		got := AppendEdited([]byte("prefix"), []byte(obj), ms, closeBrace, edits, add)[len("prefix"):]
		checkEditedMembers(t, ms, closeBrace, edits, add, got)
	}
	if _, _, ok := EditedMembers(nil, nil, 1, nil, []byte(`"k":`)); ok {
		t.Error("EditedMembers accepted a pair without a value")
	}
}

// TestScanStringTail: scanString's shortcuts (eight bytes at a time, and
// the last word of the input read shifted) give scanStringFull's answer
// for every string, wherever it ends relative to the end of the input.
func TestScanStringTail(t *testing.T) {
	bodies := []string{"", "a", "abcdefg", "abcdefgh", "abcdefghijklmno", `a\"b`, `a\\`, `\u00e9x`, "é", "ab\xffc", "a\x01b", "a\tb", `x\q`}
	tails := []string{"", "}", `"}`, ` }`, "\x00", `,"k":1}`, "é"}
	for _, body := range bodies {
		for _, tail := range tails {
			for _, closed := range []bool{true, false} {
				for pad := range 10 {
					in := strings.Repeat(" ", pad) + `"` + body
					if closed {
						in += `"`
					}
					in += tail
					b := []byte(in)
					end, esc, err := scanString(b, pad)
					wantEnd, wantEsc, wantErr := scanStringFull(b, pad)
					if end != wantEnd || esc != wantEsc || fmt.Sprint(err) != fmt.Sprint(wantErr) {
						t.Errorf("scanString(%q, %d) = %d, %v, %v; scanStringFull gives %d, %v, %v", in, pad, end, esc, err, wantEnd, wantEsc, wantErr)
					}
				}
			}
		}
	}
}

// TestStop: stop's lowest flag is the first byte that is a control
// character, '"', '\\' or >= 0x80, for words mixing every kind of byte.
func TestStop(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	kinds := []byte{0, 0x1f, 0x20, '!', '"', '#', '\\', ']', 0x7f, 0x80, 0xff, 'a'}
	for range 200000 {
		var w [8]byte
		for k := range w {
			if r.IntN(2) == 0 {
				w[k] = kinds[r.IntN(len(kinds))]
			} else {
				w[k] = byte(r.IntN(256))
			}
		}
		want := 8
		for k, c := range w {
			if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
				want = k
				break
			}
		}
		got := 8
		if s := stop(binary.LittleEndian.Uint64(w[:])); s != 0 {
			got = bits.TrailingZeros64(s) >> 3
		}
		if got != want {
			t.Fatalf("stop(%q): first flag at %d, want %d", w, got, want)
		}
	}
}

// TestValidObjectSpansMutations: lines of printable ASCII, short and
// around 512 bytes, and the same lines with one byte changed to a
// structural character give ValidObject's verdict and Members' members.
func TestValidObjectSpansMutations(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	chars := []byte(`"{}[],: 0a-.etnx\`)
	for _, base := range []string{
		string(benchLine),
		`{"a":{"b":"}","c":[1,"]",{"d":null}]},"e":"","":true,"f":-1.5e3}`,
		`{"k":"` + strings.Repeat("v", 486) + `"}`, // 500 bytes
		`{"k":"` + strings.Repeat("v", 498) + `"}`, // 512
		`{"k":"` + strings.Repeat("v", 499) + `"}`, // 513
		`{"a":1,"b":"` + strings.Repeat("w", 490) + `","c":2}`,
	} {
		checkValidObjectSpans(t, []byte(base))
		for range 3000 {
			b := []byte(base)
			b[r.IntN(len(b))] = chars[r.IntN(len(chars))]
			checkValidObjectSpans(t, b)
		}
	}
}
