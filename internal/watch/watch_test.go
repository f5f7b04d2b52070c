package watch

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"

	"github.com/etld/etld/internal/fswatch"
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
	return newWatcherOpts(t, path, Options{})
}

// newWatcherOpts is newWatcher with opts (a short debounce and polling
// interval unless given).
func newWatcherOpts(t *testing.T, path string, opts Options) *Watcher {
	t.Helper()
	opts.Debounce = 20 * time.Millisecond
	if opts.PollInterval == 0 {
		opts.PollInterval = 10 * time.Millisecond
	}
	w, err := New(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// bothModes runs f with inotify and with polling (what etld falls back to
// when inotify cannot be initialised: an inactive shared watcher).
func bothModes(t *testing.T, f func(t *testing.T, opts Options)) {
	for _, m := range []struct {
		name string
		opts Options
	}{{ModeInotify, Options{}}, {ModePoll, Options{FS: fswatch.Disabled()}}} {
		t.Run(m.name, func(t *testing.T) { f(t, m.opts) })
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestEverySaveStyleIsSeen(t *testing.T) { bothModes(t, testEverySaveStyleIsSeen) }

func testEverySaveStyleIsSeen(t *testing.T, opts Options) {
	dir := t.TempDir()
	p := filepath.Join(dir, "p.yaml")
	write(t, p, "v1")
	w := newWatcherOpts(t, p, opts)

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
func TestSymlinkSwap(t *testing.T) { bothModes(t, testSymlinkSwap) }

func testSymlinkSwap(t *testing.T, opts Options) {
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
	w := newWatcherOpts(t, filepath.Join(dir, "p.yaml"), opts)
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
	// The new target's directory is watched from the report on: an edit
	// there is seen, and so is a swap back to the old one and an edit in
	// it.
	write(t, filepath.Join(dir, "..v2", "p.yaml"), "..v2, edited")
	expectChange(t, w, "an edit in the new target's directory")
	must(t, os.Symlink("..v1", filepath.Join(dir, "..data_tmp")))
	must(t, os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	expectChange(t, w, "a swap back")
	write(t, filepath.Join(dir, "..v1", "p.yaml"), "..v1, edited")
	expectChange(t, w, "an edit in the old target's directory, again the target")
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

// TestPollingComparesContent: a poll that finds new metadata (a touch)
// but the same content finds no change; new content, a new pipeline file
// and a removed one are changes; other files are not looked at.
func TestPollingComparesContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "p.yaml")
	write(t, p, "v1")
	w := &Watcher{path: dir} // its loop is not running: the test polls
	w.polled = w.poll()
	later := time.Now().Add(time.Hour)
	must(t, os.Chtimes(p, later, later))
	if w.pollChanged() {
		t.Error("a touch without a content change is a change")
	}
	write(t, filepath.Join(dir, "out.jsonl"), "x")
	write(t, filepath.Join(dir, ".p.yaml.swp"), "x")
	if w.pollChanged() {
		t.Error("files that are not pipeline files changed something")
	}
	for _, step := range []struct {
		what string
		do   func()
	}{
		{"new content of the same size", func() { write(t, p, "v2") }},
		{"a new pipeline file", func() { write(t, filepath.Join(dir, "q.yml"), "q") }},
		{"a removed pipeline file", func() { must(t, os.Remove(filepath.Join(dir, "q.yml"))) }},
	} {
		step.do()
		if !w.pollChanged() {
			t.Errorf("%s is not a change", step.what)
		}
	}
	if w.pollChanged() {
		t.Error("a change is found twice")
	}
}

// TestOnlyPipelineFilesCount: the events that make a reload check are
// those of pipeline files and of the links leading to them, in file and
// directory mode; outputs, state files, swap files and subdirectories
// next to them do not count.
func TestOnlyPipelineFilesCount(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "conf")
	os.Mkdir(conf, 0o755)
	os.Mkdir(filepath.Join(conf, "..v1"), 0o755)
	write(t, filepath.Join(conf, "..v1", "cm.yaml"), "cm")
	must(t, os.Symlink("..v1", filepath.Join(conf, "..data")))
	must(t, os.Symlink("..data/cm.yaml", filepath.Join(conf, "cm.yaml")))
	write(t, filepath.Join(conf, "p.yaml"), "p")
	for _, c := range []struct {
		path string
		yes  []string // relative to dir
		no   []string
	}{
		{
			path: filepath.Join(conf, "p.yaml"),
			yes:  []string{"conf/p.yaml"},
			no:   []string{"conf/out.jsonl", "conf/p.json", "conf/.p.yaml.swp", "conf/q.yaml", "conf/..data", "conf"},
		},
		{
			path: filepath.Join(conf, "cm.yaml"),
			yes:  []string{"conf/cm.yaml", "conf/..data", "conf/..v1", "conf/..v1/cm.yaml"},
			no:   []string{"conf/p.yaml", "conf/..data_tmp", "conf/..v1/out.log"},
		},
		{
			path: conf,
			yes:  []string{"conf", "conf/p.yaml", "conf/q.yml", "conf/cm.yaml", "conf/..data", "conf/..v1/cm.yaml"},
			no:   []string{"conf/out.jsonl", "conf/p.json", "conf/.p.yaml.swp", "conf/.p.json.tmp-1", "other", "conf/..v1/x.log"},
		},
	} {
		w := newWatcher(t, c.path)
		real, err := filepath.EvalSymlinks(dir)
		must(t, err)
		for _, rel := range c.yes {
			if !w.match(fsnotify.Event{Name: filepath.Join(real, rel), Op: fsnotify.Write}) {
				t.Errorf("watching %s: an event on %s does not count", c.path, rel)
			}
		}
		for _, rel := range c.no {
			if w.match(fsnotify.Event{Name: filepath.Join(real, rel), Op: fsnotify.Write}) {
				t.Errorf("watching %s: an event on %s counts", c.path, rel)
			}
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestPollingSeesEditInSameMtimeTick: an edit that keeps the size and
// lands in the same modification-time tick as the poll that read the
// previous content (a coarse timestamp clock, or a quick second save) is
// still found by a later poll.
func TestPollingSeesEditInSameMtimeTick(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "p.yaml")
	// Now, or later (a clock step): however slowly the test runs, the
	// poll below is in the same tick.
	mtime := time.Now().Add(time.Minute)
	write(t, p, "v1")
	must(t, os.Chtimes(p, mtime, mtime))
	w := &Watcher{path: dir} // its loop is not running: the test polls
	w.polled = w.poll()
	f, err := os.OpenFile(p, os.O_WRONLY, 0) // in place: same inode
	must(t, err)
	_, err = f.WriteAt([]byte("v2"), 0)
	must(t, err)
	must(t, f.Close())
	must(t, os.Chtimes(p, mtime, mtime)) // the same tick
	if !w.pollChanged() {
		t.Fatal("an edit of the same size in the same mtime tick is not seen")
	}
	if w.pollChanged() {
		t.Error("a change is found twice")
	}
}
