package stages

import (
	"bytes"
	"testing"
)

// inPlace returns a batch whose records are lines read into one owned
// buffer, as a line source makes them: each Raw points into buf, the
// newline after it included.
func inPlace(text string) (*Batch, []byte) {
	buf := NewBuffer(len(text) + 64)[:len(text)+64]
	copy(buf, text)
	b := &Batch{}
	b.Own(buf)
	off := 0
	for off < len(text) {
		i := bytes.IndexByte(buf[off:len(text)], '\n')
		if i < 0 {
			i = len(text) - off
		}
		// Cut like a source cuts: from the line's start, so that an
		// empty line points at its newline (a slice of capacity 0 taken
		// at an offset would keep the buffer's start instead).
		line := buf[off:]
		b.Records = append(b.Records, Record{Raw: line[:i:i], Offset: int64(off)})
		off += i + 1
	}
	return b, buf
}

// lines is what a sink writes for records: each Raw plus a newline.
func lines(recs []Record) []byte {
	var out []byte
	for _, r := range recs {
		out = append(append(out, r.Raw...), '\n')
	}
	return out
}

func TestBatchSpan(t *testing.T) {
	t.Run("one run", func(t *testing.T) {
		b, _ := inPlace("a\n\nccc\n{\"x\":1}\n")
		got, n := b.Span(0)
		if n != 4 || !bytes.Equal(got, lines(b.Records)) {
			t.Fatalf("Span(0) = %q, %d; want every record: %q, 4", got, n, lines(b.Records))
		}
		if got, n := b.Span(2); n != 2 || string(got) != "ccc\n{\"x\":1}\n" {
			t.Fatalf("Span(2) = %q, %d; want the last two records", got, n)
		}
		if cap(got) != len(got) {
			t.Fatalf("Span's result has room after it (cap %d, len %d): an append would overwrite the buffer", cap(got), len(got))
		}
	})
	t.Run("last line without newline", func(t *testing.T) {
		// Stale bytes after the last line must not be taken as its
		// newline unless they are one.
		b, buf := inPlace("one\ntwo\nthree")
		buf[len("one\ntwo\nthree")] = 'X'
		if got, n := b.Span(0); n != 2 || string(got) != "one\ntwo\n" {
			t.Fatalf("Span(0) = %q, %d; want the two lines with a newline", got, n)
		}
		if got, n := b.Span(2); n != 0 || got != nil {
			t.Fatalf("Span(2) = %q, %d; want nothing", got, n)
		}
		buf[len("one\ntwo\nthree")] = '\n' // now it is what the sink would write
		if got, n := b.Span(0); n != 3 || !bytes.Equal(got, lines(b.Records)) {
			t.Fatalf("Span(0) = %q, %d; want all three lines", got, n)
		}
	})
	t.Run("rewritten record ends the run", func(t *testing.T) {
		b, _ := inPlace("a\nb\nc\nd\n")
		b.Records[2].Raw = []byte("C") // a step's new Raw, not in an owned buffer
		if got, n := b.Span(0); n != 2 || string(got) != "a\nb\n" {
			t.Fatalf("Span(0) = %q, %d; want a and b", got, n)
		}
		if _, n := b.Span(2); n != 0 {
			t.Fatalf("Span(2) covers %d records; want 0 (its Raw is not in the buffer)", n)
		}
		if got, n := b.Span(3); n != 1 || string(got) != "d\n" {
			t.Fatalf("Span(3) = %q, %d; want d", got, n)
		}
	})
	t.Run("shortened or reordered records", func(t *testing.T) {
		b, _ := inPlace("abc\ndef\nghi\n")
		b.Records[0].Raw = b.Records[0].Raw[:2] // "ab": no newline after it
		if _, n := b.Span(0); n != 0 {
			t.Fatalf("Span(0) covers %d records after record 0 was cut; want 0", n)
		}
		b, _ = inPlace("abc\ndef\nghi\n")
		b.Records[1], b.Records[2] = b.Records[2], b.Records[1]
		if got, n := b.Span(0); n != 1 || string(got) != "abc\n" {
			t.Fatalf("Span(0) = %q, %d; want abc only (the next record is out of order)", got, n)
		}
		b, _ = inPlace("abc\ndef\n")
		b.Records = append(b.Records, b.Records[1]) // the same line twice
		if _, n := b.Span(1); n != 1 {
			t.Fatalf("Span(1) covers %d records; want 1 (the copy is not after it)", n)
		}
	})
	t.Run("not owned", func(t *testing.T) {
		buf := []byte("a\nb\n")
		b := &Batch{Records: []Record{{Raw: buf[0:1:1]}, {Raw: buf[2:3:3]}}}
		if _, n := b.Span(0); n != 0 {
			t.Fatalf("Span(0) covers %d records of a buffer the batch does not own; want 0", n)
		}
		b = &Batch{Records: []Record{{Raw: nil}}}
		if _, n := b.Span(0); n != 0 {
			t.Fatalf("Span(0) of a nil Raw covers %d records; want 0", n)
		}
		if _, n := b.Span(1); n != 0 {
			t.Fatalf("Span past the records covers %d; want 0", n)
		}
	})
	t.Run("two buffers", func(t *testing.T) {
		b1, _ := inPlace("a\nb\n")
		b2, _ := inPlace("c\nd\n")
		b := &Batch{Records: append(b1.Records, b2.Records...)}
		b.Own(b1.owned[0])
		b.Own(b2.owned[0])
		if got, n := b.Span(0); n != 2 || string(got) != "a\nb\n" {
			t.Fatalf("Span(0) = %q, %d; want the first buffer's lines", got, n)
		}
		if got, n := b.Span(2); n != 2 || string(got) != "c\nd\n" {
			t.Fatalf("Span(2) = %q, %d; want the second buffer's lines", got, n)
		}
	})
}

// marked returns inPlace(text) with its lines marked as their producer
// would (MarkLines): text must end with a newline.
func marked(text string) (*Batch, []byte) {
	b, buf := inPlace(text)
	b.MarkLines(buf[:len(text)], len(b.Records))
	return b, buf
}

func TestBatchSpanMarkedLines(t *testing.T) {
	t.Run("taken without reading the lines", func(t *testing.T) {
		b, buf := marked("a\n\nccc\n{\"x\":1}\n")
		if got, n := b.Span(0); n != 4 || !bytes.Equal(got, lines(b.Records)) || cap(got) != len(got) {
			t.Fatalf("Span(0) = %q (cap %d), %d; want every record: %q, 4", got, cap(got), n, lines(b.Records))
		}
		// Span trusts the mark for the newlines (it does not read them):
		// a byte changed behind the batch's back shows. Unmarked, the
		// run would end before it.
		buf[1] = 'X'
		if got, n := b.Span(0); n != 4 || string(got) != "aX\nccc\n{\"x\":1}\n" {
			t.Fatalf("Span(0) = %q, %d; want the marked run as it is in memory", got, n)
		}
		buf[1] = '\n'
		// From a record inside the run the mark does not apply: the
		// lines are read as without one.
		if got, n := b.Span(2); n != 2 || string(got) != "ccc\n{\"x\":1}\n" {
			t.Fatalf("Span(2) = %q, %d; want the last two records", got, n)
		}
	})
	t.Run("a line cut in two is not taken for two lines", func(t *testing.T) {
		// A step cuts "ab,cd" into "ab" and "cd", one byte apart: the
		// byte between them is a comma, not a newline.
		b, _ := marked("ab,cd\nef\n")
		raw := b.Records[0].Raw
		b.Records = []Record{{Raw: raw[:2:2]}, {Raw: raw[3:5:5]}, b.Records[1]}
		if got, n := b.Span(0); n != 0 {
			t.Fatalf("Span(0) = %q, %d; want nothing (ab is not followed by a newline)", got, n)
		}
		if got, n := b.Span(1); n != 2 || string(got) != "cd\nef\n" {
			t.Fatalf("Span(1) = %q, %d; want cd and ef, read as without a mark", got, n)
		}
	})
	t.Run("fewer or rewritten records", func(t *testing.T) {
		b, _ := marked("a\nb\nc\n")
		b.Records[2].Raw = []byte("C")
		if got, n := b.Span(0); n != 2 || string(got) != "a\nb\n" {
			t.Fatalf("Span(0) = %q, %d; want a and b", got, n)
		}
		b, _ = marked("a\nb\nc\n")
		b.Records = b.Records[:2] // a filter dropped the last line
		if got, n := b.Span(0); n != 2 || string(got) != "a\nb\n" {
			t.Fatalf("Span(0) = %q, %d; want a and b", got, n)
		}
		b, _ = marked("a\nb\nc\n")
		b.Records = b.Records[1:] // a retry after the sink took the first
		if got, n := b.Span(0); n != 2 || string(got) != "b\nc\n" {
			t.Fatalf("Span(0) = %q, %d; want b and c", got, n)
		}
	})
	t.Run("released buffers take their marks along", func(t *testing.T) {
		b, buf := marked("a\nb\n")
		b.Own(NewBuffer(64)) // a buffer no record points into
		b.ReleaseUnused()
		if len(b.runs) != 0 {
			t.Fatalf("%d runs kept after ReleaseUnused released a buffer; want none", len(b.runs))
		}
		buf[3] = 'X' // read again: the run ends at a
		if got, n := b.Span(0); n != 1 || string(got) != "a\n" {
			t.Fatalf("Span(0) = %q, %d; want a only", got, n)
		}
		b.Release()
		if b.runs != nil {
			t.Fatal("Release kept the runs")
		}
	})
}
