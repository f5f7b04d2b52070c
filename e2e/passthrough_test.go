package e2e

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// rawInput returns n lines that no sink may alter when they are not
// parsed: JSON with odd spacing (re-encoding would change it), text with
// tabs and Unicode, invalid UTF-8, NUL bytes, CRLF endings, empty lines,
// and a few long lines (under max_line_bytes) that span read buffers.
// The last line has no newline.
func rawInput(n int) []byte {
	var b []byte
	for i := range n {
		s := strconv.Itoa(i)
		switch i % 9 {
		case 0:
			b = append(b, `{ "key" : "raw-`+s+`" ,	"a":1.50 , "b" : [ 1,2 ] }`...)
		case 1:
			b = append(b, "plain text\twith tabs, héllo ✓ "+s...)
		case 2:
			b = append(b, "invalid utf-8 \xff\xfe\xc3 "+s...)
		case 3:
			b = append(b, "nul \x00 byte "+s...)
		case 4:
			b = append(b, "crlf line "+s+"\r"...)
		case 5:
			b = append(b, "   leading and trailing spaces "+s+"   "...)
		case 6:
			if i%90 != 6 {
				b = append(b, `{"key":"raw-`+s+`"}`...)
			}
		case 7:
			if i%7000 == 7 {
				b = append(b, "long "+s+" "...)
				b = append(b, bytes.Repeat([]byte("x"), 300<<10)...)
			} else {
				b = append(b, "[1,2,3] "+s...)
			}
		case 8:
			b = append(b, `"just a JSON string `+s+`"`...)
		}
		if i < n-1 {
			b = append(b, '\n')
		}
	}
	return b
}

// TestRawPassthrough: records that are never parsed are written back
// byte for byte. One source fans out to four branches: straight into a
// sink, through a worker with no steps (one goroutine), through an
// ordered worker with four goroutines, and through an unordered worker
// with four goroutines. The first three keep the file's order; the last
// one keeps the set of lines.
func TestRawPassthrough(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := rawInput(40000)
	writeFile(t, dir, "in/raw.txt", in)
	cfg := writeConfig(t, dir, "raw.yaml", `version: 1
sources:
  raw: { type: file, path: in/raw.txt, follow: false }
workers:
  single:
    inputs: [raw]
    concurrency: 1
    steps: []
  ordered:
    inputs: [raw]
    concurrency: 4
    ordered: true
    steps: []
  unordered:
    inputs: [raw]
    concurrency: 4
sinks:
  direct:       { type: file, inputs: [raw], path: out/direct.txt }
  via_single:   { type: file, inputs: [single], path: out/single.txt }
  via_ordered:  { type: file, inputs: [ordered], path: out/ordered.txt }
  via_unordered: { type: file, inputs: [unordered], path: out/unordered.txt }
`)
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "finite pipeline")

	// The last input line has no newline; a sink ends every line with one.
	want := append(slices.Clip(in), '\n')
	for _, name := range []string{"direct", "single", "ordered"} {
		t.Run(name, func(t *testing.T) {
			got := readFile(t, filepath.Join(dir, "out", name+".txt"))
			if !bytes.Equal(got, want) {
				t.Errorf("out/%s.txt differs from the input: %s", name, firstDiff(got, want))
			}
		})
	}
	t.Run("unordered", func(t *testing.T) {
		got := splitLines(t, "unordered.txt", readFile(t, filepath.Join(dir, "out", "unordered.txt")))
		wantLines := splitLines(t, "input", want)
		slices.SortFunc(got, bytes.Compare)
		slices.SortFunc(wantLines, bytes.Compare)
		if len(got) != len(wantLines) {
			t.Errorf("out/unordered.txt has %d lines, want %d", len(got), len(wantLines))
		}
		for i := range min(len(got), len(wantLines)) {
			if !bytes.Equal(got[i], wantLines[i]) {
				t.Errorf("out/unordered.txt: the sorted lines differ first at %d: got %.100q, want %.100q", i, got[i], wantLines[i])
				break
			}
		}
	})
}

// firstDiff describes where two byte strings first differ.
func firstDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	line := bytes.Count(want[:i], []byte{'\n'}) + 1
	lo := max(0, i-40)
	return fmt.Sprintf("got %d bytes, want %d; first difference at byte %d (line %d): got %.80q, want %.80q",
		len(got), len(want), i, line, got[lo:min(len(got), i+40)], want[lo:min(len(want), i+40)])
}
