package stages

import (
	"bytes"
	"testing"
)

// TestLineRunsSplit checks a batch of line runs against the Records a
// line source makes of the same lines: Len counts them unsplit, SplitRuns
// gives each line (empty ones, a "\r" kept) with its origin and stream
// offset, capacity-limited, and the split records are still one run for
// a sink (Span).
func TestLineRunsSplit(t *testing.T) {
	a := &Origin{Path: "a"}
	bo := &Origin{Path: "b"}
	buf := NewBuffer(64)
	n := copy(buf[:cap(buf)], "x\n\nyz\r\n\nlast\n")
	var b Batch
	b.Own(buf)
	b.AddLines(buf[:7], 3, a, 100) // "x", "", "yz\r"
	b.AddLines(buf[7:n], 2, bo, 0) // "", "last"
	if b.Len() != 5 || len(b.Records) != 0 || b.LineRuns() != 2 || b.LineBytes() != n {
		t.Fatalf("Len %d, Records %d, LineRuns %d, LineBytes %d; want 5, 0, 2, %d", b.Len(), len(b.Records), b.LineRuns(), b.LineBytes(), n)
	}
	if lines, m := b.LineRun(1); string(lines) != "\nlast\n" || m != 2 {
		t.Fatalf("LineRun(1) = %q, %d", lines, m)
	}
	b.SplitRuns()
	want := []struct {
		raw string
		o   *Origin
		off int64
	}{{"x", a, 100}, {"", a, 102}, {"yz\r", a, 103}, {"", bo, 0}, {"last", bo, 1}}
	if b.Len() != len(want) || len(b.Records) != len(want) || b.LineRuns() != 0 {
		t.Fatalf("after SplitRuns: Len %d, Records %d, LineRuns %d", b.Len(), len(b.Records), b.LineRuns())
	}
	for i, w := range want {
		r := b.Records[i]
		if string(r.Raw) != w.raw || r.Origin != w.o || r.Offset != w.off || cap(r.Raw) != len(r.Raw) || r.Parsed || r.Line != nil {
			t.Errorf("record %d = %q %s:%d (cap %d), want %q %s:%d", i, r.Raw, r.Origin.Path, r.Offset, cap(r.Raw), w.raw, w.o.Path, w.off)
		}
	}
	lines, m := b.Span(0)
	if m != 3 || string(lines) != "x\n\nyz\r\n" {
		t.Errorf("Span(0) = %q, %d; want the first run", lines, m)
	}
	if b.LineBytes() != n {
		t.Errorf("LineBytes of the records = %d, want %d", b.LineBytes(), n)
	}
	b.SplitRuns() // a batch of Records stays as it is
	if len(b.Records) != len(want) {
		t.Fatalf("a second SplitRuns changed the records: %d", len(b.Records))
	}
	b.Release()
	if b.Len() != 0 || b.LineRuns() != 0 {
		t.Fatalf("released batch: Len %d, LineRuns %d", b.Len(), b.LineRuns())
	}
}

// TestLineRunsDrop checks what a sink does with a batch of runs: it
// drops the runs it wrote, and what is left is the rest, by Len too.
func TestLineRunsDrop(t *testing.T) {
	o := &Origin{Path: "f"}
	data := []byte("a\nb\nc\nd\ne\n")
	var b Batch
	b.AddLines(data[:4], 2, o, 0)
	b.AddLines(data[4:6], 1, o, 4)
	b.AddLines(data[6:], 2, o, 6)
	b.DropLineRuns(1)
	if b.Len() != 3 || b.LineRuns() != 2 {
		t.Fatalf("after dropping a run: Len %d, LineRuns %d; want 3, 2", b.Len(), b.LineRuns())
	}
	b.SplitRuns()
	var got []byte
	for _, r := range b.Records {
		got = append(append(got, r.Raw...), ' ')
	}
	if string(got) != "c d e " || b.Records[0].Offset != 4 || b.Records[2].Offset != 8 {
		t.Fatalf("left: %q (offsets %d, %d)", got, b.Records[0].Offset, b.Records[2].Offset)
	}
	b.DropLineRuns(0)
	var c Batch
	c.AddLines(data, 5, o, 0)
	c.DropLineRuns(c.LineRuns())
	if c.Len() != 0 {
		t.Fatalf("every run dropped: Len %d", c.Len())
	}
}

// TestLineRunsAfterRecords checks that lines added to a batch that
// already has Records join them as Records, vouched for as one run.
func TestLineRunsAfterRecords(t *testing.T) {
	o := &Origin{Path: "f"}
	buf := NewBuffer(32)
	n := copy(buf[:cap(buf)], "r0\nl1\nl2\n")
	var b Batch
	b.Own(buf)
	b.Records = append(b.Records, Record{Raw: buf[0:2:2], Origin: o, Offset: 0})
	b.AddLines(buf[3:n], 2, o, 3)
	if b.LineRuns() != 0 || len(b.Records) != 3 || b.Len() != 3 {
		t.Fatalf("LineRuns %d, Records %d, Len %d; want 0, 3, 3", b.LineRuns(), len(b.Records), b.Len())
	}
	if string(b.Records[2].Raw) != "l2" || b.Records[2].Offset != 6 {
		t.Fatalf("record 2 = %q at %d", b.Records[2].Raw, b.Records[2].Offset)
	}
	if lines, m := b.Span(0); !bytes.Equal(lines, buf[:n]) || m != 3 {
		t.Fatalf("Span(0) = %q, %d; want every line", lines, m)
	}
}
