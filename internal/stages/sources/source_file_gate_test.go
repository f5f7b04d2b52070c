package sources

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// fakeGate records what a gated source does and hands out room per feed.
type fakeGate struct {
	mu         sync.Mutex
	room       map[string]int // batches a feed may still take; absent: no limit
	registered []string
	log        []string // "take path" and "end path", in order
	taken      map[*stages.Batch]string
	ch         chan struct{}
}

func newFakeGate() *fakeGate {
	return &fakeGate{room: map[string]int{}, taken: map[*stages.Batch]string{}, ch: make(chan struct{})}
}

func (g *fakeGate) Register(p string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.registered = append(g.registered, filepath.Base(p))
}

func (g *fakeGate) Allow(p string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, limited := g.room[p]
	return !limited || n > 0
}

func (g *fakeGate) Take(p string, b *stages.Batch) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n, limited := g.room[p]; limited {
		g.room[p] = n - 1
	}
	g.log = append(g.log, "take "+filepath.Base(p))
	g.taken[b] = p
}

func (g *fakeGate) End(p string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.log = append(g.log, "end "+filepath.Base(p))
}

func (g *fakeGate) Changed() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ch
}

// give adds room to a feed and wakes the source.
func (g *fakeGate) give(p string, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.room[p] += n
	close(g.ch)
	g.ch = make(chan struct{})
}

func newGatedFile(t *testing.T, cfg *FileConfig, g stages.FeedGate) *FileSource {
	t.Helper()
	return openFile(t, cfg, func(s *FileSource) { s.SetFeedGate(g) })
}

// checkOneFeed fails unless every record of b comes from the file g took
// it for, and returns that file's base name.
func checkOneFeed(t *testing.T, g *fakeGate, b *stages.Batch) string {
	t.Helper()
	g.mu.Lock()
	feed, ok := g.taken[b]
	g.mu.Unlock()
	if !ok {
		t.Fatal("a gated batch its source did not Take")
	}
	for _, r := range b.Records {
		if r.Origin.Path != feed {
			t.Fatalf("batch of feed %s holds a line of %s", feed, r.Origin.Path)
		}
	}
	return filepath.Base(feed)
}

// TestGatedReadOnceSideBySide: a finite gated source reads its files side
// by side, one file per batch, and ends each file's feed after its last
// batch.
func TestGatedReadOnceSideBySide(t *testing.T) {
	dir := t.TempDir()
	const lines = 3000 // about three batches per file
	for _, name := range []string{"a", "b", "c"} {
		var sb strings.Builder
		for i := range lines {
			fmt.Fprintf(&sb, "%s %d\n", name, i)
		}
		writeFile(t, filepath.Join(dir, name+".log"), sb.String())
	}
	writeFile(t, filepath.Join(dir, "empty.log"), "")
	g := newFakeGate()
	cfg := NewFileConfig()
	cfg.Path, cfg.Follow = filepath.Join(dir, "*.log"), false
	src := newGatedFile(t, cfg, g)
	if want := []string{"a.log", "b.log", "c.log", "empty.log"}; !slices.Equal(g.registered, want) {
		t.Fatalf("registered %q at Open, want %q", g.registered, want)
	}
	next := map[string]int{}
	var order []string
	for {
		b, err := src.Read(context.Background())
		if errors.Is(err, stages.ErrEndOfInput) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		feed := checkOneFeed(t, g, b)
		order = append(order, feed)
		for _, r := range b.Records {
			name, seq, _ := strings.Cut(string(r.Raw), " ")
			if n, _ := strconv.Atoi(seq); name+".log" != feed || n != next[feed] {
				t.Fatalf("%s: line %q, want %s %d", feed, r.Raw, strings.TrimSuffix(feed, ".log"), next[feed])
			}
			next[feed]++
		}
	}
	for _, f := range []string{"a.log", "b.log", "c.log"} {
		if next[f] != lines {
			t.Errorf("%s: %d lines, want %d", f, next[f], lines)
		}
	}
	if order[0] != "a.log" || order[1] != "b.log" || order[2] != "c.log" {
		t.Errorf("batches came from %q: the files are not read side by side", order)
	}
	// Each feed ends once, after its last batch.
	for _, f := range []string{"a.log", "b.log", "c.log", "empty.log"} {
		end := slices.Index(g.log, "end "+f)
		if end < 0 || slices.Index(g.log[end+1:], "take "+f) >= 0 || strings.Count(strings.Join(g.log, "\n"), "end "+f) != 1 {
			t.Errorf("feed %s: end not once after its last take: %q", f, g.log)
		}
	}
}

// TestGatedReadOnceWaitsForRoom: a file whose feed has no room is not
// read; the source reads the others, then waits until room is given.
func TestGatedReadOnceWaitsForRoom(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.log"), "a1\na2\n")
	writeFile(t, filepath.Join(dir, "b.log"), "b1\n")
	a := filepath.Join(dir, "a.log")
	g := newFakeGate()
	g.room[a] = 0
	cfg := NewFileConfig()
	cfg.Path, cfg.Follow = filepath.Join(dir, "*.log"), false
	src := newGatedFile(t, cfg, g)

	bt, err := src.Read(context.Background())
	if err != nil || checkOneFeed(t, g, bt) != "b.log" {
		t.Fatalf("first Read = %v: want b.log's batch while a.log has no room", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*pollInterval)
	defer cancel()
	if bt, err := src.Read(ctx); bt != nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read without room = %v, %v; want it to wait", bt, err)
	}
	done := make(chan *stages.Batch)
	go func() {
		bt, _ := src.Read(context.Background())
		done <- bt
	}()
	g.give(a, 1)
	if bt := <-done; bt == nil || checkOneFeed(t, g, bt) != "a.log" || len(bt.Records) != 2 {
		t.Fatalf("after room was given: %v", bt)
	}
	if _, err := src.Read(context.Background()); !errors.Is(err, stages.ErrEndOfInput) {
		t.Fatalf("Read = %v, want the end", err)
	}
}

// TestGatedFollowRotationInOrder: a rotated file and its successor are
// one feed; the successor is read only once the rotated file is drained,
// also when the rotated name still matches the glob.
func TestGatedFollowRotationInOrder(t *testing.T) {
	for _, glob := range []string{"app.log", "app.log*"} {
		t.Run(glob, func(t *testing.T) { gatedFollowRotation(t, glob) })
	}
}

func gatedFollowRotation(t *testing.T, glob string) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	var sb strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&sb, "%d\n", i)
	}
	writeFile(t, path, sb.String())
	g := newFakeGate()
	src := newGatedFile(t, followConfig(filepath.Join(dir, glob)), g)
	first, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Rotate while most of the file is unread, and write the successor.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	sb.Reset()
	for i := 5000; i < 6000; i++ {
		fmt.Fprintf(&sb, "%d\n", i)
	}
	writeFile(t, path, sb.String())
	gt := &got{}
	gt.add(first)
	readUntil(t, src, gt, func(gt *got) bool { return len(gt.lines) >= 6000 })
	for i, l := range gt.lines {
		if l != strconv.Itoa(i) {
			t.Fatalf("line %d = %q: the feed is out of order across the rotation", i, l)
		}
	}
}
