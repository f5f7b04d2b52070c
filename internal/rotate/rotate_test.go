package rotate

import (
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer zr.Close()
		r = zr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(b)
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

func mustOpen(t *testing.T, o Options) *File {
	t.Helper()
	f, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func write(t *testing.T, f *File, s string) {
	t.Helper()
	if n, err := f.Write([]byte(s)); err != nil || n != len(s) {
		t.Fatalf("Write(%q) = %d, %v", s, n, err)
	}
}

func TestSealedName(t *testing.T) {
	for _, tc := range []struct {
		seq  uint64
		want string
	}{
		{1, "x.jsonl.000001"},
		{999999, "x.jsonl.999999"},
		{1000000, "x.jsonl.1000000"},
	} {
		if got := SealedName("x.jsonl", tc.seq); got != tc.want {
			t.Errorf("SealedName(%d) = %q, want %q", tc.seq, got, tc.want)
		}
	}
}

func TestOpenScansExistingSegments(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		gzip      bool
		keep      int
		wantSeq   uint64
		wantNames []string
	}{
		{
			name:      "empty dir",
			wantSeq:   1,
			wantNames: []string{"x.jsonl"},
		},
		{
			name: "continues after highest, ignores foreign names",
			files: map[string]string{
				"x.jsonl.000002": "b\n", "x.jsonl.000007.gz": "", "x.jsonl.bak": "",
				"x.jsonl.12a": "", "y.jsonl.000009": "",
			},
			wantSeq:   8,
			wantNames: []string{"x.jsonl", "x.jsonl.000002", "x.jsonl.000007.gz", "x.jsonl.12a", "x.jsonl.bak", "y.jsonl.000009"},
		},
		{
			name: "removes interrupted compression leftovers",
			files: map[string]string{
				"x.jsonl.000003": "c\n", "x.jsonl.000003.gz.tmp": "junk",
			},
			wantSeq:   4,
			wantNames: []string{"x.jsonl", "x.jsonl.000003"},
		},
		{
			name:      "compresses pending segments and applies keep",
			files:     map[string]string{"x.jsonl.000001": "a\n", "x.jsonl.000002": "b\n", "x.jsonl.000003": "c\n"},
			gzip:      true,
			keep:      2,
			wantSeq:   4,
			wantNames: []string{"x.jsonl", "x.jsonl.000002.gz", "x.jsonl.000003.gz"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, d := range tc.files {
				writeFile(t, filepath.Join(dir, n), d)
			}
			f := mustOpen(t, Options{Path: filepath.Join(dir, "x.jsonl"), Gzip: tc.gzip, Keep: tc.keep})
			if got := f.Active().Seq; got != tc.wantSeq {
				t.Errorf("Seq = %d, want %d", got, tc.wantSeq)
			}
			if got := names(t, dir); !slices.Equal(got, tc.wantNames) {
				t.Errorf("files = %v, want %v", got, tc.wantNames)
			}
		})
	}
}

func TestOpenFinishesInterruptedRemoval(t *testing.T) {
	dir := t.TempDir()
	// A crash after the .gz rename and before the plain segment's removal.
	var gz strings.Builder
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte("a\n"))
	_ = zw.Close()
	writeFile(t, filepath.Join(dir, "x.jsonl.000001"), "a\n")
	writeFile(t, filepath.Join(dir, "x.jsonl.000001.gz"), gz.String())
	mustOpen(t, Options{Path: filepath.Join(dir, "x.jsonl"), Gzip: true})
	if got, want := names(t, dir), []string{"x.jsonl", "x.jsonl.000001.gz"}; !slices.Equal(got, want) {
		t.Fatalf("files = %v, want %v", got, want)
	}
	if got := readFile(t, filepath.Join(dir, "x.jsonl.000001.gz")); got != "a\n" {
		t.Fatalf("segment = %q", got)
	}
}

func TestRotateSealsCompressesAndPrunes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "x.jsonl")
	var synced []string
	f := mustOpen(t, Options{Path: path, Gzip: true, Keep: 2, Sync: func(f *os.File) error {
		synced = append(synced, filepath.Base(f.Name()))
		return nil
	}})
	if err := f.Rotate(); err != nil { // empty: no-op
		t.Fatal(err)
	}
	for i, s := range []string{"one\n", "two\n", "three\n"} {
		write(t, f, s)
		if got := f.Active(); got.Size != int64(len(s)) || got.Seq != uint64(i+1) || got.Path != path {
			t.Fatalf("Active = %+v", got)
		}
		if err := f.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	write(t, f, "four\n")
	if got, want := names(t, filepath.Dir(path)), []string{"x.jsonl", "x.jsonl.000002.gz", "x.jsonl.000003.gz"}; !slices.Equal(got, want) {
		t.Fatalf("files = %v, want %v", got, want)
	}
	if got := readFile(t, SealedName(path, 2)+".gz"); got != "two\n" {
		t.Errorf("segment 2 = %q", got)
	}
	if got := readFile(t, SealedName(path, 3)+".gz"); got != "three\n" {
		t.Errorf("segment 3 = %q", got)
	}
	if got := readFile(t, path); got != "four\n" {
		t.Errorf("active = %q", got)
	}
	// Every seal fsyncs the segment, and the compressed copy before its rename.
	for _, want := range []string{"x.jsonl", "x.jsonl.000001.gz.tmp", "sub"} {
		if !slices.Contains(synced, want) {
			t.Errorf("no fsync of %s in %v", want, synced)
		}
	}
}

func TestNoSyncNeverSyncs(t *testing.T) {
	dir := t.TempDir()
	calls := 0
	f := mustOpen(t, Options{Path: filepath.Join(dir, "x"), Gzip: true, NoSync: true,
		Sync: func(*os.File) error { calls++; return nil }})
	write(t, f, "a\n")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Rotate(); err != nil {
		t.Fatal(err)
	}
	if calls != 0 {
		t.Fatalf("Sync called %d times with NoSync", calls)
	}
}

func TestAge(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	f := mustOpen(t, Options{Path: filepath.Join(dir, "x"), Now: func() time.Time { return now }})
	now = now.Add(time.Hour)
	write(t, f, "a\n") // age counts from the first byte
	now = now.Add(time.Minute)
	if got := f.Age(); got != time.Minute {
		t.Fatalf("Age = %v, want 1m", got)
	}
}

func TestWriteAfterClose(t *testing.T) {
	f := mustOpen(t, Options{Path: filepath.Join(t.TempDir(), "x")})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := f.Write([]byte("a\n")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "file"), "")
	if err := os.Mkdir(filepath.Join(dir, "isdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{filepath.Join(dir, "isdir"), "is a directory"},
		{filepath.Join(dir, "file", "x"), "not a directory"},
		{"", "empty path"},
	} {
		f, err := Open(Options{Path: tc.path})
		if err == nil {
			_ = f.Close()
			t.Errorf("Open(%q) succeeded", tc.path)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("Open(%q) = %v, want it to name the path and say %q", tc.path, err, tc.want)
		}
	}
}
