package steps

import (
	"reflect"
	"strings"
	"testing"

	"github.com/etld/etld/internal/stages"
)

func TestFilter(t *testing.T) {
	lines := []string{
		`{"level":"info","n":1}`,
		`{"level":"debug","n":2}`,
		`{"n":3}`,
		`{"level":null,"n":4.5,"tags":["a","b"],"user":{"name":"ann"}}`,
		`{"a.b":1,"n":5,"le\u0076el":"debug"}`,
		`{"level":"warn","level":"debug","n":6}`,
	}
	tests := []struct {
		expr string
		want []int // n of the kept records
	}{
		{`level != "debug"`, []int{1, 3, 4, 6}},
		{`level == nil`, []int{3, 4}},
		{`n > 2 && n < 5`, []int{3, 4}},
		{`type(n) == "int" && n % 2 == 0`, []int{2, 6}}, // integral JSON numbers are int
		{`"a" in tags`, []int{4}},
		{`user?.name == "ann"`, []int{4}},
		{`$env["a.b"] == 1`, []int{5}},
		{`$env.n == 1 || $env["n"] == 2`, []int{1, 2}},
		{`len($env) == 3`, []int{5}}, // a bare $env reads every field; duplicate keys count once
		{`missing == nil`, []int{1, 2, 3, 4, 5, 6}},
		{`let x = n; x == 3`, []int{3}},
		{`true`, []int{1, 2, 3, 4, 5, 6}},
		{`false`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			b := parsed(t, lines...)
			newStep(t, "filter", "'"+strings.ReplaceAll(tt.expr, "'", "''")+"'").Process(b)
			if len(b.Rejects) > 0 {
				t.Fatalf("rejects: %q", rejectErrors(b.Rejects))
			}
			var got []int
			for _, r := range b.Records {
				n := decodeRecord(t, r.Raw)["n"].(float64)
				got = append(got, int(n))
				if !r.Parsed {
					t.Errorf("record lost Parsed")
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("kept n = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFilterBadRecords(t *testing.T) {
	tests := []struct {
		expr    string
		wantErr string
	}{
		{`flag`, "filter: expression returned string, want bool"},
		{`len(n) > 0`, "filter: invalid argument for len (type float64) (1:1)"},
		{`n / 0 > x.y`, "filter: "},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			b := parsed(t, `{"flag":true,"n":1.5}`, `{"flag":"yes","n":1.5}`)
			newStep(t, "filter", "'"+tt.expr+"'").Process(b)
			if tt.expr == "flag" {
				if len(b.Records) != 1 || len(b.Rejects) != 1 {
					t.Fatalf("records %q rejects %q", rawLines(b.Records), rejectErrors(b.Rejects))
				}
			} else if len(b.Records) != 0 || len(b.Rejects) != 2 {
				t.Fatalf("records %q rejects %q", rawLines(b.Records), rejectErrors(b.Rejects))
			}
			got := b.Rejects[0].Err.Error()
			if !strings.HasPrefix(got, tt.wantErr) || strings.Contains(got, "\n") {
				t.Fatalf("error %q, want one line starting with %q", got, tt.wantErr)
			}
		})
	}
}

func TestFilterUnparsed(t *testing.T) {
	b := readBatch(t, `{"level":"debug"}`, `plain text`)
	newStep(t, "filter", `'level != "debug"'`).Process(b)
	if got := rawLines(b.Records); !reflect.DeepEqual(got, []string{`{"level":"debug"}`, `plain text`}) {
		t.Fatalf("an unparsed record has no fields, so both are kept: got %q", got)
	}
	b = readBatch(t, `x`)
	newStep(t, "filter", `'level == "debug"'`).Process(b)
	if len(b.Records) != 0 || len(b.Rejects) != 0 {
		t.Fatalf("records %q rejects %q", rawLines(b.Records), rejectErrors(b.Rejects))
	}
}

func TestFilterConfigErrors(t *testing.T) {
	tests := []struct {
		src     string
		wantErr string
		field   bool // a *stages.FieldError for the step itself
	}{
		{`'"abc"'`, "filter: expression returns string, want bool", true},
		{`'1 + 2'`, "filter: expression returns int, want bool", true},
		{`'level =='`, "filter: unexpected token EOF (1:8)", true},
		{`''`, "filter: empty expression", true},
		{`{a: 1}`, "filter: want an expression string", false},
		{`[x]`, "filter: want an expression string", false},
		{`null`, "filter: empty expression", true},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			_, err := loadConfig(t, "filter", tt.src)
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want prefix %q", err, tt.wantErr)
			}
			if tt.field {
				if fe := fieldErr(t, err); fe.Field != "" {
					t.Fatalf("field = %q, want the step itself", fe.Field)
				}
			}
		})
	}
	// A config built in Go is compiled by NewStep.
	f, _ := registry(t).Lookup(stages.KindStep, "filter")
	if _, err := f.NewStep(stages.Settings{}, &FilterConfig{Expr: "1"}); err == nil {
		t.Fatal("NewStep accepted a non-bool filter")
	}
	if _, err := f.NewStep(stages.Settings{}, &FilterConfig{Expr: "x > 1"}); err != nil {
		t.Fatal(err)
	}
}

func TestReadFields(t *testing.T) {
	tests := []struct {
		expr string
		want []string
		all  bool
	}{
		{`level != "debug"`, []string{"level"}, false},
		{`int(amount * 100) + len(msg) + amount`, []string{"amount", "msg"}, false},
		{`upper(user.name) == "X" && user.id > 0`, []string{"user"}, false},
		{`all(tags, # != "x") && map(items, .id)[0] == 1`, []string{"tags", "items"}, false},
		{`let x = a; x + b`, []string{"a", "b"}, false},
		{`$env["a.b"] + $env.c`, []string{"a.b", "c"}, false},
		{`$env[k] == 1`, []string{"k"}, true},
		{`now() > date("2020-01-01")`, nil, false},
		{`foo(bar)`, []string{"bar"}, false},
	}
	for _, tt := range tests {
		p, err := compileExpr(tt.expr)
		if err != nil {
			t.Fatalf("%s: %v", tt.expr, err)
		}
		if !reflect.DeepEqual(p.fields, tt.want) || p.allFields != tt.all {
			t.Errorf("%s: fields %q all %v, want %q %v", tt.expr, p.fields, p.allFields, tt.want, tt.all)
		}
	}
}

// TestFilterCompareFastPath checks that `field == literal` and
// `field != literal` take the fast path and keep exactly the records the
// expression VM keeps, over values of every JSON type, escaped strings,
// numbers written in several ways, duplicate keys, absent fields and
// unparsed records.
func TestFilterCompareFastPath(t *testing.T) {
	lines := []string{
		`{"v":"debug"}`, `{"v":"de\u0062ug"}`, `{"v":"Debug"}`, `{"v":""}`, `{"v":"é"}`, `{"v":"\u00e9"}`,
		`{"v":1}`, `{"v":1.0}`, `{"v":1e0}`, `{"v":-0}`, `{"v":0}`, `{"v":2.5}`, `{"v":25e-1}`,
		`{"v":9223372036854775808}`, `{"v":true}`, `{"v":false}`, `{"v":null}`,
		`{"v":[]}`, `{"v":["debug"]}`, `{"v":{}}`, `{"v":{"a":1}}`,
		`{}`, `{"w":"debug"}`, `{"v":"debug","v":"info"}`, `{"v":"info","v":"debug"}`,
		`{"\u0076":"debug"}`, `{ "v" : "debug" }`,
	}
	exprs := []string{
		`v != "debug"`, `v == "debug"`, `"debug" == v`, `"debug" != v`, `v == ""`, `v == "é"`,
		`v == 1`, `v != 1`, `v == 1.0`, `v == 0`, `v == 2.5`, `v == 9223372036854775807`,
		`v == true`, `v != false`, `v == nil`, `nil != v`, `w == nil`, `v == "de" + "bug"`,
	}
	for _, e := range exprs {
		t.Run(e, func(t *testing.T) {
			cfg, err := loadConfig(t, "filter", "'"+e+"'")
			if err != nil {
				t.Fatal(err)
			}
			fast := cfg.(*FilterConfig)
			if fast.cmp == nil {
				t.Fatalf("%s does not take the fast path", e)
			}
			slow := *fast
			slow.cmp = nil
			for _, unparsed := range []bool{false, true} {
				var want, got []string
				for i, st := range []*FilterConfig{fast, &slow} {
					f := &filter{cfg: st}
					f.pool.New = func() any { return newExprScratch(&st.spec) }
					b := parsed(t, lines...)
					if unparsed {
						b = readBatch(t, lines...)
					}
					f.Process(b)
					if len(b.Rejects) > 0 {
						t.Fatalf("rejects: %q", rejectErrors(b.Rejects))
					}
					if i == 0 {
						got = rawLines(b.Records)
					} else {
						want = rawLines(b.Records)
					}
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("unparsed=%v: fast path keeps %q, the VM keeps %q", unparsed, got, want)
				}
			}
		})
	}
	for _, e := range []string{`v > 1`, `v == w`, `$env["v"] == 1`, `not (v == 1)`, `v == [1]`, `v == 1 && w == 2`, `len == nil`} {
		cfg, err := loadConfig(t, "filter", "'"+e+"'")
		if err != nil {
			t.Fatal(err)
		}
		if cfg.(*FilterConfig).cmp != nil {
			t.Errorf("%s takes the fast path", e)
		}
	}
}
