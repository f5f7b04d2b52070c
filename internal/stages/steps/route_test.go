package steps

import (
	"slices"
	"strings"
	"testing"

	"github.com/etld/etld/internal/stages"
)

func TestRouter(t *testing.T) {
	r, err := NewRouter([]string{"errors", "slow", "no_debug"}, []string{`level == "error"`, `int(duration_ms) > 1000`, `level != "debug"`})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		raw    string
		parsed bool
		mask   uint64 // 0: rejected
		err    string
	}{
		{"error", `{"level":"error","duration_ms":5}`, true, 1 | 4, ""},
		{"error and slow", `{"level":"error","duration_ms":"1500"}`, true, 1 | 2 | 4, ""},
		{"debug", `{"level":"debug","duration_ms":5}`, true, Unmatched, ""},
		{"escaped level", `{"level":"err\u006fr","duration_ms":5}`, true, 1 | 4, ""},
		{"bad int", `{"level":"info","duration_ms":"oops"}`, true, 0, "route slow: "},
		{"missing field", `{"level":"info"}`, true, 0, "route slow: "},
		{"not parsed", `level=error`, false, 0, "route slow: "},
		{"malformed JSON", `{"level":`, true, 0, "routes: malformed JSON record"},
		{"huge number", `{"level":"debug","duration_ms":-1e400}`, true, Unmatched, ""}, // int(-Inf) is not > 1000; no panic
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &stages.Batch{Records: []stages.Record{{Raw: []byte(tc.raw), Parsed: tc.parsed}}}
			masks := r.Route(b, nil)
			if tc.mask == 0 {
				if len(b.Records) != 0 || len(masks) != 0 || len(b.Rejects) != 1 {
					t.Fatalf("records %d, masks %v, rejects %d: want the record rejected", len(b.Records), masks, len(b.Rejects))
				}
				if !strings.Contains(b.Rejects[0].Err.Error(), tc.err) {
					t.Errorf("error %q, want it to contain %q", b.Rejects[0].Err, tc.err)
				}
				return
			}
			if len(b.Rejects) != 0 || !slices.Equal(masks, []uint64{tc.mask}) {
				t.Errorf("masks %v (rejects %v), want [%b]", masks, b.Rejects, tc.mask)
			}
		})
	}
}

func TestRouterKeepsOrderAcrossRejects(t *testing.T) {
	r, err := NewRouter([]string{"big"}, []string{`n > 1`})
	if err != nil {
		t.Fatal(err)
	}
	b := &stages.Batch{}
	for _, raw := range []string{`{"n":2}`, `{"n":"x"}`, `{"n":0}`, `{"n":5}`} {
		b.Records = append(b.Records, stages.Record{Raw: []byte(raw), Parsed: true})
	}
	masks := r.Route(b, make([]uint64, 0, 4))
	var got []string
	for _, rec := range b.Records {
		got = append(got, string(rec.Raw))
	}
	if !slices.Equal(got, []string{`{"n":2}`, `{"n":0}`, `{"n":5}`}) || !slices.Equal(masks, []uint64{1, Unmatched, 1}) || len(b.Rejects) != 1 {
		t.Errorf("records %v masks %v rejects %d", got, masks, len(b.Rejects))
	}
}

func TestRouterCompile(t *testing.T) {
	for src, want := range map[string]string{
		"":             "empty expression",
		"1 + 2":        "expression returns int, want bool",
		`level ==`:     "unexpected token",
		`level == "x"`: "",
		`level`:        "", // unknown at load: checked per record
	} {
		_, err := CompileRoute(src)
		if (err == nil) != (want == "") || err != nil && !strings.Contains(err.Error(), want) {
			t.Errorf("CompileRoute(%q) = %v, want %q", src, err, want)
		}
	}
	if _, err := NewRouter(make([]string, MaxRoutes+1), make([]string, MaxRoutes+1)); err == nil {
		t.Error("NewRouter accepted more than MaxRoutes routes")
	}
}
