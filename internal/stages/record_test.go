package stages

import (
	"slices"
	"testing"
	"unsafe"

	"github.com/etld/etld/internal/jsonrec"
)

// indexed builds a batch of parsed records with a field index of all of
// them, as a parsing step leaves it.
func indexed(t *testing.T, objs ...string) *Batch {
	t.Helper()
	b := &Batch{}
	x := NewFieldIndex(len(objs))
	for i, o := range objs {
		b.Records = append(b.Records, Record{Raw: []byte(o), Parsed: true})
		ms, closeBrace, err := jsonrec.Members(b.Records[i].Raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		x.Add(i, b.Records[i].Raw, ms, closeBrace)
	}
	b.SetFieldIndex(x)
	return b
}

// checkFields fails t unless Fields(i) gives what a walk of record i's
// Raw finds.
func checkFields(t *testing.T, b *Batch, i int) {
	t.Helper()
	ms, closeBrace, ok := b.Fields(i, nil)
	if !ok {
		t.Fatalf("record %d (%s): no index entry", i, b.Records[i].Raw)
	}
	want, wantClose, _ := jsonrec.Members(b.Records[i].Raw, nil)
	if !slices.Equal(ms, want) || closeBrace != wantClose {
		t.Fatalf("record %d (%s): Fields %+v %d, want %+v %d", i, b.Records[i].Raw, ms, closeBrace, want, wantClose)
	}
}

func TestFieldIndex(t *testing.T) {
	b := indexed(t, `{"a":1}`, `{"b":"x","c":2}`, `{}`, `{"k\u0065y" : "v\"al", "n":[1], "key":3}`)
	for i := range b.Records {
		checkFields(t, b, i)
	}
	// Field finds the first member of a name, escaped or not.
	for _, tt := range []struct {
		i           int
		name, value string
		found       bool
	}{{1, "c", "2", true}, {3, "key", `"v\"al"`, true}, {3, "n", "[1]", true}, {0, "b", "", false}, {2, "a", "", false}} {
		m, found, ok := b.Field(tt.i, tt.name)
		if !ok || found != tt.found || (found && string(b.Records[tt.i].Raw[m.Val:m.End]) != tt.value) {
			t.Errorf("Field(%d, %q) = %+v %v %v, want %s", tt.i, tt.name, m, found, ok, tt.value)
		}
	}
	b.Records = b.Records[:3]

	// A step gives record 1 a new Raw without indexing it: no entry,
	// even when the new text has the same length.
	b.Records[1].Raw = []byte(`{"b":"y","c":3}`)
	if _, _, ok := b.Fields(1, nil); ok {
		t.Error("Fields(1) answered for a Raw it was not made for")
	}
	// Shorter Raw at the same address (a slice of the old one).
	b.Records[0].Raw = b.Records[0].Raw[:2]
	if _, _, ok := b.Fields(0, nil); ok {
		t.Error("Fields(0) answered for a cut Raw")
	}
	checkFields(t, b, 2)

	// Compaction: record 2 moves to index 0, with MoveFields.
	b.Records[0] = b.Records[2]
	b.MoveFields(2, 0)
	b.Records = b.Records[:1]
	checkFields(t, b, 0)
	if _, _, ok := b.Fields(1, nil); ok {
		t.Error("Fields(1) answered past the records")
	}
	if _, _, ok := b.Fields(5, nil); ok {
		t.Error("Fields(5) answered")
	}

	// Moving without MoveFields leaves the entry behind: no answer.
	b = indexed(t, `{"a":1}`, `{"b":2}`)
	b.Records[0] = b.Records[1]
	if _, _, ok := b.Fields(0, nil); ok {
		t.Error("Fields(0) answered for a record moved without its entry")
	}

	// A new index replaces the old one; records it does not cover have
	// no entry.
	b = indexed(t, `{"a":1}`, `{"b":2}`)
	x := NewFieldIndex(2)
	b.Records[1].Raw = []byte(`{"b":2,"c":3}`)
	ms, closeBrace, _ := jsonrec.Members(b.Records[1].Raw, nil)
	x.Add(1, b.Records[1].Raw, ms, closeBrace)
	b.SetFieldIndex(x)
	checkFields(t, b, 1)
	if _, _, ok := b.Fields(0, nil); ok {
		t.Error("Fields(0) answered from a replaced index")
	}

	// DropFields, and Release, forget the index.
	b.DropFields()
	if _, _, ok := b.Fields(1, nil); ok {
		t.Error("Fields(1) answered after DropFields")
	}
	b = indexed(t, `{"a":1}`)
	b.Release()
	if b.fields != nil {
		t.Error("Release kept the field index")
	}
}

// TestFieldLikeFind checks Field against jsonrec.Find on keys that differ
// only in length, in escapes, or repeat, and on names longer than the
// record: Field tells keys apart by their length before it reads them.
func TestFieldLikeFind(t *testing.T) {
	objs := []string{
		`{"level":"info","lev":1,"levels":2}`,
		`{"l\u0065vel":"esc","level":"plain"}`,
		`{"level":"first","level":"second"}`,
		`{"a":1,"ab":2,"abc":3,"\u0061":4}`,
		`{"x\"y":1,"x\\y":2,"":3}`,
		`{}`,
		`{"k":1}`,
	}
	b := indexed(t, objs...)
	names := []string{"level", "lev", "levels", "a", "ab", "abc", `x"y`, `x\y`, "", "k", "kk", "longer than any record here, by far"}
	for i, o := range objs {
		for _, name := range names {
			want, wantFound, err := jsonrec.Find([]byte(o), name)
			if err != nil {
				t.Fatal(err)
			}
			m, found, ok := b.Field(i, name)
			if !ok || found != wantFound || (found && m != want) {
				t.Errorf("Field(%s, %q) = %+v %v %v, want %+v %v", o, name, m, found, ok, want, wantFound)
			}
		}
	}
}

func TestReleaseUnused(t *testing.T) {
	lines := NewBuffer(64 << 10)
	lines = append(lines, "line one|line two"...)
	arena1 := NewBuffer(64 << 10) // rewritten since: nothing points into it
	arena1 = append(arena1, `{"a":1}{"a":2}`...)
	arena2 := NewBuffer(64 << 10)
	arena2 = append(arena2, `{"a":1,"t":0}{"a":2,"t":0}`...)
	rejects := NewBuffer(64 << 10)
	rejects = append(rejects, "bad"...)
	b := &Batch{Records: []Record{
		{Raw: arena2[0:13], Line: lines[0:8], Parsed: true},
		{Raw: arena2[13:26], Line: lines[9:17], Parsed: true},
		{Raw: arena1[7:7], Line: []byte{}, Parsed: true}, // empty: points nowhere
	}, Rejects: []Reject{{Record: Record{Raw: rejects[:3]}}}}
	for _, buf := range [][]byte{lines, arena1, arena2, rejects} {
		b.Own(buf)
	}
	b.ReleaseUnused()
	var kept []*byte
	for _, buf := range b.owned {
		kept = append(kept, unsafe.SliceData(buf))
	}
	want := []*byte{unsafe.SliceData(lines), unsafe.SliceData(arena2), unsafe.SliceData(rejects)}
	if !slices.Equal(kept, want) {
		t.Fatalf("kept %v, want %v (lines, arena2, rejects)", kept, want)
	}
	if string(b.Records[1].Raw) != `{"a":2,"t":0}` || string(b.Records[1].Line) != "line two" || string(b.Rejects[0].Record.Raw) != "bad" {
		t.Fatal("a kept buffer was overwritten")
	}
	b.Release()

	// Every buffer in use, one only by the last record's Line and one
	// only by a reject: all are kept.
	src1, src2, arena, rej := NewBuffer(64<<10), NewBuffer(64<<10), NewBuffer(64<<10), NewBuffer(64<<10)
	src1, src2 = append(src1, "one|two"...), append(src2, "three"...)
	arena = append(arena, `{"n":1}{"n":2}{"n":3}`...)
	rej = append(rej, "bad"...)
	b = &Batch{Records: []Record{
		{Raw: arena[0:7], Line: src1[0:3], Parsed: true},
		{Raw: arena[7:14], Line: src1[4:7], Parsed: true},
		{Raw: arena[14:21], Line: src2[0:5], Parsed: true},
	}, Rejects: []Reject{{Record: Record{Raw: rej[:3]}}}}
	for _, buf := range [][]byte{src1, src2, arena, rej} {
		b.Own(buf)
	}
	b.ReleaseUnused()
	if len(b.owned) != 4 {
		t.Fatalf("kept %d of 4 buffers in use", len(b.owned))
	}
	b.Release()
}
