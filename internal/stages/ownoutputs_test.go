package stages

import (
	"fmt"
	"sync"
	"testing"
)

func TestOwnOutputs(t *testing.T) {
	var none *OwnOutputs
	if _, ok := none.Match("/x/out.log"); ok {
		t.Error("a nil set matches")
	}
	o := &OwnOutputs{}
	o.Set([]OwnOutput{{Path: "/x/./out.log", Pipeline: "p", Stage: "out"}, {Path: "/y/bad.jsonl", Pipeline: "q", Stage: "bad"}})
	for path, want := range map[string]string{
		"/x/out.log":            "p/out",
		"/x/sub/../out.log":     "p/out",
		"/x/out.log.000007.gz":  "p/out",
		"/y/bad.jsonl.000001":   "q/bad",
		"/x/out.log.old":        "",
		"/x/app.log":            "",
		"/y/bad.jsonl.000001.x": "",
	} {
		out, ok := o.Match(path)
		if got := map[bool]string{true: out.String()}[ok]; got != want {
			t.Errorf("Match(%q) = %q, want %q", path, got, want)
		}
	}
	o.Set(nil)
	if _, ok := o.Match("/x/out.log"); ok {
		t.Error("Set(nil) keeps the old set")
	}
}

// TestOwnOutputsConcurrent: the runtime sets while sources match (-race).
func TestOwnOutputsConcurrent(t *testing.T) {
	o := &OwnOutputs{}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			o.Set([]OwnOutput{{Path: fmt.Sprintf("/x/%d.log", i)}})
		}
	})
	for range 200 {
		o.Match("/x/1.log")
	}
	wg.Wait()
}

// BenchmarkOwnOutputsMatch: a file source asks for every file its glob
// matches, at every rescan (every poll tick and directory change).
func BenchmarkOwnOutputsMatch(b *testing.B) {
	o := &OwnOutputs{}
	var outs []OwnOutput
	for i := range 8 {
		outs = append(outs, OwnOutput{Path: fmt.Sprintf("/var/log/etld/out%d.log", i), Pipeline: "p", Stage: "s"})
	}
	o.Set(outs)
	b.ReportAllocs()
	for b.Loop() {
		o.Match("/var/log/nginx/access.log")
		o.Match("/var/log/etld/out7.log.000042.gz")
	}
}
