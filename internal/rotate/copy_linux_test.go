package rotate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copySetup returns a source file holding data (opened for reading) and
// an open File at dir/out.log.
func copySetup(t *testing.T, data string) (src *os.File, r *File, out string) {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.log")
	writeFile(t, in, data)
	src, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	out = filepath.Join(dir, "out.log")
	r, err = Open(Options{Path: out, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return src, r, out
}

func lines(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(strings.Repeat(string(rune('a'+i%26)), 1+i%97))
		b.WriteByte('\n')
	}
	return b.String()
}

// WriteFrom copies the bytes from the source inside the kernel, between
// writes, across a rotation, and counts them like written bytes.
func TestWriteFromCopies(t *testing.T) {
	data := lines(3000)
	src, r, out := copySetup(t, data)
	third := strings.Index(data[len(data)/3:], "\n") + len(data)/3 + 1
	if _, err := r.Write([]byte("head\n")); err != nil {
		t.Fatal(err)
	}
	n, err := r.WriteFrom([]byte(data[:third]), src, 0)
	if err != nil || n != third {
		t.Fatalf("WriteFrom = %d, %v; want %d copied", n, err, third)
	}
	if err := r.Rotate(); err != nil {
		t.Fatal(err)
	}
	n, err = r.WriteFrom([]byte(data[third:]), src, int64(third))
	if err != nil || n != len(data)-third {
		t.Fatalf("WriteFrom after a rotation = %d, %v; want %d copied", n, err, len(data)-third)
	}
	if got, want := readFile(t, SealedName(out, 1)), "head\n"+data[:third]; got != want {
		t.Errorf("sealed segment: %d bytes, want %d", len(got), len(want))
	}
	if got := readFile(t, out); got != data[third:] {
		t.Errorf("active file: %d bytes, want %d", len(got), len(data)-third)
	}
	if s := r.Active().Size; s != int64(len(data)-third) {
		t.Errorf("Active().Size = %d, want %d", s, len(data)-third)
	}
}

// A source truncated or closed after the read: what cannot be copied is
// written from memory, so the output is still the bytes read.
func TestWriteFromShrunkOrClosedSource(t *testing.T) {
	data := lines(2000)
	for _, tc := range []struct {
		name   string
		change func(*os.File) error
		copied int
	}{
		{"truncated", func(f *os.File) error { return os.Truncate(f.Name(), int64(len(data)/2)) }, len(data) / 2},
		{"emptied", func(f *os.File) error { return os.Truncate(f.Name(), 0) }, 0},
		{"closed", func(f *os.File) error { return f.Close() }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, r, out := copySetup(t, data)
			if err := tc.change(src); err != nil {
				t.Fatal(err)
			}
			n, err := r.WriteFrom([]byte(data), src, 0)
			if err != nil || n != tc.copied {
				t.Fatalf("WriteFrom = %d, %v; want %d copied", n, err, tc.copied)
			}
			if _, err := r.Write([]byte("tail\n")); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, out); got != data+"tail\n" {
				t.Errorf("output: %d bytes, want the %d read plus a tail", len(got), len(data)+5)
			}
			if s := r.Active().Size; s != int64(len(data)+5) {
				t.Errorf("Active().Size = %d, want %d", s, len(data)+5)
			}
		})
	}
}

// A source copy_file_range cannot read (a pipe: EINVAL) makes WriteFrom
// write, and stop trying for good.
func TestWriteFromUnsupported(t *testing.T) {
	data := lines(500)
	src, r, out := copySetup(t, data)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	n, err := r.WriteFrom([]byte(data), pr, 0)
	if err != nil || n != 0 {
		t.Fatalf("WriteFrom from a pipe = %d, %v; want a write", n, err)
	}
	if !r.cp.off {
		t.Fatalf("copying is still on after EINVAL")
	}
	n, err = r.WriteFrom([]byte(data), src, 0)
	if err != nil || n != 0 {
		t.Fatalf("WriteFrom after EINVAL = %d, %v; want a write", n, err)
	}
	if got := readFile(t, out); got != data+data {
		t.Errorf("output: %d bytes, want %d", len(got), 2*len(data))
	}
}
