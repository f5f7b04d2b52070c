package sources

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/etld/etld/internal/fswatch"
)

// manyFiles writes n empty files a000.log... in a new directory and
// returns the directory and a follow config for them.
func manyFiles(t *testing.T, n int) (dir string, paths []string, cfg *FileConfig) {
	t.Helper()
	dir = t.TempDir()
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("a%03d.log", i))
		writeFile(t, p, "")
		paths = append(paths, p)
	}
	return dir, paths, followConfig(filepath.Join(dir, "*.log"))
}

// newWatcher opens an inotify watcher, closed at the end of the test.
func newWatcher(t *testing.T) *fswatch.Watcher {
	t.Helper()
	w, err := fswatch.New(testSettings(t).Logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// appendRound appends line "<file>:<round>" to every file.
func appendRound(t *testing.T, paths []string, round int) {
	t.Helper()
	for _, p := range paths {
		appendFile(t, p, fmt.Sprintf("%s:%d\n", filepath.Base(p), round))
	}
}

// readRounds appends rounds [0, n) to every file and reads each round
// from src before the next.
func readRounds(t *testing.T, src *FileSource, paths []string, n int) *got {
	t.Helper()
	g := &got{}
	for r := range n {
		appendRound(t, paths, r)
		readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= len(paths)*(r+1) })
	}
	return g
}

// checkExactlyOnce fails unless g holds each "<file>:<round>" line of the
// rounds [from, to) exactly once.
func checkExactlyOnce(t *testing.T, g *got, paths []string, from, to int) {
	t.Helper()
	seen := map[string]int{}
	for _, l := range g.lines {
		seen[l]++
	}
	for _, p := range paths {
		for r := from; r < to; r++ {
			if l := fmt.Sprintf("%s:%d", filepath.Base(p), r); seen[l] != 1 {
				t.Errorf("line %q read %d times, want 1", l, seen[l])
			}
		}
	}
	if want := len(paths) * (to - from); len(g.lines) != want {
		t.Errorf("read %d lines, want %d", len(g.lines), want)
	}
}

// TestFollowReadsNotifiedFiles: with the tick's poll off, a written file is
// read because the notification named it, and once everything is read no
// file stays queued (a pass reads what changed, not every file).
func TestFollowReadsNotifiedFiles(t *testing.T) {
	defer func(n int) { pollPerTick = n }(pollPerTick)
	pollPerTick = 0
	shared := newWatcher(t)
	_, paths, cfg := manyFiles(t, 200)
	src := openFile(t, cfg, func(s *FileSource) { s.settings.Watcher = shared })
	g := readRounds(t, src, paths, 3)
	expectQuiet(t, src)
	checkExactlyOnce(t, g, paths, 0, 3)
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.queue) != 0 {
		t.Fatalf("%d files still queued after all was read", len(src.queue))
	}
}

// TestFollowPollsWithoutNotifications: when notifications stop (as on a
// filesystem whose writes inotify does not see), the tick's bounded poll
// still reads every file, a few per tick. The test's directory is on a
// filesystem inotify is trusted on, so the test says it is not.
func TestFollowPollsWithoutNotifications(t *testing.T) {
	defer func(n int, f func(string) bool) { pollPerTick, trustFS = n, f }(pollPerTick, trustFS)
	pollPerTick, trustFS = 3, func(string) bool { return false }
	shared := newWatcher(t)
	_, paths, cfg := manyFiles(t, 12)
	src := openFile(t, cfg, func(s *FileSource) { s.settings.Watcher = shared })
	shared.Close() // the subscription stays but never fires again
	appendRound(t, paths, 0)
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= len(paths) })
	checkExactlyOnce(t, g, paths, 0, 1)
}

// openRegular counts this process's open descriptors of files in dir.
func openRegular(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
			n++
		}
	}
	return n
}

// TestFollowMaxOpenFiles: 30 files with max_open_files 4: at most 4 are
// open, every line of every round is read exactly once, Positions covers
// the closed files, and a new source resumed from them reads only the new
// lines.
func TestFollowMaxOpenFiles(t *testing.T) {
	dir, paths, cfg := manyFiles(t, 30)
	cfg.MaxOpenFiles = 4
	src := newFile(t, cfg)
	g := &got{}
	for r := range 4 {
		appendRound(t, paths, r)
		readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= len(paths)*(r+1) })
		if n := openRegular(t, dir); n > 4 {
			t.Fatalf("round %d: %d files open, want at most 4", r, n)
		}
	}
	expectQuiet(t, src)
	checkExactlyOnce(t, g, paths, 0, 4)
	ps := src.Positions()
	if len(ps) != len(paths) {
		t.Fatalf("Positions has %d files, want %d", len(ps), len(paths))
	}
	for _, p := range ps {
		if want := int64(4 * len(fmt.Sprintf("%s:0\n", filepath.Base(p.Path)))); p.Offset != want {
			t.Fatalf("position of %s = %d, want %d", p.Path, p.Offset, want)
		}
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}

	appendRound(t, paths, 4)
	cfg2 := *cfg
	again := openFile(t, &cfg2, func(s *FileSource) { s.SetPositions(ps) })
	g2 := &got{}
	readUntil(t, again, g2, func(g *got) bool { return len(g.lines) >= len(paths) })
	expectQuiet(t, again)
	checkExactlyOnce(t, g2, paths, 4, 5)
}

// TestFollowOutOfDescriptors: when opening fails with EMFILE the source
// closes its least active files, says so once with the fix, and goes on
// reading every file.
func TestFollowOutOfDescriptors(t *testing.T) {
	dir, paths, cfg := manyFiles(t, 10)
	fails := 0
	defer func(f func(string) (*os.File, error)) { osOpen = f }(osOpen)
	osOpen = func(p string) (*os.File, error) {
		if openRegular(t, dir) >= 3 { // the process limit, as the kernel would say
			fails++
			return nil, &os.PathError{Op: "open", Path: p, Err: syscall.EMFILE}
		}
		return os.Open(p)
	}
	var logs strings.Builder
	src := openFile(t, cfg, func(s *FileSource) { s.log = s.log.Output(&logs) })
	g := readRounds(t, src, paths, 3)
	expectQuiet(t, src)
	checkExactlyOnce(t, g, paths, 0, 3)
	if fails == 0 {
		t.Fatal("no open failed: the test did not test anything")
	}
	if n := strings.Count(logs.String(), "out of file descriptors"); n != 1 {
		t.Fatalf("out of descriptors logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "LimitNOFILE") {
		t.Fatalf("the log does not say how to raise the limit:\n%s", logs.String())
	}
}

// TestFollowWatchLimit: when inotify refuses a watch (ENOSPC: the
// fs.inotify.max_user_watches limit), the source says so once with the
// fix and polls the files of those directories at every tick.
func TestFollowWatchLimit(t *testing.T) {
	defer func(n int) { pollPerTick = n }(pollPerTick)
	pollPerTick = 0 // only the unwatched-directory polling can read them
	defer func(f func(*fswatch.Sub, string) error) { subAdd = f }(subAdd)
	subAdd = func(*fswatch.Sub, string) error { return fmt.Errorf("add watch: %w", syscall.ENOSPC) }
	shared := newWatcher(t)
	_, paths, cfg := manyFiles(t, 5)
	var logs strings.Builder
	src := openFile(t, cfg, func(s *FileSource) { s.settings.Watcher = shared; s.log = s.log.Output(&logs) })
	g := readRounds(t, src, paths, 3)
	checkExactlyOnce(t, g, paths, 0, 3)
	if n := strings.Count(logs.String(), "inotify watch limit reached"); n != 1 {
		t.Fatalf("watch limit logged %d times, want once:\n%s", n, logs.String())
	}
}

// TestFollowIdleFilesHoldNoBuffer: once their new lines are read, idle
// followed files hand their read buffers back, even when the lines stayed
// in the buffer while the batch was built (in place). With one buffer
// left per file read, 10,000 followed files held gigabytes.
func TestFollowIdleFilesHoldNoBuffer(t *testing.T) {
	shared := newWatcher(t)
	_, paths, cfg := manyFiles(t, 100)
	src := openFile(t, cfg, func(s *FileSource) { s.settings.Watcher = shared })
	g := readRounds(t, src, paths, 2)
	checkExactlyOnce(t, g, paths, 0, 2)
	src.mu.Lock()
	defer src.mu.Unlock()
	held := 0
	for _, f := range src.files {
		if f.sp.buf != nil {
			held++
		}
	}
	if held > 0 {
		t.Errorf("%d of %d idle files hold a read buffer, want 0", held, len(src.files))
	}
}

// TestFollowTrustedFilesystemPollsSlowly: on a filesystem whose writes
// inotify reports (the test's, unless it is not local), the tick polls
// only every fullScanTicks ticks, as a safety net: with notifications
// stopped, 19 ticks queue nothing and the 20th queues the files, which
// are then read exactly once.
func TestFollowTrustedFilesystemPollsSlowly(t *testing.T) {
	defer func(n int, f func(string) bool) { pollPerTick, trustFS = n, f }(pollPerTick, trustFS)
	pollPerTick, trustFS = 256, func(string) bool { return true }
	shared := newWatcher(t)
	_, paths, cfg := manyFiles(t, 5)
	src := openFile(t, cfg, func(s *FileSource) { s.settings.Watcher = shared })
	readRounds(t, src, paths, 1)
	shared.Close() // the subscription stays but never fires again
	appendRound(t, paths, 1)
	src.mu.Lock()
	src.ticks = 0
	for range fullScanTicks - 1 {
		src.tick()
	}
	queued := len(src.queue)
	src.tick()
	polled := len(src.queue)
	src.mu.Unlock()
	if queued != 0 || polled != len(paths) {
		t.Fatalf("queued %d files after %d ticks and %d after one more, want 0 and %d", queued, fullScanTicks-1, polled, len(paths))
	}
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= len(paths) })
	checkExactlyOnce(t, g, paths, 1, 2)
}
