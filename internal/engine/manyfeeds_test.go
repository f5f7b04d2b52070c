package engine

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"github.com/etld/etld/internal/stages"
)

// TestMergeManyFeedsPrefix: 300 sorted finite feeds of one source, their
// batches delivered in random order and their ends announced at random
// times after their last batch. After every step the merge's output is a
// prefix of the exact merge (key, then feed, then input order): a holding
// feed the merge lost track of would let a record out too early; and once
// every feed ended, everything is out: a feed it wrongly kept as holding
// would stall it.
func TestMergeManyFeedsPrefix(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	r := newMergeRig(t, spec(nil), "s")
	const feeds = 300
	type rec struct {
		key  int
		feed string
	}
	var all []rec
	pending := make([][]int, feeds) // keys not delivered yet, per feed
	paths := make([]string, feeds)
	for i := range feeds {
		paths[i] = fmt.Sprintf("f%03d", i)
		k := rng.Intn(50)
		for range 1 + rng.Intn(40) {
			k += rng.Intn(4) // equal keys within and across feeds
			pending[i] = append(pending[i], k)
			all = append(all, rec{k, paths[i]})
		}
	}
	r.source("s", true, paths...)
	slices.SortStableFunc(all, func(a, b rec) int { return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.feed, b.feed)) })
	want := make([]string, len(all))
	for i, x := range all {
		want[i] = fmt.Sprintf("%d/s%s", x.key, x.feed)
	}
	var got []string
	check := func(step string) {
		out, _ := r.take(false)
		got = append(got, out...)
		if len(got) > len(want) || !slices.Equal(got, want[:len(got)]) {
			t.Fatalf("%s: output is not a prefix of the merge (seed %d):\ngot  %q\nwant %q", step, seed, tailOf(got), tailOf(want[:min(len(want), len(got))]))
		}
	}
	ended := make([]bool, feeds)
	for left := feeds; left > 0; {
		i := rng.Intn(feeds)
		switch {
		case ended[i]:
			continue
		case len(pending[i]) == 0:
			r.gates["s"].End(paths[i])
			ended[i] = true
			left--
		default:
			n := min(len(pending[i]), 1+rng.Intn(5))
			r.send("s", paths[i], pending[i][:n]...)
			pending[i] = pending[i][n:]
		}
		check(fmt.Sprintf("after feed %s", paths[i]))
	}
	check("after every feed ended")
	if len(got) != len(want) {
		t.Fatalf("%d of %d records written once every feed ended: the merge still waits for a feed", len(got), len(want))
	}
	if n := len(r.mg.feeds); n != 0 {
		t.Errorf("%d feeds still known after all ended and were written", n)
	}
	if r.board.records != 0 || r.board.open != 0 {
		t.Errorf("board: %d records in flight, %d feeds open at the end", r.board.records, r.board.open)
	}
}

func tailOf(s []string) []string { return s[max(0, len(s)-5):] }

// TestMergeStateSkipsSameLine: a parsed record whose original line is
// its JSON (parse_json of a compact line) is saved once, without "orig";
// restored, it reads the same as before. One with another line keeps it.
func TestMergeStateSkipsSameLine(t *testing.T) {
	r := newMergeRig(t, spec(nil), "s")
	g := r.source("s", true, "a")
	o := &stages.Origin{Source: "s", Path: "a"}
	b := &stages.Batch{Records: []stages.Record{
		{Raw: []byte(`{"ts":1,"m":"a b"}`), Line: []byte(`{"ts":1,"m":"a b"}`), Parsed: true, Origin: o},
		{Raw: []byte(`{"ts":2}`), Line: []byte(`ts=2`), Parsed: true, Origin: o},
		{Raw: []byte(`{ "ts": 3 }`), Line: []byte(`{ "ts": 3 }`), Parsed: true, Origin: o},
	}}
	if bad := r.mg.add(msg{b: b, t: g.take("a", b)}, r.now, nil); len(bad) > 0 {
		t.Fatal(bad[0].Err)
	}
	st, err := r.mg.state()
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(st, []byte(`"orig"`)); n != 2 {
		t.Errorf("state %s: %d records with orig, want 2 (the line that is the JSON has none)", st, n)
	}
	r2 := newMergeRig(t, spec(nil), "s")
	if _, err := r2.mg.restore(st, r2.now); err != nil {
		t.Fatal(err)
	}
	r2.mg.take(r2.now, true, 100)
	var lines []string
	for i := range r2.mg.out {
		lines = append(lines, string(r2.mg.out[i].Original()))
	}
	if want := []string{`{"ts":1,"m":"a b"}`, `ts=2`, `{ "ts": 3 }`}; !slices.Equal(lines, want) {
		t.Errorf("restored records' lines %q, want %q", lines, want)
	}
}

// TestHasSpace: whitespace inside strings (escaped quotes too) does not
// count.
func TestHasSpace(t *testing.T) {
	for in, want := range map[string]bool{
		`{"a":"b c"}`: false, `{"a":"\" x"}`: false, `{"a":"\\"}`: false,
		`{ "a":1}`: true, "{\"a\":1}\n": true, `{"a":"\\" , "b":1}`: true, ``: true,
	} {
		if got := hasSpace([]byte(in)); got != want {
			t.Errorf("hasSpace(%q) = %v, want %v", in, got, want)
		}
	}
}
