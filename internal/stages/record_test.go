package stages

import (
	"slices"
	"testing"

	"github.com/etld/etld/internal/jsonrec"
)

// indexed builds a batch of parsed records with a field index of all of
// them, as a parsing step leaves it.
func indexed(t *testing.T, objs ...string) *Batch {
	t.Helper()
	b := &Batch{}
	x := NewFieldIndex()
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
	ms, closeBrace, ok := b.Fields(i)
	if !ok {
		t.Fatalf("record %d (%s): no index entry", i, b.Records[i].Raw)
	}
	want, wantClose, _ := jsonrec.Members(b.Records[i].Raw, nil)
	if !slices.Equal(ms, want) || closeBrace != wantClose {
		t.Fatalf("record %d (%s): Fields %+v %d, want %+v %d", i, b.Records[i].Raw, ms, closeBrace, want, wantClose)
	}
}

func TestFieldIndex(t *testing.T) {
	b := indexed(t, `{"a":1}`, `{"b":"x","c":2}`, `{}`)
	for i := range b.Records {
		checkFields(t, b, i)
	}

	// A step gives record 1 a new Raw without indexing it: no entry,
	// even when the new text has the same length.
	b.Records[1].Raw = []byte(`{"b":"y","c":3}`)
	if _, _, ok := b.Fields(1); ok {
		t.Error("Fields(1) answered for a Raw it was not made for")
	}
	// Shorter Raw at the same address (a slice of the old one).
	b.Records[0].Raw = b.Records[0].Raw[:2]
	if _, _, ok := b.Fields(0); ok {
		t.Error("Fields(0) answered for a cut Raw")
	}
	checkFields(t, b, 2)

	// Compaction: record 2 moves to index 0, with MoveFields.
	b.Records[0] = b.Records[2]
	b.MoveFields(2, 0)
	b.Records = b.Records[:1]
	checkFields(t, b, 0)
	if _, _, ok := b.Fields(1); ok {
		t.Error("Fields(1) answered past the records")
	}
	if _, _, ok := b.Fields(5); ok {
		t.Error("Fields(5) answered")
	}

	// Moving without MoveFields leaves the entry behind: no answer.
	b = indexed(t, `{"a":1}`, `{"b":2}`)
	b.Records[0] = b.Records[1]
	if _, _, ok := b.Fields(0); ok {
		t.Error("Fields(0) answered for a record moved without its entry")
	}

	// A new index replaces the old one; records it does not cover have
	// no entry.
	b = indexed(t, `{"a":1}`, `{"b":2}`)
	x := NewFieldIndex()
	b.Records[1].Raw = []byte(`{"b":2,"c":3}`)
	ms, closeBrace, _ := jsonrec.Members(b.Records[1].Raw, nil)
	x.Add(1, b.Records[1].Raw, ms, closeBrace)
	b.SetFieldIndex(x)
	checkFields(t, b, 1)
	if _, _, ok := b.Fields(0); ok {
		t.Error("Fields(0) answered from a replaced index")
	}

	// DropFields, and Release, forget the index.
	b.DropFields()
	if _, _, ok := b.Fields(1); ok {
		t.Error("Fields(1) answered after DropFields")
	}
	b = indexed(t, `{"a":1}`)
	b.Release()
	if b.fields != nil {
		t.Error("Release kept the field index")
	}
}
