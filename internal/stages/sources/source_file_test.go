package sources

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/fswatch"
	"github.com/etld/etld/internal/stages"
)

func TestFileConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(c *FileConfig)
		fields []string
	}{
		{"ok", func(c *FileConfig) { c.Path = "/x/*.log" }, nil},
		{"missing path", func(c *FileConfig) {}, []string{"path"}},
		{"bad glob", func(c *FileConfig) { c.Path = "/x/[a.log" }, []string{"path"}},
		{"bad start_at", func(c *FileConfig) { c.Path = "x"; c.StartAt = "middle" }, []string{"start_at"}},
		{"zero max_line_bytes", func(c *FileConfig) { c.Path = "x"; c.MaxLineBytes = 0 }, []string{"max_line_bytes"}},
		{"all wrong", func(c *FileConfig) { c.Path = "["; c.StartAt = ""; c.MaxLineBytes = -1 }, []string{"path", "start_at", "max_line_bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewFileConfig()
			tt.edit(c)
			if got := fieldsOf(c.Validate()); !reflect.DeepEqual(got, tt.fields) {
				t.Errorf("fields = %q, want %q", got, tt.fields)
			}
		})
	}
	if c := NewFileConfig(); !c.Follow || c.StartAt != "beginning" || c.MaxLineBytes != 1<<20 || c.Finite() {
		t.Errorf("defaults = %+v", c)
	}
}

func TestFileReadOnce(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "b.log"), "b1\nb2\n")
	writeFile(t, filepath.Join(dir, "a.log"), "a1\n\na3\nlast without newline")
	writeFile(t, filepath.Join(dir, "c.log"), "")
	writeFile(t, filepath.Join(dir, "skip.txt"), "not matched\n")
	if err := os.Mkdir(filepath.Join(dir, "dir.log"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := NewFileConfig()
	cfg.Path, cfg.Follow = "*.log", false
	cfg.ResolvePaths(dir)
	if !cfg.Finite() {
		t.Fatal("follow: false must be finite")
	}
	src := newFile(t, cfg)
	g := readToEnd(t, src)

	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	wantLines := []string{"a1", "", "a3", "last without newline", "b1", "b2"}
	wantOffsets := []int64{0, 3, 4, 7, 0, 3}
	wantPaths := []string{a, a, a, a, b, b}
	if !reflect.DeepEqual(g.lines, wantLines) {
		t.Errorf("lines = %q, want %q", g.lines, wantLines)
	}
	if !reflect.DeepEqual(g.offsets, wantOffsets) {
		t.Errorf("offsets = %v, want %v", g.offsets, wantOffsets)
	}
	if !reflect.DeepEqual(g.paths, wantPaths) {
		t.Errorf("paths = %q, want %q", g.paths, wantPaths)
	}
	// Positions cover every byte delivered.
	sizes := map[string]int64{a: 27, b: 6}
	for _, p := range src.Positions() {
		if want, ok := sizes[p.Path]; ok && p.Offset != want {
			t.Errorf("position of %s = %d, want %d", p.Path, p.Offset, want)
		}
	}
	// Still at the end.
	if _, err := src.Read(context.Background()); !errors.Is(err, stages.ErrEndOfInput) {
		t.Errorf("Read after the end = %v", err)
	}
}

func TestFileReadOnceManyLines(t *testing.T) {
	dir := t.TempDir()
	const n = 5000 // several batches and buffer refills
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, "line %d %s\n", i, strings.Repeat("x", i%200))
	}
	writeFile(t, filepath.Join(dir, "big.log"), sb.String())
	cfg := NewFileConfig()
	cfg.Path, cfg.Follow = filepath.Join(dir, "big.log"), false
	src := newFile(t, cfg)
	g := readToEnd(t, src)
	if len(g.lines) != n {
		t.Fatalf("read %d lines, want %d", len(g.lines), n)
	}
	off := int64(0)
	for i, l := range g.lines {
		if want := fmt.Sprintf("line %d %s", i, strings.Repeat("x", i%200)); l != want || g.offsets[i] != off {
			t.Fatalf("line %d = %q at %d, want %q at %d", i, l, g.offsets[i], want, off)
		}
		off += int64(len(l) + 1)
	}
}

func TestFileNoMatch(t *testing.T) {
	cfg := NewFileConfig()
	cfg.Path, cfg.Follow = filepath.Join(t.TempDir(), "none-*.log"), false
	src := newFile(t, cfg)
	if _, err := src.Read(context.Background()); !errors.Is(err, stages.ErrEndOfInput) {
		t.Fatalf("Read = %v, want ErrEndOfInput", err)
	}
}

func TestFileLongLine(t *testing.T) {
	const mib = 1 << 20
	long := strings.Repeat("L", 5*mib)
	tests := []struct {
		name    string
		content string
		max     stages.ByteSize
		lines   []string
		rejects [][2]int64 // offset, length
	}{
		{"5MiB line, max 1MiB", "before\n" + long + "\nafter\nend\n", mib, []string{"before", "after", "end"}, [][2]int64{{7, 5 * mib}}},
		{"5MiB last line without newline", "before\n" + long, mib, []string{"before"}, [][2]int64{{7, 5 * mib}}},
		{"line of max+1 inside the buffer", "12345\n123456\n1234\n", 5, []string{"12345", "1234"}, [][2]int64{{6, 6}}},
		{"two long lines in a row", "x\n" + long + "\n" + long + "\ny\n", mib, []string{"x", "y"}, [][2]int64{{2, 5 * mib}, {3 + 5*mib, 5 * mib}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "long.log")
			writeFile(t, path, tt.content)
			cfg := NewFileConfig()
			cfg.Path, cfg.Follow, cfg.MaxLineBytes = path, false, tt.max
			src := newFile(t, cfg)
			g := readToEnd(t, src)
			if !reflect.DeepEqual(g.lines, tt.lines) {
				t.Errorf("lines = %.40q, want %q", g.lines, tt.lines)
			}
			if len(g.rejects) != len(tt.rejects) {
				t.Fatalf("%d rejects, want %d", len(g.rejects), len(tt.rejects))
			}
			for i, r := range g.rejects {
				if r.Record.Offset != tt.rejects[i][0] || r.Length != tt.rejects[i][1] {
					t.Errorf("reject %d at %d with length %d, want %v", i, r.Record.Offset, r.Length, tt.rejects[i])
				}
				if int64(len(r.Record.Raw)) != int64(tt.max) || r.Err == nil || !strings.Contains(r.Err.Error(), "max_line_bytes") {
					t.Errorf("reject %d: raw %d bytes, err %v", i, len(r.Record.Raw), r.Err)
				}
				if r.Record.Origin == nil || r.Record.Origin.Path != path {
					t.Errorf("reject %d: origin %+v", i, r.Record.Origin)
				}
			}
			// Memory: the read buffer never grows past max_line_bytes+1.
			if c := cap(src.spare); c > int(tt.max)+1 && c > readBlock {
				t.Errorf("read buffer grew to %d bytes", c)
			}
		})
	}
}

// followConfig returns a following config for path (in dir).
func followConfig(path string) *FileConfig {
	cfg := NewFileConfig()
	cfg.Path = path
	return cfg
}

func TestFollowAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	writeFile(t, path, "old1\nold2\n")
	src := newFile(t, followConfig(path))
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 2 })

	appendFile(t, path, "new1\nnew2\npart")
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 4 })
	appendFile(t, path, "ial\n")
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 5 })
	if want := []string{"old1", "old2", "new1", "new2", "partial"}; !reflect.DeepEqual(g.lines, want) {
		t.Fatalf("lines = %q, want %q", g.lines, want)
	}
	if want := []int64{0, 5, 10, 15, 20}; !reflect.DeepEqual(g.offsets, want) {
		t.Fatalf("offsets = %v, want %v", g.offsets, want)
	}
	if ps := src.Positions(); len(ps) != 1 || ps[0].Offset != 28 || ps[0].Inode == 0 || ps[0].FingerprintLen != 28 {
		t.Fatalf("Positions = %+v", ps)
	}
}

func TestFollowStartAtEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	writeFile(t, path, "old1\nold2\n")
	cfg := followConfig(path)
	cfg.StartAt = StartAtEnd
	src := newFile(t, cfg)
	appendFile(t, path, "new\n")
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 1 })
	if !reflect.DeepEqual(g.lines, []string{"new"}) || g.offsets[0] != 10 {
		t.Fatalf("lines = %q at %v, want [new] at 10", g.lines, g.offsets)
	}
}

func TestFollowNewFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.log"), "a1\n")
	src := newFile(t, followConfig(filepath.Join(dir, "*.log")))
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 1 })
	writeFile(t, filepath.Join(dir, "b.log"), "b1\nb2\n")
	writeFile(t, filepath.Join(dir, "b.txt"), "ignored\n")
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 3 })
	if want := []string{"a1", "b1", "b2"}; !reflect.DeepEqual(g.lines, want) {
		t.Fatalf("lines = %q, want %q", g.lines, want)
	}
	if g.paths[1] != filepath.Join(dir, "b.log") {
		t.Fatalf("path of the new file's record = %q", g.paths[1])
	}
	expectQuiet(t, src)
}

func TestFollowCopyTruncate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	var sb strings.Builder
	for i := range 100 {
		fmt.Fprintf(&sb, `{"before":%d,"pad":"%s"}`+"\n", i, strings.Repeat("p", 50))
	}
	writeFile(t, path, sb.String())
	src := newFile(t, followConfig(path))
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 100 })

	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, path, "after1\nafter2\n")
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 102 })
	if got := g.lines[100:]; !reflect.DeepEqual(got, []string{"after1", "after2"}) || g.offsets[100] != 0 || g.offsets[101] != 7 {
		t.Fatalf("after truncation: %q at %v", got, g.offsets[100:])
	}
	expectQuiet(t, src)
}

// TestFollowRotation rotates the file by rename-and-create five times while
// a writer appends numbered lines: every line must be read exactly once,
// also when the rotated files still match the glob.
//
// The writer renames a file only after the reader has seen its first line
// (a file created and rotated away between two looks is
// TestFollowRenamedAwayUnseen's case). Rotation still happens while the
// reader is behind.
func TestFollowRotation(t *testing.T) {
	for _, glob := range []string{"app.log", "app.log*"} {
		t.Run(glob, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "app.log")
			writeFile(t, path, "")
			src := newFile(t, followConfig(filepath.Join(dir, glob)))

			const total, rotations = 20000, 5
			const every = total / (rotations + 1)
			discovered := make([]chan struct{}, rotations+1) // closed when the reader saw segment k's first line
			for k := range discovered {
				discovered[k] = make(chan struct{})
			}
			var wg sync.WaitGroup
			werr := make(chan error, 1)
			stop := make(chan struct{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				werr <- writeRotating(path, total, every, discovered, stop)
			}()
			t.Cleanup(func() { close(stop); wg.Wait() })

			seen := make([]int, total)
			g := &got{}
			readUntil(t, src, g, func(g *got) bool {
				for _, l := range g.lines {
					seq, err := strconv.Atoi(strings.TrimPrefix(strings.SplitN(l, " ", 2)[0], "seq="))
					if err != nil || seq < 0 || seq >= total {
						t.Fatalf("unexpected line %q", l)
					}
					seen[seq]++
					if seq%every == 0 && seq/every <= rotations && seen[seq] == 1 {
						close(discovered[seq/every])
					}
				}
				g.lines = g.lines[:0]
				for _, c := range seen {
					if c == 0 {
						return false
					}
				}
				return true
			})
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			expectQuiet(t, src)
			lost, dups := 0, 0
			for _, c := range seen {
				if c == 0 {
					lost++
				}
				if c > 1 {
					dups += c - 1
				}
			}
			if lost != 0 || dups != 0 {
				t.Fatalf("lost = %d, duplicates = %d", lost, dups)
			}
		})
	}
}

// writeRotating appends total numbered lines to path, rotating it by
// rename-and-create every `every` lines, each time once discovered[k] (the
// reader saw the current segment's first line) is closed.
func writeRotating(path string, total, every int, discovered []chan struct{}, stop <-chan struct{}) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	pad := strings.Repeat("x", 100)
	for i := range total {
		if k := i / every; i > 0 && i%every == 0 && k < len(discovered) {
			select {
			case <-discovered[k-1]:
			case <-stop:
				f.Close()
				return errors.New("writer stopped")
			}
			if err := f.Close(); err != nil {
				return err
			}
			if err := os.Rename(path, fmt.Sprintf("%s.%d", path, k)); err != nil {
				return err
			}
			if f, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintf(f, "seq=%d %s\n", i, pad); err != nil {
			return err
		}
	}
	return f.Close()
}

func TestFollowDeletedFileIsClosed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "one\n")
	src := newFile(t, followConfig(filepath.Join(dir, "*.log")))
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 1 })
	appendFile(t, path, "tail without newline")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// The deleted file is drained (its last line included) and closed.
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 2 })
	if g.lines[1] != "tail without newline" {
		t.Fatalf("last line = %q", g.lines[1])
	}
	waitFor(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), pollInterval)
		defer cancel()
		src.Read(ctx)
		src.mu.Lock()
		defer src.mu.Unlock()
		return len(src.files) == 0
	})
	// Its position is remembered, at its end.
	if ps := src.Positions(); len(ps) != 1 || ps[0].Offset != 24 {
		t.Fatalf("Positions = %+v, want the deleted file at offset 24", ps)
	}
}

// waitFor polls cond until it holds, failing after testTimeout.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatal("condition not met before the deadline")
		}
	}
}

func TestFollowCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	writeFile(t, path, "")
	src := newFile(t, followConfig(path))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := src.Read(ctx)
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Read = %v, want context.Canceled", err)
	}
}

func TestResumePositions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "one\ntwo\n")
	cfg := followConfig(path)
	src := newFile(t, cfg)
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 2 })
	pos := src.Positions()
	src.Close()

	appendFile(t, path, "three\n")
	other := filepath.Join(dir, "other.log") // same name pattern, different file
	writeFile(t, other, "x\n")

	src2 := NewFileSource(testSettings(t), cfg)
	src2.SetPositions(pos)
	if err := src2.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer src2.Close()
	g2 := &got{}
	readUntil(t, src2, g2, func(g *got) bool { return len(g.lines) == 1 })
	if g2.lines[0] != "three" || g2.offsets[0] != 8 {
		t.Fatalf("resumed at %q offset %d, want three at 8", g2.lines[0], g2.offsets[0])
	}

	// A position whose fingerprint does not match (inode reuse) is ignored.
	bad := []FilePosition{pos[0]}
	bad[0].Fingerprint++
	cfg3 := *cfg
	cfg3.Follow = false
	src3 := NewFileSource(testSettings(t), &cfg3)
	src3.SetPositions(bad)
	if err := src3.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer src3.Close()
	if g3 := readToEnd(t, src3); len(g3.lines) != 3 {
		t.Fatalf("with a stale position read %q, want the whole file", g3.lines)
	}
}

// TestFollowRenamedAwayUnseen: with an exact name, files created under it
// and renamed to names the glob does not match before the source looked
// (two rotations while it was busy, here: not reading at all) are still
// read, each once, under the name they were written as, also after a
// second rename; a file that never had a matching name is not read. Run
// over both inotify readers: the paced one delays events by design.
func TestFollowRenamedAwayUnseen(t *testing.T) {
	for name, open := range map[string]func(zerolog.Logger) (*fswatch.Watcher, error){"fsnotify": fswatch.NewFsnotify, "paced": fswatch.New} {
		t.Run(name, func(t *testing.T) {
			w, err := open(testSettings(t).Logger)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close() })
			dir := t.TempDir()
			path := filepath.Join(dir, "app.log")
			in := func(n string) string { return filepath.Join(dir, n) }
			mv := func(from, to string) {
				t.Helper()
				if err := os.Rename(in(from), in(to)); err != nil {
					t.Fatal(err)
				}
			}
			writeFile(t, path, "a0\n")
			src := openFile(t, followConfig(path), func(s *FileSource) { s.settings.Watcher = w })
			g := &got{}
			readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 1 })

			// The source does not read while these happen.
			mv("app.log", "app.log.1") // read already: read to its end, not again
			writeFile(t, path, "b0\nb1\n")
			mv("app.log", "app.log.2") // never seen under app.log
			writeFile(t, path, "c0\n")
			mv("app.log", "tmp")
			mv("tmp", "app.log.3") // never seen, renamed twice
			writeFile(t, in("other"), "x0\n")
			mv("other", "other.1") // never matched
			writeFile(t, path, "d0\n")

			readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 5 })
			expectQuiet(t, src)
			if want := []string{"a0", "b0", "b1", "c0", "d0"}; !reflect.DeepEqual(slices.Sorted(slices.Values(g.lines)), want) {
				t.Fatalf("lines %q, want each of %q once", g.lines, want)
			}
			for i, p := range g.paths {
				if p != path {
					t.Errorf("line %q has path %q, want %q", g.lines[i], p, path)
				}
			}
		})
	}
}

// TestFollowMovesAcrossNotifications: the two renames of a file
// (app.log -> tmp -> app.log.3) may come in separate notifications, the
// second after the source found tmp gone; the file is still followed to
// its last name and read once. Driven through followMoves, as the
// split depends on when events are read.
func TestFollowMovesAcrossNotifications(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "a0\n")
	src := openFile(t, followConfig(path), func(s *FileSource) { s.settings.Watcher = fswatch.Disabled() })
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 1 })
	if err := os.Rename(path, filepath.Join(dir, "app.log.1")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "c0\n")
	if err := os.Rename(path, filepath.Join(dir, "app.log.3")); err != nil { // tmp skipped: it is gone when looked for
		t.Fatal(err)
	}
	writeFile(t, path, "d0\n")
	tmp, final := filepath.Join(dir, "tmp"), filepath.Join(dir, "app.log.3")
	src.mu.Lock()
	src.followMoves([]fswatch.Move{{From: path, To: tmp}})
	if len(src.moving) != 1 {
		t.Errorf("after the first rename, moving = %v; want tmp", src.moving)
	}
	src.followMoves([]fswatch.Move{{From: tmp, To: final}})
	src.mu.Unlock()
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 3 })
	expectQuiet(t, src)
	if want := []string{"a0", "c0", "d0"}; !reflect.DeepEqual(slices.Sorted(slices.Values(g.lines)), want) {
		t.Fatalf("lines %q, want each of %q once", g.lines, want)
	}
	// The name stays followed for a while (the file may be renamed on
	// again), then is forgotten.
	src.mu.Lock()
	defer src.mu.Unlock()
	if _, ok := src.moving[final]; !ok {
		t.Errorf("moving = %v: want %s kept for a later rename", src.moving, final)
	}
	for range movingTicks + 1 {
		src.tick()
	}
	if len(src.moving) != 0 {
		t.Errorf("moving = %v after %d ticks, want it empty", src.moving, movingTicks+1)
	}
}
