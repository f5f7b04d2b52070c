package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// rrRenamed is the message etld logs when a pipeline file was renamed
// with its content unchanged (internal/engine/runtime.go).
const rrRenamed = "pipeline file renamed: its checkpoint moves with it"

// TestReloadRenamePipelineFile (docs/reload.md, "a renamed file"): in
// a watched config directory, a pipeline file renamed while its input is
// being written stops the old pipeline gracefully and starts it under the
// new name (the pipeline name is the file name).
//
//   - content unchanged: the checkpoint moves with it, so the renamed
//     pipeline continues where the old one stopped: every record exactly
//     once, and the state dir holds b.json and no a.json.
//   - renamed and edited in one step: a new pipeline without a
//     checkpoint; its file source reads again from start_at (beginning)
//     and its sink appends, so exactly the records the old pipeline had
//     read come out twice, once with each version.
func TestReloadRenamePipelineFile(t *testing.T) {
	t.Parallel()

	t.Run("content unchanged: the checkpoint moves with it", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		conf := filepath.Join(dir, "pipelines")
		stateDir := filepath.Join(dir, "state")
		in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
		writeConfig(t, conf, "a.yaml", rlConfig(in, out, "v1"))
		r := rlStartRun(t, dir, conf, in, out)
		if r.name != "a" {
			t.Fatalf("the pipeline of a.yaml started as %q, want a", r.name)
		}

		if err := os.Rename(filepath.Join(conf, "a.yaml"), filepath.Join(conf, "b.yaml")); err != nil {
			t.Fatal(err)
		}
		r.p.eventually(`pipeline b started and "`+rrRenamed+`" logged`, func() bool {
			return rlStarts(r.p, "b") >= 1 && rlCount(r.p, rrRenamed) >= 1
		})
		// b follows the file while it is still being written.
		r.awaitSeq(r.w.n() + 300)

		total := rrFinish(r, "v1")
		checkExactlyOnce(t, "output", r.w.keys(total), r.o.keys())
		for _, x := range r.o.poll() {
			if x.Version != "v1" {
				t.Fatalf("%s carries version %q, want v1 (the content did not change)", x.Key, x.Version)
			}
		}

		// The log: a stopped, its checkpoint moved to b, b resumed from it.
		moved := rlLogged(r.p, rrRenamed)
		if len(moved) != 1 || moved[0]["from"] != "a" || moved[0]["to"] != "b" {
			t.Errorf("logged %q %d times: %v; want once with from a, to b", rrRenamed, len(moved), moved)
		}
		if n := rlCount(r.p, "pipeline file removed: stopping it"); n != 1 {
			t.Errorf(`logged "pipeline file removed: stopping it" %d times, want 1`, n)
		}
		if a, b := rlStarts(r.p, "a"), rlStarts(r.p, "b"); a != 1 || b != 1 {
			t.Errorf("pipeline a started %d times, b %d times; want 1 and 1", a, b)
		}
		if a, b := rrResumed(r.p, "a"), rrResumed(r.p, "b"); a != 0 || b != 1 {
			t.Errorf(`"resuming from checkpoint" logged %d times for a, %d times for b; want 0 and 1 (b continues from a's checkpoint)`, a, b)
		}
		for _, msg := range []string{"pipeline reconfigured in place", "pipeline replaced",
			"renamed pipeline file: its checkpoint stays under the old name; it starts without one"} {
			if n := rlCount(r.p, msg); n != 0 {
				t.Errorf("logged %q %d times, want 0", msg, n)
			}
		}

		// The state dir: b.json, committed by b at its final stop (it read
		// the whole input), and no a.json.
		if _, err := os.Stat(filepath.Join(stateDir, "a.json")); !os.IsNotExist(err) {
			t.Errorf("the state dir still holds a.json (stat: %v); the checkpoint should have moved to b.json", err)
		}
		rrCheckFinalCheckpoint(t, filepath.Join(stateDir, "b.json"), in, out)
		t.Logf("%d records, all once; state dir: %v", total, rrListDir(t, stateDir))
	})

	t.Run("renamed and edited in one step: starts without a checkpoint", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		// The config path is a symlink to a release directory, so that
		// "a.yaml removed, b.yaml with a new set value added" is one atomic
		// step (a rename of a prepared symlink over it, like `ln -sfn`):
		// no reload can see both files, or neither.
		conf := filepath.Join(dir, "pipelines")
		stateDir := filepath.Join(dir, "state")
		in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
		writeConfig(t, dir, "releases/1/a.yaml", rlConfig(in, out, "v1"))
		if err := os.Symlink(filepath.Join("releases", "1"), conf); err != nil {
			t.Fatal(err)
		}
		r := rlStartRun(t, dir, conf, in, out)
		if r.name != "a" {
			t.Fatalf("the pipeline of a.yaml started as %q, want a", r.name)
		}

		writeConfig(t, dir, "releases/2/b.yaml", rlConfig(in, out, "v2"))
		if err := os.Symlink(filepath.Join("releases", "2"), conf+".tmp"); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(conf+".tmp", conf); err != nil {
			t.Fatal(err)
		}
		r.p.eventually("pipeline b started", func() bool { return rlStarts(r.p, "b") >= 1 })
		r.awaitSeq(r.w.n() + 300)

		total := rrFinish(r, "v2")

		// What a had read when it stopped: its final checkpoint (a deleted
		// file's pipeline stops gracefully with a checkpoint, kept under its
		// name) holds its offset in the input. Every line up to there was
		// written by a before b started.
		readByA := rrLinesRead(t, filepath.Join(stateDir, "a.json"), in)
		if readByA == 0 {
			t.Fatal("a.json says pipeline a read nothing; the test needs it to have read some records before the rename")
		}

		// The output: a's records (v1), then b's (v2), b's starting over at
		// the beginning of the input.
		keys := r.o.keys()
		recs := r.o.poll()
		cut := slices.IndexFunc(recs, func(x rlRec) bool { return x.Version != "v1" })
		if cut < 0 {
			t.Fatalf("no record with v2 in the output")
		}
		var v1, v2 []string
		for i, x := range recs {
			switch {
			case x.Version == "v1" && i < cut:
				v1 = append(v1, x.Key)
			case x.Version == "v2":
				v2 = append(v2, x.Key)
			default:
				t.Errorf("output line %d: %s carries %q; want v1 up to line %d, then v2 (a stopped before b started)", i+1, x.Key, x.Version, cut)
			}
		}
		checkExactlyOnce(t, "the v1 records (pipeline a)", r.w.keys(readByA), v1)
		checkExactlyOnce(t, "the v2 records (pipeline b, read from the beginning)", r.w.keys(total), v2)
		counts := map[string]int{}
		for _, k := range keys {
			counts[k]++
		}
		dups := 0
		for _, c := range counts {
			if c > 1 {
				dups++
			}
		}
		if dups != readByA || len(counts) != total {
			t.Errorf("%d distinct records of %d, %d of them twice; want all %d, those pipeline a had read (%d) twice", len(counts), len(keys), dups, total, readByA)
		}
		t.Logf("%d records; pipeline a had read %d when it stopped: %d output lines, %d records twice", total, readByA, len(keys), dups)

		// The log: a removed and stopped, b started afresh.
		if n := rlCount(r.p, "pipeline file removed: stopping it"); n != 1 {
			t.Errorf(`logged "pipeline file removed: stopping it" %d times, want 1`, n)
		}
		if a, b := rlStarts(r.p, "a"), rlStarts(r.p, "b"); a != 1 || b != 1 {
			t.Errorf("pipeline a started %d times, b %d times; want 1 and 1", a, b)
		}
		if n := rrResumed(r.p, "b"); n != 0 {
			t.Errorf(`"resuming from checkpoint" logged %d times for b, want 0 (its content changed: no checkpoint)`, n)
		}
		for _, msg := range []string{rrRenamed, "pipeline reconfigured in place", "pipeline replaced"} {
			if n := rlCount(r.p, msg); n != 0 {
				t.Errorf("logged %q %d times, want 0", msg, n)
			}
		}
		rrCheckFinalCheckpoint(t, filepath.Join(stateDir, "b.json"), in, out)
		t.Logf("state dir: %v", rrListDir(t, stateDir))
	})
}

// rrFinish stops the writer, waits until the output holds a record with
// version for every record written, checks that the etld process never
// restarted, and stops it with SIGTERM (exit 0). It returns the number of
// records written.
func rrFinish(r *rlRun, version string) int {
	r.t.Helper()
	total := r.w.halt()
	if r.w.err != nil {
		r.t.Fatalf("writer: %v", r.w.err)
	}
	have := 0
	r.p.eventually(func() string {
		return fmt.Sprintf("every one of %d records in the output with %s (%d are); %s", total, version, have, r.o.describe())
	}, func() bool {
		seen := make(map[int]bool, total)
		for _, x := range r.o.poll() {
			if x.Version == version && x.Seq < total {
				seen[x.Seq] = true
			}
		}
		have = len(seen)
		return have == total
	})
	rlStillRunning(r.t, r.p, r.pid, "after the rename")
	r.p.expectExit(r.p.stop(), 0, "SIGTERM after the rename")
	r.o.poll()
	return total
}

// rrResumed counts the "resuming from checkpoint" lines of pipeline name.
func rrResumed(p *proc, name string) int {
	n := 0
	for _, v := range rlLogged(p, "resuming from checkpoint") {
		if v["pipeline"] == name {
			n++
		}
	}
	return n
}

// rrSourceOffset returns the committed offset of the file in of source
// "app" in the checkpoint at path.
func rrSourceOffset(t testing.TB, path, in string) int64 {
	t.Helper()
	cp, ok, err := crashLoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("no checkpoint %s", filepath.Base(path))
	}
	var pos []crashSourcePos
	if err := json.Unmarshal(cp.Sources["app"], &pos); err != nil {
		t.Fatalf("%s: source app: %v (%s)", filepath.Base(path), err, cp.Sources["app"])
	}
	for _, p := range pos {
		if p.Path == in {
			return p.Offset
		}
	}
	t.Fatalf("%s: source app has no position for %s: %s", filepath.Base(path), in, cp.Sources["app"])
	return 0
}

// rrLinesRead is the number of input lines before the offset of the
// input in the checkpoint at path: the records read by that pipeline.
func rrLinesRead(t testing.TB, path, in string) int {
	t.Helper()
	data := readFile(t, in)
	off := rrSourceOffset(t, path, in)
	if off > int64(len(data)) || (off > 0 && data[off-1] != '\n') {
		t.Fatalf("%s: offset %d in %s (%d bytes) is not at the end of a line", filepath.Base(path), off, filepath.Base(in), len(data))
	}
	return bytes.Count(data[:off], []byte{'\n'})
}

// rrCheckFinalCheckpoint checks the checkpoint at path after a graceful
// stop: the source read the whole input, the sink's committed size is the
// whole output.
func rrCheckFinalCheckpoint(t testing.TB, path, in, out string) {
	t.Helper()
	if off, size := rrSourceOffset(t, path, in), int64(len(readFile(t, in))); off != size {
		t.Errorf("%s: source app at offset %d of %s, want its end (%d bytes)", filepath.Base(path), off, filepath.Base(in), size)
	}
	cp, _, err := crashLoadCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	var sink crashSinkState
	if err := json.Unmarshal(cp.Sinks["out"], &sink); err != nil {
		t.Fatalf("%s: sink out: %v (%s)", filepath.Base(path), err, cp.Sinks["out"])
	}
	if size := int64(len(readFile(t, out))); sink.Path != out || sink.Size != size {
		t.Errorf("%s: sink out at %s size %d, want %s size %d", filepath.Base(path), sink.Path, sink.Size, out, size)
	}
}

// rrListDir lists the names in dir (hidden ones included).
func rrListDir(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
