package rotate

import (
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"
)

func TestRecoverTruncatesActiveFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out.jsonl")
	writeFile(t, p, "a\nb\nc\n")
	rec, err := Recover(Segment{Path: p, Seq: 1, Size: 4}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, p); got != "a\nb\n" || rec.Truncated != 2 {
		t.Fatalf("file %q truncated %d; want \"a\\nb\\n\" and 2", got, rec.Truncated)
	}
}

func TestRecoverRestoresSegmentSealedAfterCommit(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "gzip"}[gz], func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "out.jsonl")
			writeFile(t, SealedName(p, 1), "old\n")
			sealed2 := SealedName(p, 2)
			if gz {
				f, _ := os.Create(sealed2 + ".gz")
				zw := gzip.NewWriter(f)
				zw.Write([]byte("x\ny\nz\n"))
				zw.Close()
				f.Close()
			} else {
				writeFile(t, sealed2, "x\ny\nz\n")
			}
			writeFile(t, SealedName(p, 3), "after\n")
			writeFile(t, p, "later\n")
			// Committed: segment 2 active with "x\ny\n".
			rec, err := Recover(Segment{Path: p, Seq: 2, Size: 4}, false)
			if err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, p); got != "x\ny\n" {
				t.Fatalf("active = %q, want the committed part of segment 2", got)
			}
			if got := readFile(t, SealedName(p, 1)); got != "old\n" {
				t.Fatalf("segment 1 = %q, must be untouched", got)
			}
			for _, gone := range []string{sealed2, sealed2 + ".gz", SealedName(p, 3)} {
				if _, err := os.Stat(gone); !os.IsNotExist(err) {
					t.Errorf("%s still exists after recovery", gone)
				}
			}
			if rec.Restored == "" || len(rec.Removed) != 1 {
				t.Fatalf("recovery = %+v", rec)
			}
			// Open continues the sequence at 2 again.
			f, err := Open(Options{Path: p})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if s := f.Active(); s.Seq != 2 || s.Size != 4 {
				t.Fatalf("after recovery Active = %+v, want seq 2 size 4", s)
			}
		})
	}
}

func TestRecoverReportsMissingBytes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out.jsonl")
	writeFile(t, p, "a\n")
	rec, err := Recover(Segment{Path: p, Seq: 1, Size: 10}, true)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Missing != 8 {
		t.Fatalf("Missing = %d, want 8", rec.Missing)
	}
}
