package engine

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/config"
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
	x := stages.NewFieldIndex(len(objs))
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

// legacyState is the merge state as encoding/json encoded it before
// state wrote it by hand: the reference for TestMergerStateEncoding.
func legacyState(mg *merger) ([]byte, error) {
	st := mergeState{OrderBy: mg.spec.OrderBy}
	if mg.written {
		n := mg.newest
		st.Newest = &n
	}
	for _, f := range mg.feeds {
		if f.head == len(f.q) {
			continue
		}
		fs := mergeFeedState{Source: f.key.source, Path: f.key.path}
		for _, it := range f.q[f.head:] {
			r := &it.rec
			if fs.Origin == "" && r.Origin != nil {
				fs.Origin = r.Origin.Path
			}
			mr := mergeRecord{Offset: r.Offset}
			if r.Parsed && json.Valid(r.Raw) {
				mr.JSON, mr.Orig = r.Raw, r.Line
			} else {
				mr.Line, mr.Raw = r.Raw, true
			}
			fs.Records = append(fs.Records, mr)
		}
		st.Feeds = append(st.Feeds, fs)
	}
	return json.Marshal(&st)
}

// stateAndLegacy returns mg's state and legacyState's, as written and
// decoded.
func stateAndLegacy(t *testing.T, mg *merger) (got, want []byte, gs, ws mergeState) {
	t.Helper()
	got, err := mg.state()
	if err != nil {
		t.Fatal(err)
	}
	if want, err = legacyState(mg); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got, &gs); err != nil {
		t.Fatalf("state %s: %v", got, err)
	}
	if err := json.Unmarshal(want, &ws); err != nil {
		t.Fatal(err)
	}
	return got, want, gs, ws
}

// TestMergerStateEncoding: the hand-written merge state decodes to what
// encoding/json wrote, for parsed, unparsed, malformed and empty records,
// names that need escapes, and with or without a newest key.
func TestMergerStateEncoding(t *testing.T) {
	for _, written := range []bool{false, true} {
		r := newMergeRig(t, spec(func(s *config.MergeSpec) { s.OrderBy = `t"s` }), "s", "q\"x")
		g := r.source("s", true, "a")
		g2 := r.source("q\"x", true, "dir/\"b\n\u2028<&>")
		o := &stages.Origin{Source: "s", Path: "a"}
		b := &stages.Batch{Records: []stages.Record{
			{Raw: []byte(`{ "t\"s" : 1, "x" : "y \u00e9" }`), Line: []byte("t=1 x=y"), Parsed: true, Origin: o, Offset: 0},
			{Raw: []byte(`{"t\"s":2}`), Parsed: true, Origin: o, Offset: 8},
			{Raw: []byte(`{"t\"s":3}`), Line: []byte{}, Parsed: true, Origin: o, Offset: 18},
		}}
		if bad := r.mg.add(msg{b: b, t: g.take("a", b)}, r.now, nil); len(bad) > 0 {
			t.Fatal(bad[0].Err)
		}
		// Records the merge never parses (no key) are rejected by add;
		// queue unparsed and malformed ones directly, as a restore of an
		// old state may.
		o2 := &stages.Origin{Source: "q\"x", Path: "dir/\"b\n\u2028<&>"}
		b2 := &stages.Batch{Records: []stages.Record{
			{Raw: []byte("raw line \x00\xfe"), Origin: o2, Offset: 3},
			{Raw: []byte(`{"t\"s":4,`), Parsed: true, Origin: o2, Offset: 5},
			{Raw: nil, Origin: nil, Offset: -1},
		}}
		f := r.mg.feed(feedKey{"q\"x", "dir/\"b\n\u2028<&>"}, r.now)
		hb := &heldBatch{b: b2, t: g2.take("dir/\"b\n\u2028<&>", b2), arrived: r.now}
		for i := range b2.Records {
			f.q = append(f.q, item{rec: b2.Records[i]})
			f.keys = append(f.keys, int64(10+i))
		}
		f.ends = append(f.ends, batchEnd{hb, len(f.q) - 1})
		if written {
			r.mg.newest, r.mg.written = 42, true
		}
		got, want, gs, ws := stateAndLegacy(t, r.mg)
		slices.SortFunc(gs.Feeds, func(a, b mergeFeedState) int { return strings.Compare(a.Source, b.Source) })
		slices.SortFunc(ws.Feeds, func(a, b mergeFeedState) int { return strings.Compare(a.Source, b.Source) })
		if !reflect.DeepEqual(gs, ws) {
			t.Fatalf("state\n%s\ndecodes otherwise than encoding/json's\n%s", got, want)
		}
		if len(gs.Feeds) != 2 || len(gs.Feeds[1].Records) != 3 {
			t.Fatalf("state %s: want 2 feeds, 3 records in s", got)
		}
	}
}

// flagStep records the batch's IndexFields at each call.
type flagStep struct{ got *[]bool }

func (s flagStep) Process(b *stages.Batch) { *s.got = append(*s.got, b.IndexFields) }

// TestWorkerIndexFields: a worker asks its steps for a field index only
// when something reads it after them: a later step, or the merge key;
// and the batch leaves the worker without one.
func TestWorkerIndexFields(t *testing.T) {
	for _, tc := range []struct {
		orderBy string
		want    []bool
	}{{"", []bool{true, true, false}}, {"ts", []bool{true, true, true}}} {
		var got []bool
		w := &workerRunner{id: "w", steps: []stages.Step{flagStep{&got}, flagStep{&got}, flagStep{&got}}, orderBy: tc.orderBy,
			out: &emitter{stage: "w", m: NewMetrics().stage("p", "w"), badLog: zerolog.Nop()}}
		b := &stages.Batch{Records: []stages.Record{{Raw: []byte(`{"ts":1}`), Parsed: true}}}
		x := stages.NewFieldIndex(1)
		x.Add(0, b.Records[0].Raw, []jsonrec.Member{{Key: 1, KeyEnd: 5, Val: 6, End: 7}}, 7)
		b.SetFieldIndex(x)
		m := msg{b: b}
		w.process(&m)
		if !slices.Equal(got, tc.want) {
			t.Errorf("order_by %q: IndexFields %v, want %v", tc.orderBy, got, tc.want)
		}
		if b.IndexFields {
			t.Error("IndexFields still set after the steps")
		}
		if _, _, ok := b.Fields(0, nil); ok {
			t.Error("the batch left the worker with its field index")
		}
		if tc.orderBy != "" && (len(m.keys) != 1 || m.keys[0] != 1e9) {
			t.Errorf("keys %v", m.keys)
		}
	}
}

// TestMergerStateIndexedRecords: records whose keys were read through a
// field index (so their step validated them) are queued as known-valid,
// and the state copies them unchecked yet decodes to what encoding/json
// wrote: compacted when they have spaces, with their original line when
// it differs. A batch with one record the steps did not index is
// validated as before.
func TestMergerStateIndexedRecords(t *testing.T) {
	r := newMergeRig(t, spec(nil), "s")
	g := r.source("s", true, "a", "b")
	batch := func(path string, indexed func(i int) bool, objs ...string) msg {
		o := &stages.Origin{Source: "s", Path: path}
		b := &stages.Batch{}
		x := stages.NewFieldIndex(len(objs))
		for i, obj := range objs {
			rec := stages.Record{Raw: []byte(obj), Parsed: true, Origin: o, Offset: int64(100 * i)}
			if i == 1 {
				rec.Line = []byte("ts=2 a=x") // parsed from text: its line differs
			} else {
				rec.Line = rec.Raw // parse_json of a compact line: the same bytes
			}
			b.Records = append(b.Records, rec)
			if indexed(i) {
				ms, closeBrace, err := jsonrec.Members(rec.Raw, nil)
				if err != nil {
					t.Fatal(err)
				}
				x.Add(i, rec.Raw, ms, closeBrace)
			}
		}
		b.SetFieldIndex(x)
		m := msg{b: b, t: g.take(path, b)}
		setKeys(&m, "ts")
		b.DropFields() // as the worker does
		return m
	}
	all := func(int) bool { return true }
	ma := batch("a", all, `{"ts":1,"a":"x"}`, `{ "ts" : 2, "a" : "x \u00e9" }`, `{"ts":3}`)
	mb := batch("b", func(i int) bool { return i != 2 }, `{"ts":4}`, `{"ts":5}`, `{"ts":6}`)
	if !ma.keysIndexed || mb.keysIndexed {
		t.Fatalf("keysIndexed %v and %v, want true and false", ma.keysIndexed, mb.keysIndexed)
	}
	for _, m := range []msg{ma, mb} {
		if bad := r.mg.add(m, r.now, nil); len(bad) > 0 {
			t.Fatal(bad[0].Err)
		}
	}
	for path, want := range map[string]bool{"a": true, "b": false} {
		f := r.mg.feeds[feedKey{"s", path}]
		for i := f.head; i < len(f.q); i++ {
			if f.q[i].valid != want {
				t.Fatalf("feed %s record %d: valid %v, want %v", path, i, f.q[i].valid, want)
			}
		}
	}
	got, want, gs, ws := stateAndLegacy(t, r.mg)
	for _, fs := range ws.Feeds {
		for i := range fs.Records {
			if mr := &fs.Records[i]; string(mr.Orig) == string(mr.JSON) {
				mr.Orig = nil // state leaves out an original line that is the JSON itself
			}
		}
	}
	slices.SortFunc(gs.Feeds, func(a, b mergeFeedState) int { return strings.Compare(a.Path, b.Path) })
	slices.SortFunc(ws.Feeds, func(a, b mergeFeedState) int { return strings.Compare(a.Path, b.Path) })
	if !reflect.DeepEqual(gs, ws) {
		t.Fatalf("state\n%s\ndecodes otherwise than encoding/json's\n%s", got, want)
	}
	if len(gs.Feeds) != 2 || string(gs.Feeds[0].Records[1].JSON) != `{"ts":2,"a":"x \u00e9"}` || gs.Feeds[0].Records[1].Orig == nil || gs.Feeds[0].Records[0].Orig != nil {
		t.Fatalf("state %s: want feed a's second record compacted with its line, the first without", got)
	}
}
