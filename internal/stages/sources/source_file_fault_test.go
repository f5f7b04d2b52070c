package sources

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// A finite source whose file vanishes between the glob at Open and its
// turn to be read skips it and reads the others.
func TestFiniteSourceSkipsFileDeletedBeforeRead(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.log"), "a1\na2\n")
	writeFile(t, filepath.Join(dir, "b.log"), "b1\n")
	cfg := NewFileConfig()
	cfg.Path = filepath.Join(dir, "*.log")
	cfg.Follow = false
	src := newFile(t, cfg)
	if err := os.Remove(filepath.Join(dir, "a.log")); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		b, err := src.Read(context.Background())
		if errors.Is(err, stages.ErrEndOfInput) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range b.Records {
			got = append(got, string(r.Raw))
		}
	}
	if len(got) != 1 || got[0] != "b1" {
		t.Fatalf("read %q, want only b1", got)
	}
}

// A finite source whose next file cannot be opened (here: it became a
// directory, which cannot be read whatever the user) waits and retries
// instead of skipping it, and once the file is readable it is read in
// order.
func TestFiniteSourceRetriesUnreadableFile(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.log")
	writeFile(t, a, "a1\n")
	writeFile(t, filepath.Join(dir, "b.log"), "b1\n")
	cfg := NewFileConfig()
	cfg.Path = filepath.Join(dir, "*.log")
	cfg.Follow = false
	src := newFile(t, cfg)
	// Replace a.log with a directory: unreadable as a file even for root.
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(a, 0o755); err != nil {
		t.Fatal(err)
	}
	old := openRetry
	openRetry = 0
	defer func() { openRetry = old }()
	b, err := src.Read(context.Background())
	if err != nil || b != nil {
		t.Fatalf("Read with an unreadable first file = %v, %v; want nil, nil (retry later)", b, err)
	}
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	writeFile(t, a, "a1\n")
	var got []string
	for {
		b, err := src.Read(context.Background())
		if errors.Is(err, stages.ErrEndOfInput) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			continue
		}
		for _, r := range b.Records {
			got = append(got, string(r.Raw))
		}
	}
	if len(got) != 2 || got[0] != "a1" || got[1] != "b1" {
		t.Fatalf("read %q, want a1 then b1", got)
	}
}
