package watch

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second // deadline for a report that must come

func expectChange(t *testing.T, w *Watcher, what string) {
	t.Helper()
	select {
	case <-w.C:
	case <-time.After(wait):
		t.Fatalf("%s: no change reported within %v", what, wait)
	}
}

func newWatcher(t *testing.T, path string) *Watcher {
	t.Helper()
	w, err := New(path, Options{Debounce: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestEverySaveStyleIsSeen(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "p.yaml")
	write(t, p, "v1")
	w := newWatcher(t, p)

	write(t, p, "v2") // truncate and write in place
	expectChange(t, w, "in-place write")

	tmp := filepath.Join(dir, ".p.yaml.swp")
	write(t, tmp, "v3")
	if err := os.Rename(tmp, p); err != nil { // editor-style atomic save
		t.Fatal(err)
	}
	expectChange(t, w, "rename over")

	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	write(t, p, "v4") // delete and re-create
	expectChange(t, w, "delete and re-create")
}

// TestSymlinkSwap follows the Kubernetes ConfigMap layout: p.yaml ->
// ..data/p.yaml, ..data -> ..v1, swapped atomically to ..v2.
func TestSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []string{"..v1", "..v2"} {
		os.Mkdir(filepath.Join(dir, v), 0o755)
		write(t, filepath.Join(dir, v, "p.yaml"), v)
	}
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/p.yaml", filepath.Join(dir, "p.yaml")); err != nil {
		t.Fatal(err)
	}
	w := newWatcher(t, filepath.Join(dir, "p.yaml"))
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	expectChange(t, w, "symlink swap")
	b, _ := os.ReadFile(filepath.Join(dir, "p.yaml"))
	if string(b) != "..v2" {
		t.Fatalf("after the swap the file reads %q", b)
	}
}

// TestStormIsDebounced: 50 saves in a row give at most a few reports (one
// pending report absorbs the rest), and the last one is always reported.
func TestStormIsDebounced(t *testing.T) {
	dir := t.TempDir()
	w := newWatcher(t, dir)
	for i := range 50 {
		write(t, filepath.Join(dir, "p.yaml"), string(rune('a'+i%26)))
	}
	expectChange(t, w, "storm")
	// Drain whatever else is pending; the channel holds at most one report.
	if n := len(w.C); n > 1 {
		t.Fatalf("%d reports pending, want at most 1", n)
	}
}

func TestMissingPathIsAnError(t *testing.T) {
	if _, err := New(filepath.Join(t.TempDir(), "nope", "p.yaml"), Options{}); err == nil {
		t.Fatal("watching a path whose directory does not exist succeeded")
	}
}
