package sources

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPreadAt: a read short of the buffer is the end of the file for now,
// with no error (one pread, where os.File.ReadAt reads again to get
// io.EOF); a read at the end gives 0 bytes, no error; a read of a closed
// file fails.
func TestPreadAt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	writeFile(t, p, "hello")
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if n, err := preadAt(f, buf, 1); n != 4 || err != nil || string(buf[:n]) != "ello" {
		t.Fatalf("preadAt at 1 = %d %q, %v; want 4 \"ello\", nil", n, buf[:n], err)
	}
	if n, err := preadAt(f, buf, 5); n != 0 || err != nil {
		t.Fatalf("preadAt at the end = %d, %v; want 0, nil", n, err)
	}
	if n, err := preadAt(f, buf[:2], 0); n != 2 || err != nil || string(buf[:2]) != "he" {
		t.Fatalf("preadAt of 2 bytes = %d %q, %v; want 2 \"he\", nil", n, buf[:n], err)
	}
	f.Close()
	if _, err := preadAt(f, buf, 0); err == nil {
		t.Fatal("preadAt of a closed file: no error")
	}
}
