package sources

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/stagetest"
)

// crlfLines is randomLines with some lines ending in "\r\n" and some
// files of nothing but empty lines' newlines in a row.
func crlfLines(rng *rand.Rand, n int, open bool) []byte {
	b := randomLines(rng, n, open)
	out := make([]byte, 0, len(b)+n/8)
	for _, c := range b {
		if c == '\n' && rng.IntN(8) == 0 {
			out = append(out, '\r')
		}
		out = append(out, c)
		if c == '\n' && rng.IntN(30) == 0 {
			out = append(out, "\n\n\n"...)
		}
	}
	return out
}

// readRecords reads a finite file source to its end with line runs on or
// off, holding edgeDepth batches like the edges in front of a sink (so a
// read into a buffer a held batch still points into shows), and returns
// what a sink would see: each batch split into Records (SplitRuns), as
// lines, offsets, paths and rejects. runs counts the batches that came as
// line runs.
func readRecords(t *testing.T, cfg *FileConfig, lineRuns bool) (g *got, batches, runs int) {
	t.Helper()
	g = &got{}
	var held []*stages.Batch
	drop := func() {
		b := held[0]
		held = held[1:]
		if b.LineRuns() > 0 {
			runs++
			n, size, want := 0, 0, b.Len()
			var all []byte
			for k := range b.LineRuns() {
				lines, m := b.LineRun(k)
				if bytes.Count(lines, []byte{'\n'}) != m || lines[len(lines)-1] != '\n' {
					t.Fatalf("run %d of %d lines: %d newlines, ends with %q", k, m, bytes.Count(lines, []byte{'\n'}), lines[len(lines)-1])
				}
				n += m
				size += len(lines)
				all = append(all, lines...)
			}
			if n != want || size != b.LineBytes() {
				t.Fatalf("runs hold %d lines in %d bytes; Len %d, LineBytes %d", n, size, want, b.LineBytes())
			}
			b.SplitRuns()
			if b.LineRuns() != 0 || len(b.Records) != want {
				t.Fatalf("SplitRuns made %d records (runs left %d), want %d", len(b.Records), b.LineRuns(), want)
			}
			var again []byte
			for _, r := range b.Records {
				again = append(append(again, r.Raw...), '\n')
			}
			if !bytes.Equal(all, again) {
				t.Fatal("the records split from the runs are not the runs' lines")
			}
		}
		g.add(b)
		b.Release()
	}
	src := openFile(t, cfg, func(s *FileSource) { s.SetLineRuns(lineRuns) })
	stagetest.ReadToEnd(t, src, testTimeout, func(b *stages.Batch) {
		if b.Len() == 0 && len(b.Rejects) == 0 {
			t.Fatal("Read returned an empty batch")
		}
		batches++
		held = append(held, b)
		if len(held) > edgeDepth {
			drop()
		}
	})
	for len(held) > 0 {
		drop()
	}
	return g, batches, runs
}

// TestFileSourceLineRuns reads the same files with line runs off (the
// Records the source always made) and on: split, the runs give exactly
// the same records (lines, offsets, origins) and rejects, whatever the
// lines: empty ones, "\r\n" endings (kept in the record, as without
// runs), lines over max_line_bytes, a last line without a newline, with
// max_line_bytes below and above the read buffer's size.
func TestFileSourceLineRuns(t *testing.T) {
	for _, max := range []int{defaultMaxLineBytes, 64 << 10, 1000} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("max%d/seed%d", max, seed), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 23))
				dir := t.TempDir()
				var want []string
				for f := range 3 {
					data := crlfLines(rng, 2000+rng.IntN(3000), f != 1)
					writeFile(t, filepath.Join(dir, fmt.Sprintf("in-%d.log", f)), string(data))
					lines, _, _ := reference(data, max)
					want = append(want, lines...)
				}
				cfg := NewFileConfig()
				cfg.Path, cfg.Follow, cfg.MaxLineBytes = filepath.Join(dir, "in-*.log"), false, stages.ByteSize(max)
				old, _, _ := readRecords(t, cfg, false)
				got, batches, runs := readRecords(t, cfg, true)
				if len(old.lines) != len(want) {
					t.Fatalf("without runs: %d lines, want %d", len(old.lines), len(want))
				}
				for i := range want {
					if i >= len(got.lines) || got.lines[i] != old.lines[i] || got.offsets[i] != old.offsets[i] || got.paths[i] != old.paths[i] {
						t.Fatalf("record %d differs: %d lines read with runs, %d without; first difference here", i, len(got.lines), len(old.lines))
					}
				}
				if len(got.lines) != len(want) {
					t.Fatalf("with runs: %d lines, want %d", len(got.lines), len(want))
				}
				if len(got.rejects) != len(old.rejects) {
					t.Fatalf("with runs: %d rejects, without %d", len(got.rejects), len(old.rejects))
				}
				for i, r := range got.rejects {
					o := old.rejects[i]
					if r.Record.Offset != o.Record.Offset || r.Length != o.Length || !bytes.Equal(r.Record.Raw, o.Record.Raw) {
						t.Fatalf("reject %d: %s:%d (%d bytes), without runs %s:%d (%d bytes)", i, r.Record.Origin.Path, r.Record.Offset, r.Length, o.Record.Origin.Path, o.Record.Offset, o.Length)
					}
				}
				t.Logf("%d batches, %d as line runs, %d rejects", batches, runs, len(got.rejects))
				if max >= readBlock && runs*2 < batches {
					// A read buffer then never holds an over-long line:
					// runs are the rule.
					t.Errorf("%d of %d batches came as line runs; want most", runs, batches)
				}
			})
		}
	}
}

// TestFileSourceLineRunsBounded: a batch of runs stays bounded by lines
// and bytes whatever the lines' length: a file of empty lines, which
// once made one batch of the whole file (a split on a reload would then
// be millions of Records), and one of 3-byte lines. Every line is read.
func TestFileSourceLineRunsBounded(t *testing.T) {
	for name, line := range map[string]string{"empty lines": "\n", "short lines": "ab\n"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			const n = 600_000 // several batches at runMaxLines
			writeFile(t, filepath.Join(dir, "in.log"), strings.Repeat(line, n))
			cfg := NewFileConfig()
			cfg.Path, cfg.Follow = filepath.Join(dir, "in.log"), false
			src := openFile(t, cfg, func(s *FileSource) { s.SetLineRuns(true) })
			total, runs := 0, 0
			stagetest.ReadToEnd(t, src, testTimeout, func(b *stages.Batch) {
				if b.LineRuns() > 0 {
					runs++
				}
				if b.Len() > runMaxLines || b.LineBytes() > batchMaxBytes {
					t.Fatalf("a batch of %d lines, %d bytes; bounds %d lines, %d bytes", b.Len(), b.LineBytes(), runMaxLines, batchMaxBytes)
				}
				total += b.Len()
				b.Release()
			})
			if total != n {
				t.Fatalf("%d lines read, want %d", total, n)
			}
			if runs == 0 {
				t.Fatal("no batch came as line runs")
			}
		})
	}
}
