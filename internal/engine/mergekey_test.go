package engine

import (
	"testing"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// TestSetKeysFieldIndex: the merge keys read through the steps' field
// index are the keys a walk of each record finds, for records indexed or
// not, with the field first, last, escaped, duplicated or missing.
func TestSetKeysFieldIndex(t *testing.T) {
	objs := []string{
		`{"ts":"2026-01-01T00:00:01Z","a":1}`,
		`{"a":"x\"y","ts":1767225602.5}`,
		`{"t\u0073":"2026-01-01T00:00:03Z"}`,
		`{"ts":"2026-01-01T00:00:04Z","ts":"2027-01-01T00:00:00Z"}`,
		`{"a":1}`,
		`{"ts":"bad"}`,
		`{"ts":"2026-01-01T00:00:0\u0037Z"}`,
	}
	b := &stages.Batch{}
	x := stages.NewFieldIndex()
	for i, o := range objs {
		b.Records = append(b.Records, stages.Record{Raw: []byte(o), Parsed: true})
		if i != 1 && i != 5 { // leave some to a walk
			ms, closeBrace, err := jsonrec.Members(b.Records[i].Raw, nil)
			if err != nil {
				t.Fatal(err)
			}
			x.Add(i, b.Records[i].Raw, ms, closeBrace)
		}
	}
	b.SetFieldIndex(x)
	if _, _, ok := b.Fields(0, nil); !ok {
		t.Fatal("record 0 is not indexed: the test would check nothing")
	}
	m := msg{b: b}
	setKeys(&m, "ts")
	want := []int64{1767225601e9, 1767225602.5e9, 1767225603e9, 1767225604e9, noKey, noKey, 1767225607e9}
	for i, w := range want {
		if m.keys[i] != w {
			t.Errorf("record %d %s: key %d, want %d", i, objs[i], m.keys[i], w)
		}
		if k, err := orderKey(b.Records[i].Raw, "ts"); (err == nil && k != w) || (err != nil && w != noKey) {
			t.Errorf("record %d: orderKey %d %v, want %d", i, k, err, w)
		}
	}
}
