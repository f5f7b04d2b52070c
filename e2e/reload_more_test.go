package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Hot reload under load (SPEC §3.2, issue 5). In every test a writer
// appends sequence-numbered records at a steady rate to a followed file
// while the test edits the config; every test checks that each record is
// written exactly once, that the etld process is the one the test
// started (no restart), and that the records written once the reload is
// applied carry the new behaviour.

// rlRate is the writers' steady rate, in records per second per file.
const rlRate = 2000

// rlConfig is the pipeline of most tests: a followed file, a worker that
// parses records and sets "version", a file sink.
func rlConfig(in, out, version string) string {
	return fmt.Sprintf(`version: 1
checkpoint_interval: 200ms
sources:
  app: { type: file, path: %q, follow: true }
workers:
  enrich:
    inputs: [app]
    concurrency: 2
    steps:
      - parse_json: {}
      - set: { version: %q }
sinks:
  out: { type: file, inputs: [enrich], path: %q }
`, in, version, out)
}

// rlRun is etld running a pipeline on a followed file being written.
type rlRun struct {
	t       *testing.T
	dir     string
	in, out string // input and output files
	cfg     string // the config path given to etld
	p       *proc
	pid     int
	addr    string // the admin server's address
	name    string // the pipeline's name
	w       *rlWriter
	o       *rlOutput
}

// rlStartRun starts etld on cfg (already written), waits for its pipeline
// to start, starts the writer on in and waits until records with version
// v1 come out.
func rlStartRun(t *testing.T, dir, cfg, in, out string, extra ...string) *rlRun {
	t.Helper()
	return rlStartRunOpts(t, dir, cfg, in, out, rlWriterOpts{}, extra...)
}

// rlStartRunOpts is rlStartRun with a writer that has opts.
func rlStartRunOpts(t *testing.T, dir, cfg, in, out string, opts rlWriterOpts, extra ...string) *rlRun {
	t.Helper()
	r := &rlRun{t: t, dir: dir, in: in, out: out, cfg: cfg}
	if err := os.MkdirAll(filepath.Dir(in), 0o755); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(extra, "--admin") {
		extra = append(extra, "--admin", "127.0.0.1:0")
	}
	r.p = startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"), extra...)...)
	r.pid = r.p.cmd.Process.Pid
	r.p.eventually("the pipeline has started", func() bool { return r.p.logged("pipeline started") })
	r.name, _ = rlLogged(r.p, "pipeline started")[0]["pipeline"].(string)
	r.addr = rlAdminAddr(r.p)
	r.w = rlStartWriterOpts(t, in, "app", rlRate, opts)
	r.o = rlFollow(t, out)
	r.awaitSeq(300)
	return r
}

// awaitSeq waits until a record with seq >= seq is in the output.
func (r *rlRun) awaitSeq(seq int) {
	r.t.Helper()
	r.p.eventually(func() string { return fmt.Sprintf("a record with seq >= %d in the output; %s", seq, r.o.describe()) },
		func() bool { return r.o.has(func(x rlRec) bool { return x.Seq >= seq }) })
}

// finish stops the writer, waits until the pipeline's source has read
// every record written, checks that the process never restarted and
// stops it gracefully, which writes out everything read. It returns the
// number of records written.
func (r *rlRun) finish() int {
	r.t.Helper()
	total := r.w.halt()
	if r.w.err != nil {
		r.t.Fatalf("writer: %v", r.w.err)
	}
	rlAwaitRead(r.p, r.addr, r.name, "app", total)
	rlStillRunning(r.t, r.p, r.pid, "after the reloads")
	r.p.expectExit(r.p.stop(), 0, "SIGTERM after the reloads")
	r.o.poll()
	return total
}

// rlAwaitRead waits until source src of pipeline name has read n records
// (etld_stage_records_out_total: counters are kept across reloads).
func rlAwaitRead(p *proc, addr, name, src string, n int) {
	p.t.Helper()
	got := -1.0
	p.eventually(func() string { return fmt.Sprintf("source %s of %s has read %d records (now %v)", src, name, n, got) }, func() bool {
		got = rlMetric(addr, "etld_stage_records_out_total", `pipeline="`+name+`"`, `stage="`+src+`"`)
		return got >= float64(n)
	})
}

// checkInPlace checks that the pipeline was reconfigured in place
// reconfigs times, replacing only the worker, and never restarted.
func (r *rlRun) checkInPlace(reconfigs int) {
	r.t.Helper()
	got := rlLogged(r.p, "pipeline reconfigured in place")
	if len(got) != reconfigs {
		r.t.Errorf(`logged "pipeline reconfigured in place" %d times, want %d`, len(got), reconfigs)
	}
	for _, v := range got {
		if rep, kept := rlStrs(v, "replaced"), rlStrs(v, "kept"); !slices.Equal(rep, []string{"enrich"}) || !slices.Equal(kept, []string{"app", "out"}) {
			r.t.Errorf("reconfigured in place: replaced %v, kept %v; want [enrich] and [app out]", rep, kept)
		}
	}
	if n := rlStarts(r.p, r.name); n != 1 {
		r.t.Errorf("the pipeline started %d times, want 1: it was restarted", n)
	}
	if n := rlCount(r.p, "pipeline replaced"); n != 0 {
		r.t.Errorf(`logged "pipeline replaced" %d times, want 0: the change is applied in place`, n)
	}
}

// TestReloadSaveKinds: every way people and tools save a file is seen
// and applied: an editor's write-temp-then-rename, an in-place
// truncate-and-write, a Kubernetes ConfigMap symlink swap (a single file
// and a directory), a delete then re-create within the debounce, and a
// delete seen by a reload (which keeps the pipeline running) followed by
// the re-creation. The edit changes the value a worker sets.
func TestReloadSaveKinds(t *testing.T) {
	t.Parallel()
	// prepare writes v1 and returns the config path to give etld and the
	// function that saves v2.
	type prepare func(t *testing.T, dir, v1 string) (string, func(r *rlRun, v2 string))
	plain := func(save func(r *rlRun, v2 string)) prepare {
		return func(t *testing.T, dir, v1 string) (string, func(*rlRun, string)) {
			return writeConfig(t, dir, "p.yaml", v1), save
		}
	}
	configMap := func(asDir bool) prepare {
		return func(t *testing.T, dir, v1 string) (string, func(*rlRun, string)) {
			cm := &rlConfigMap{dir: filepath.Join(dir, "cm")}
			cm.publish(t, map[string]string{"p.yaml": v1})
			path := filepath.Join(dir, "cm", "p.yaml")
			if asDir {
				path = cm.dir
			}
			return path, func(r *rlRun, v2 string) { cm.publish(r.t, map[string]string{"p.yaml": v2}) }
		}
	}
	for _, k := range []struct {
		name    string
		prepare prepare
	}{
		{"write temp then rename", plain(func(r *rlRun, v2 string) { rlSaveRename(r.t, r.cfg, v2) })},
		{"truncate and write in place", plain(func(r *rlRun, v2 string) { rlSaveInPlace(r.t, r.cfg, v2) })},
		{"configmap symlink swap, file", configMap(false)},
		{"configmap symlink swap, directory", configMap(true)},
		{"delete then re-create", plain(func(r *rlRun, v2 string) {
			if err := os.Remove(r.cfg); err != nil {
				r.t.Fatal(err)
			}
			writeConfig(r.t, r.dir, "p.yaml", v2)
		})},
		{"delete, reload, re-create", plain(func(r *rlRun, v2 string) {
			if err := os.Remove(r.cfg); err != nil {
				r.t.Fatal(err)
			}
			// The reload that finds no file keeps the pipeline running
			// as it is: records keep coming out, with v1.
			rlAwaitCount(r.p, "config path unreadable; every running pipeline is kept", 0)
			r.awaitSeq(r.w.n() + 300)
			if n := rlCount(r.p, "pipeline reconfigured in place") + rlCount(r.p, "pipeline replaced"); n != 0 {
				r.t.Fatalf("the config file's deletion changed the running pipeline")
			}
			writeConfig(r.t, r.dir, "p.yaml", v2)
		})},
	} {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
			cfg, save := k.prepare(t, dir, rlConfig(in, out, "v1"))
			r := rlStartRun(t, dir, cfg, in, out)

			save(r, rlConfig(in, out, "v2"))
			rlAwaitCount(r.p, "pipeline reconfigured in place", 0)
			after := r.w.n() // written from now on: read by the new worker
			r.awaitSeq(after + 300)

			total := r.finish()
			checkExactlyOnce(t, "output", r.w.keys(total), r.o.keys())
			rlCheckSwitch(t, "output", r.o.poll(), "v1", "v2", after)
			r.checkInPlace(1)
		})
	}
}

// TestReloadInvalidThenValid: an invalid save leaves the running
// pipeline untouched (its output goes on with the old behaviour, the
// problem is logged as FILE:LINE:COL, the failure is counted in
// etld_config_reloads_total{result="failure"}); the valid save after it
// applies normally.
func TestReloadInvalidThenValid(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
	cfg := writeConfig(t, dir, "p.yaml", rlConfig(in, out, "v1"))
	r := rlStartRun(t, dir, cfg, in, out)
	addr := r.addr
	reloads := func(result string) float64 {
		return rlMetric(addr, "etld_config_reloads_total", `pipeline="p"`, `result="`+result+`"`)
	}
	if f, s := reloads("failure"), reloads("success"); f != 0 || s != 0 {
		t.Fatalf("before any reload: etld_config_reloads_total failure %v, success %v; want 0 and 0", f, s)
	}

	// A step type misspelt: "sett".
	bad := strings.Replace(rlConfig(in, out, "v2"), "- set:", "- sett:", 1)
	rlSaveRename(t, cfg, bad)
	rlAwaitCount(r.p, "invalid config: the running pipeline is kept as it is", 0)
	// Lines written after the failed reload still get the old behaviour.
	horizon := r.w.n() + 300
	r.awaitSeq(horizon)
	problem := regexp.MustCompile(`^` + regexp.QuoteMeta(cfg) + `:\d+:\d+: .*sett`)
	found := false
	for _, v := range rlLogged(r.p, "config problem") {
		d, _ := v["diagnostic"].(string)
		found = found || problem.MatchString(d)
	}
	if !found {
		t.Errorf("no \"config problem\" log line matching %s; got %v", problem, rlLogged(r.p, "config problem"))
	}
	// /api/pipelines tells what is wrong with the file, not only that
	// something is.
	var lastErr string
	r.p.eventually("/api/pipelines to show the invalid reload of p", func() bool {
		lastErr = rlLastReloadError(t, addr, "p")
		return lastErr != ""
	})
	if !problem.MatchString(strings.TrimPrefix(lastErr, "the pipeline file has errors; the running version, if any, is kept: ")) {
		t.Errorf("/api/pipelines last_reload.error of p = %q; want the FILE:LINE:COL problem %s", lastErr, problem)
	}
	if f, s := reloads("failure"), reloads("success"); f != 1 || s != 0 {
		t.Errorf("after the invalid save: etld_config_reloads_total failure %v, success %v; want 1 and 0", f, s)
	}
	if n := rlCount(r.p, "pipeline reconfigured in place") + rlCount(r.p, "pipeline replaced"); n != 0 {
		t.Fatalf("the invalid save changed the running pipeline")
	}

	rlSaveRename(t, cfg, rlConfig(in, out, "v2"))
	rlAwaitCount(r.p, "pipeline reconfigured in place", 0)
	after := r.w.n()
	r.awaitSeq(after + 300)
	if f, s := reloads("failure"), reloads("success"); f != 1 || s != 1 {
		t.Errorf("after the valid save: etld_config_reloads_total failure %v, success %v; want 1 and 1", f, s)
	}

	total := r.finish()
	checkExactlyOnce(t, "output", r.w.keys(total), r.o.keys())
	if cut := rlCheckSwitch(t, "output", r.o.poll(), "v1", "v2", after); cut <= horizon {
		t.Errorf("records from seq %d on carry v2, but those up to seq %d were read after the invalid save and before the valid one", cut, horizon)
	}
	r.checkInPlace(1)
}

// TestReloadWorkerStepsAndConcurrency: a reload that changes a worker's
// steps (a filter and an eval added, the set value changed) and its
// concurrency (1 to 4) replaces that worker only; records read after the
// swap are filtered and enriched, those before are not, and the
// filtered ones are exactly the debug records after the swap (the
// worker's filtered counter says so, so none of them was lost instead).
func TestReloadWorkerStepsAndConcurrency(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
	v1 := strings.Replace(rlConfig(in, out, "v1"), "concurrency: 2", "concurrency: 1", 1)
	v2 := strings.Replace(rlConfig(in, out, "v2"), "concurrency: 2", "concurrency: 4", 1)
	v2 = strings.Replace(v2, "      - parse_json: {}\n", "      - parse_json: {}\n      - filter: 'level != \"debug\"'\n", 1)
	v2 = strings.Replace(v2, "\nsinks:", "\n      - eval: { cents: 'int(amount * 100)' }\nsinks:", 1)
	cfg := writeConfig(t, dir, "p.yaml", v1)
	r := rlStartRun(t, dir, cfg, in, out)
	addr := r.addr

	rlSaveRename(t, cfg, v2)
	rlAwaitCount(r.p, "pipeline reconfigured in place", 0)
	after := r.w.n()
	r.awaitSeq(after + 300)
	for _, st := range rlStages(t, addr, "p") {
		if st.ID == "enrich" && (st.Concurrency != 4 || len(st.Steps) != 4) {
			t.Errorf("after the reload /api/pipelines shows enrich with concurrency %d and steps %v; want 4 and 4 steps", st.Concurrency, st.Steps)
		}
	}

	// Once every record written is either filtered or handed to the sink,
	// the counters are final; the graceful stop then writes out the rest.
	total := r.w.halt()
	if r.w.err != nil {
		t.Fatalf("writer: %v", r.w.err)
	}
	var gotFiltered float64
	r.p.eventually(func() string { return fmt.Sprintf("%d records filtered or written; %s", total, r.o.describe()) }, func() bool {
		gotFiltered = rlMetric(addr, "etld_stage_records_dropped_total", `pipeline="p"`, `stage="enrich"`, `reason="filtered"`)
		written := rlMetric(addr, "etld_stage_records_out_total", `pipeline="p"`, `stage="out"`)
		return gotFiltered >= 0 && written >= 0 && int(gotFiltered+written) >= total
	})
	rlStillRunning(t, r.p, r.pid, "after the reload")
	r.p.expectExit(r.p.stop(), 0, "SIGTERM after the reload")

	// Records up to the last v1 one pass unfiltered; after it, the new
	// worker filters the debug ones.
	cut := 0
	for _, x := range r.o.poll() {
		if x.Version == "v1" {
			cut = max(cut, x.Seq+1)
		}
	}
	filtered := 0
	var want []string
	for s := range total {
		if s >= cut && isDebug(s) {
			filtered++
		} else {
			want = append(want, key("app", s))
		}
	}
	checkExactlyOnce(t, "output", want, r.o.keys())
	rlCheckSwitch(t, "output", r.o.poll(), "v1", "v2", after)
	if gotFiltered != float64(filtered) {
		t.Errorf("the new worker filtered %v records; the debug records from seq %d on are %d", gotFiltered, cut, filtered)
	}
	bad := 0
	for _, x := range r.o.poll() {
		wantCents := x.Version == "v2"
		if hasCents := x.Cents != nil; hasCents != wantCents || (hasCents && *x.Cents != int(amount(x.Seq)*100)) {
			if bad++; bad <= 5 {
				t.Errorf("%s (version %s): cents %v, want it only with v2, = int(amount * 100)", x.Key, x.Version, x.Cents)
			}
		}
		if x.Version == "v2" && x.Level == "debug" {
			t.Errorf("%s: a debug record read after the reload was not filtered", x.Key)
		}
	}
	r.checkInPlace(1)
}

// TestReloadAddRemoveSink: a sink added by a reload receives every record
// from its addition until a later reload removes it, each once; the
// records written after its addition was applied are all in it and none
// written after its removal was applied; the sink that stays keeps
// every record exactly once throughout.
func TestReloadAddRemoveSink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
	copyPath := filepath.Join(dir, "out", "copy.jsonl")
	v1 := rlConfig(in, out, "v1")
	v2 := v1 + fmt.Sprintf("  copy: { type: file, inputs: [enrich], path: %q }\n", copyPath)
	cfg := writeConfig(t, dir, "p.yaml", v1)
	r := rlStartRun(t, dir, cfg, in, out)
	cp := rlFollow(t, copyPath)

	rlSaveRename(t, cfg, v2)
	rlAwaitCount(r.p, "pipeline reconfigured in place", 0)
	added := r.w.n() // every record from here on must reach the copy
	r.p.eventually(func() string { return "records in the copy; " + cp.describe() }, func() bool {
		return cp.has(func(x rlRec) bool { return x.Seq >= added+300 })
	})
	seen := 0 // a record the copy has before its removal
	for _, x := range cp.poll() {
		seen = max(seen, x.Seq)
	}

	rlSaveRename(t, cfg, v1)
	rlAwaitCount(r.p, "pipeline reconfigured in place", 1)
	removed := r.w.n() // no record from here on may reach the copy
	r.awaitSeq(removed + 300)

	total := r.finish()
	checkExactlyOnce(t, "out.jsonl", r.w.keys(total), r.o.keys())

	// The copy holds one contiguous run of seqs, each once.
	copied := cp.keys()
	seqs := make([]int, 0, len(copied))
	for _, k := range copied {
		_, s := splitKey(k)
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	if len(seqs) == 0 {
		t.Fatal("the added sink received nothing")
	}
	lo, hi := seqs[0], seqs[len(seqs)-1]
	var wantCopy []string
	for s := lo; s <= hi; s++ {
		wantCopy = append(wantCopy, key("app", s))
	}
	checkExactlyOnce(t, "copy.jsonl", wantCopy, copied)
	t.Logf("copy.jsonl holds seq %d to %d; the addition was applied before seq %d was written, the removal before seq %d", lo, hi, added, removed)
	if lo > added {
		t.Errorf("copy.jsonl starts at seq %d, but every record from seq %d on was read after the sink was added", lo, added)
	}
	if hi < seen {
		t.Errorf("copy.jsonl ends at seq %d, but it had seq %d before its removal", hi, seen)
	}
	if hi >= removed {
		t.Errorf("copy.jsonl has seq %d, written after the sink's removal was applied (from seq %d on)", hi, removed)
	}
	for i, v := range rlLogged(r.p, "pipeline reconfigured in place") {
		field, want := "added", []string{"copy"}
		if i == 1 {
			field = "removed"
		}
		if got := rlStrs(v, field); !slices.Equal(got, want) {
			t.Errorf("reconfiguration %d: %s %v, want %v", i+1, field, got, want)
		}
		if got := rlStrs(v, "kept"); !slices.Equal(got, []string{"app", "enrich", "out"}) {
			t.Errorf("reconfiguration %d: kept %v, want every other stage", i+1, got)
		}
	}
	if n := rlStarts(r.p, r.name); n != 1 {
		t.Errorf("the pipeline started %d times, want 1", n)
	}
}

// TestReloadSaveStorm: 50 saves in about a second, alternating rename and
// in-place saves, each with a new version: the debounce turns them into a
// few reloads (fewer than the saves), nothing crashes, the last version
// wins, versions only ever move forward in input order, and every record
// is written exactly once.
func TestReloadSaveStorm(t *testing.T) {
	t.Parallel()
	const saves = 50
	dir := t.TempDir()
	in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
	cfg := writeConfig(t, dir, "p.yaml", rlConfig(in, out, "v0"))
	r := rlStartRun(t, dir, cfg, in, out)

	// A steady storm: one save every 20ms (pacing a load generator, not
	// synchronising with etld).
	tick := time.NewTicker(20 * time.Millisecond)
	for i := 1; i <= saves; i++ {
		<-tick.C
		if i%2 == 0 {
			rlSaveInPlace(t, cfg, rlConfig(in, out, "v"+strconv.Itoa(i)))
		} else {
			rlSaveRename(t, cfg, rlConfig(in, out, "v"+strconv.Itoa(i)))
		}
	}
	tick.Stop()
	final := "v" + strconv.Itoa(saves)
	r.p.eventually(func() string { return "a record with the last version; " + r.o.describe() }, func() bool {
		return r.o.has(func(x rlRec) bool { return x.Version == final })
	})
	after := r.w.n()
	r.awaitSeq(after + 300)
	total := r.finish()

	checkExactlyOnce(t, "output", r.w.keys(total), r.o.keys())
	recs := slices.Clone(r.o.poll())
	slices.SortFunc(recs, func(a, b rlRec) int { return a.Seq - b.Seq })
	prev, bad := 0, 0
	versions := map[string]bool{}
	for _, x := range recs {
		v, err := strconv.Atoi(strings.TrimPrefix(x.Version, "v"))
		if err != nil || v < prev || (x.Seq >= after && x.Version != final) {
			if bad++; bad <= 5 {
				t.Errorf("%s carries %q after a record with v%d (records written after the last version showed up, from seq %d, must carry %s)", x.Key, x.Version, prev, after, final)
			}
			continue
		}
		prev = v
		versions[x.Version] = true
	}
	reloads := rlCount(r.p, "config reloaded")
	reconfigs := rlCount(r.p, "pipeline reconfigured in place")
	t.Logf("%d saves: %d reloads, %d in-place reconfigurations, versions seen in the output: %d", saves, reloads, reconfigs, len(versions))
	if reloads >= saves {
		t.Errorf("%d saves gave %d reloads: the debounce did not coalesce them", saves, reloads)
	}
	if n := rlStarts(r.p, r.name); n != 1 {
		t.Errorf("the pipeline started %d times, want 1", n)
	}
}

// TestReloadDirectory: with a config directory, a new pipeline file
// starts its pipeline; a bad edit to it leaves both pipelines running as
// they are; deleting it stops its pipeline gracefully, with its output
// complete and exactly once for what it read; adding it back resumes it
// from its final checkpoint. The other pipeline is never touched.
func TestReloadDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	conf := filepath.Join(dir, "pipelines")
	aIn, aOut := filepath.Join(dir, "logs", "a.log"), filepath.Join(dir, "out", "a.jsonl")
	bIn, bOut := filepath.Join(dir, "logs", "b.log"), filepath.Join(dir, "out", "b.jsonl")
	writeConfig(t, conf, "a.yaml", rlConfig(aIn, aOut, "a1"))
	r := rlStartRun(t, dir, conf, aIn, aOut)
	bw := rlStartWriter(t, bIn, "b", rlRate)
	bo := rlFollow(t, bOut)
	awaitB := func(seq int) {
		t.Helper()
		r.p.eventually(func() string { return fmt.Sprintf("seq %d in b's output; %s", seq, bo.describe()) },
			func() bool { return bo.has(func(x rlRec) bool { return x.Seq >= seq }) })
	}
	bCfg := rlConfig(bIn, bOut, "b1")

	// Add b: it starts and reads b.log from its beginning.
	writeConfig(t, conf, "b.yaml", bCfg)
	r.p.eventually("pipeline b has started", func() bool { return rlStarts(r.p, "b") == 1 })
	awaitB(bw.n() + 300)

	// A bad edit to b: both pipelines go on as they are.
	rlSaveInPlace(t, filepath.Join(conf, "b.yaml"), strings.Replace(bCfg, "version: 1", "version: 1\nbogus: true", 1))
	rlAwaitCount(r.p, "invalid config: the running pipeline is kept as it is", 0)
	for _, v := range rlLogged(r.p, "invalid config: the running pipeline is kept as it is") {
		if v["pipeline"] != "b" {
			t.Errorf("invalid config logged for pipeline %v, want b", v["pipeline"])
		}
	}
	awaitB(bw.n() + 300)
	r.awaitSeq(r.w.n() + 300)

	// Delete b: it stops gracefully.
	if err := os.Remove(filepath.Join(conf, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	r.p.eventually("pipeline b has finished", func() bool {
		return slices.ContainsFunc(rlLogged(r.p, "pipeline finished"), func(v map[string]any) bool { return v["pipeline"] == "b" })
	})
	stoppedAt := len(bo.poll())
	seqs := make([]string, 0, stoppedAt)
	for i := range stoppedAt {
		seqs = append(seqs, key("b", i))
	}
	checkExactlyOnce(t, "b.jsonl when b stopped", seqs, bo.keys())
	if stoppedAt == 0 {
		t.Fatal("b wrote nothing")
	}
	r.awaitSeq(r.w.n() + 300)

	// Add b back: it resumes where it stopped.
	writeConfig(t, conf, "b.yaml", bCfg)
	r.p.eventually("pipeline b has started again", func() bool { return rlStarts(r.p, "b") == 2 })
	bTotal := bw.halt()
	rlAwaitRead(r.p, r.addr, "b", "app", bTotal)

	aTotal := r.finish()
	checkExactlyOnce(t, "a.jsonl", r.w.keys(aTotal), r.o.keys())
	checkExactlyOnce(t, "b.jsonl", bw.keys(bTotal), bo.keys())
	for _, x := range r.o.poll() {
		if x.Version != "a1" {
			t.Fatalf("a.jsonl: %s carries %q", x.Key, x.Version)
		}
	}
	// Pipeline a was left alone by every reload.
	for _, v := range rlLogged(r.p, "config reloaded") {
		if slices.Contains(rlStrs(v, "replaced"), "a") || slices.Contains(rlStrs(v, "stopped"), "a") || slices.Contains(rlStrs(v, "started"), "a") {
			t.Errorf("a reload changed pipeline a: %v", v)
		}
	}
	for _, msg := range []string{"pipeline reconfigured in place", "pipeline replaced"} {
		if n := rlCount(r.p, msg); n != 0 {
			t.Errorf("logged %q %d times, want 0", msg, n)
		}
	}
	if n := rlCount(r.p, "pipeline file removed: stopping it"); n != 1 {
		t.Errorf(`logged "pipeline file removed: stopping it" %d times, want 1`, n)
	}
	if n := rlStarts(r.p, "a"); n != 1 {
		t.Errorf("pipeline a started %d times, want 1", n)
	}
}

// TestReloadWholeRestart: changes that cannot be swapped in place
// (checkpoint_interval, dead_letter) restart the whole pipeline inside the
// same process, from its final checkpoint: nothing is lost or written
// twice.
func TestReloadWholeRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
	rejects := filepath.Join(dir, "out", "rejects.jsonl")
	cfg := writeConfig(t, dir, "p.yaml", rlConfig(in, out, "v1"))
	r := rlStartRun(t, dir, cfg, in, out)

	v2 := strings.Replace(rlConfig(in, out, "v2"), "checkpoint_interval: 200ms", "checkpoint_interval: 300ms", 1)
	rlSaveRename(t, cfg, v2)
	rlAwaitCount(r.p, "pipeline replaced", 0)
	after2 := r.w.n()
	r.awaitSeq(after2 + 300)

	v3 := strings.Replace(rlConfig(in, out, "v3"), "version: 1\n", "version: 1\ndead_letter: rejects\n", 1) +
		fmt.Sprintf("  rejects: { type: file, path: %q }\n", rejects)
	rlSaveRename(t, cfg, v3)
	rlAwaitCount(r.p, "pipeline replaced", 1)
	after3 := r.w.n()
	r.awaitSeq(after3 + 300)

	total := r.finish()
	checkExactlyOnce(t, "output", r.w.keys(total), r.o.keys())
	recs := r.o.poll()
	var v12, v23 []rlRec
	for _, x := range recs {
		if x.Version != "v3" {
			v12 = append(v12, x)
		}
		if x.Version != "v1" {
			v23 = append(v23, x)
		}
	}
	rlCheckSwitch(t, "output, checkpoint_interval changed", v12, "v1", "v2", after2)
	rlCheckSwitch(t, "output, dead_letter added", v23, "v2", "v3", after3)
	if n := rlStarts(r.p, r.name); n != 3 {
		t.Errorf("the pipeline started %d times, want 3 (start and two restarts)", n)
	}
	if n := rlCount(r.p, "pipeline reconfigured in place"); n != 0 {
		t.Errorf(`logged "pipeline reconfigured in place" %d times, want 0`, n)
	}
}

// TestReloadNoWatchSIGHUP: with --no-watch a save is not applied by
// itself; SIGHUP applies it.
func TestReloadNoWatchSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
	cfg := writeConfig(t, dir, "p.yaml", rlConfig(in, out, "v1"))
	r := rlStartRun(t, dir, cfg, in, out, "--no-watch")

	rlSaveRename(t, cfg, rlConfig(in, out, "v2"))
	// Two seconds' worth of records written after the save (far beyond
	// the debounce) still come out with v1, and nothing was reloaded.
	saved := r.w.n()
	r.awaitSeq(saved + 2*rlRate)
	if n := rlCount(r.p, "config reloaded"); n != 0 {
		t.Fatalf("with --no-watch, a save was reloaded (%d reloads)", n)
	}
	r.p.signal(syscall.SIGHUP)
	rlAwaitCount(r.p, "pipeline reconfigured in place", 0)
	after := r.w.n()
	r.awaitSeq(after + 300)

	total := r.finish()
	checkExactlyOnce(t, "output", r.w.keys(total), r.o.keys())
	if cut := rlCheckSwitch(t, "output", r.o.poll(), "v1", "v2", after); cut <= saved+2*rlRate {
		t.Errorf("v2 from seq %d on, but records up to %d came out before the SIGHUP", cut, saved+2*rlRate)
	}
	r.checkInPlace(1)
	for _, v := range rlLogged(r.p, "config reloaded") {
		if v["trigger"] != "SIGHUP" {
			t.Errorf("reload triggered by %v, want SIGHUP", v["trigger"])
		}
	}
}

// TestReloadDeadLetterSink: a reload that changes an option of the
// dead-letter sink (its buffer size; dead_letter itself stays the same)
// while bad records keep coming replaces that sink in place like any
// other: the reload succeeds, etld keeps running, and every record is in
// the output or in the dead-letter file exactly once.
//
// A regression test: the kept stages' edges to the old dead-letter sink
// used to stay open, so the swap waited for that sink until
// --shutdown-timeout and then etld panicked (send on closed channel) or,
// without bad records in flight, the pipeline stopped for good.
func TestReloadDeadLetterSink(t *testing.T) {
	t.Parallel()
	const badEvery = 50
	dir := t.TempDir()
	in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
	rejects := filepath.Join(dir, "out", "rejects.jsonl")
	cfgOf := func(buf string) string {
		return strings.Replace(rlConfig(in, out, "v1"), "version: 1\n", "version: 1\ndead_letter: rejects\n", 1) +
			fmt.Sprintf("  rejects: { type: file, path: %q, buffer_size: %s }\n", rejects, buf)
	}
	cfg := writeConfig(t, dir, "p.yaml", cfgOf("64KiB"))
	r := rlStartRunOpts(t, dir, cfg, in, out, rlWriterOpts{badEvery: badEvery}, "--shutdown-timeout", "3s")
	dl := &lineCounter{path: rejects}
	r.p.eventually("bad records in rejects.jsonl", func() bool { return dl.count() > 3 })

	rlReloadInPlace(r, func() { rlSaveRename(t, cfg, cfgOf("128KiB")) })
	after := r.w.n()
	r.awaitSeq(after + 300)
	total := r.finish()

	got := append(r.o.keys(), rlRejectedKeys(t, rejects)...)
	checkExactlyOnce(t, "out.jsonl and rejects.jsonl", r.w.keys(total), got)
	if v := rlLogged(r.p, "pipeline reconfigured in place"); len(v) == 1 {
		if rep := rlStrs(v[0], "replaced"); !slices.Equal(rep, []string{"rejects"}) {
			t.Errorf("replaced %v, want [rejects]", rep)
		}
	}
}

// TestReloadOpenFailure: a reload whose new sink cannot open (its path
// is under a regular file, like a directory the service may not write)
// is rolled back: the previous config runs again from the checkpoint,
// etld keeps running, nothing is lost or written twice. Three such
// reloads in a row, under load.
//
// A regression test: kept sources used to resume before the new stages
// opened, and what they read then was lost when the open failed.
func TestReloadOpenFailure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
	blocked := filepath.Join(writeFile(t, dir, "blocker", nil), "out.jsonl")
	cfg := writeConfig(t, dir, "p.yaml", rlConfig(in, out, "v1"))
	r := rlStartRun(t, dir, cfg, in, out)
	const attempts = 3
	for i := 1; i <= attempts; i++ {
		before := rlCount(r.p, "config reloaded")
		rlSaveRename(t, cfg, rlConfig(in, blocked, "v"+strconv.Itoa(i+1)))
		rlAwaitCount(r.p, "config reloaded", before)
		if n := rlCount(r.p, "the new pipeline cannot open; restarting the previous one"); n != i {
			t.Fatalf("reload %d: logged \"the new pipeline cannot open; restarting the previous one\" %d times, want %d", i, n, i)
		}
		r.awaitSeq(r.w.n() + 300)
	}
	total := r.finish()
	checkExactlyOnce(t, "output", r.w.keys(total), r.o.keys())
	for _, x := range r.o.poll() {
		if x.Version != "v1" {
			t.Fatalf("%s carries %q: the failed reloads must leave v1 running", x.Key, x.Version)
		}
	}
}

// rlReloadInPlace saves (with save) and waits for the reload to finish;
// it fails the test unless the pipeline was reconfigured in place.
func rlReloadInPlace(r *rlRun, save func()) {
	r.t.Helper()
	reloads, inPlace := rlCount(r.p, "config reloaded"), rlCount(r.p, "pipeline reconfigured in place")
	save()
	rlAwaitCount(r.p, "config reloaded", reloads)
	if rlCount(r.p, "pipeline reconfigured in place") == inPlace {
		var why []string
		for line := range strings.Lines(r.p.stderr.String()) {
			if strings.Contains(line, `"level":"error"`) || strings.Contains(line, "restarting") || strings.Contains(line, "config reloaded") {
				why = append(why, strings.TrimSpace(line))
			}
		}
		r.t.Fatalf("the reload did not reconfigure the pipeline in place:\n%s", strings.Join(why[max(0, len(why)-8):], "\n"))
	}
}

// rlStarts counts the starts of pipeline name: the "pipeline started"
// lines a pipeline logs as it starts its stages (those with a "sources"
// count; a reload logs a second, summary line for a pipeline it starts).
func rlStarts(p *proc, name string) int {
	n := 0
	for _, v := range rlLogged(p, "pipeline started") {
		if _, ok := v["sources"]; ok && v["pipeline"] == name {
			n++
		}
	}
	return n
}

// rlRejectedKeys returns the keys of the bad records in a dead-letter
// file ("not json KEY" lines).
func rlRejectedKeys(t testing.TB, path string) []string {
	t.Helper()
	var keys []string
	for i, l := range splitLines(t, filepath.Base(path), readFile(t, path)) {
		var v struct {
			Record string `json:"record"`
		}
		if err := json.Unmarshal(l, &v); err != nil || !strings.HasPrefix(v.Record, "not json ") {
			t.Errorf("%s line %d: %.200q: not a dead-letter line of a bad record", filepath.Base(path), i+1, l)
			continue
		}
		keys = append(keys, strings.TrimPrefix(v.Record, "not json "))
	}
	return keys
}

// TestReloadDirectoryReplaced: the config directory itself is replaced,
// the way deployment tools do it: deleted and created again, a new
// directory renamed into its place, or (the config path being a symlink,
// "current -> releases/1") the symlink swapped to a new directory. While
// it is missing every pipeline keeps running; the replacement is
// reloaded; afterwards, saves in the new directory are seen like before.
func TestReloadDirectoryReplaced(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"delete and re-create", "rename a new one into place", "symlink swapped"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			conf := filepath.Join(dir, "pipelines")
			in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
			if how == "symlink swapped" {
				writeConfig(t, dir, "releases/1/p.yaml", rlConfig(in, out, "v1"))
				if err := os.Symlink(filepath.Join("releases", "1"), conf); err != nil {
					t.Fatal(err)
				}
			} else {
				writeConfig(t, conf, "p.yaml", rlConfig(in, out, "v1"))
			}
			r := rlStartRun(t, dir, conf, in, out)

			reloads := rlCount(r.p, "config reloaded")
			switch how {
			case "delete and re-create":
				if err := os.RemoveAll(conf); err != nil {
					t.Fatal(err)
				}
				rlAwaitCount(r.p, "config path unreadable; every running pipeline is kept", 0)
				r.awaitSeq(r.w.n() + 300)
				reloads = rlCount(r.p, "config reloaded")
				writeConfig(t, conf, "p.yaml", rlConfig(in, out, "v1"))
			case "rename a new one into place":
				writeConfig(t, dir, "pipelines.new/p.yaml", rlConfig(in, out, "v1"))
				if err := os.Rename(conf, conf+".old"); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(conf+".new", conf); err != nil {
					t.Fatal(err)
				}
				if err := os.RemoveAll(conf + ".old"); err != nil {
					t.Fatal(err)
				}
			case "symlink swapped":
				// A new release with the same content, then ln -sfn.
				writeConfig(t, dir, "releases/2/p.yaml", rlConfig(in, out, "v1"))
				if err := os.Symlink(filepath.Join("releases", "2"), conf+".tmp"); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(conf+".tmp", conf); err != nil {
					t.Fatal(err)
				}
			}
			// The directory is back with the same content: a reload that
			// changes nothing.
			rlAwaitCount(r.p, "config reloaded", reloads)
			r.awaitSeq(r.w.n() + 300)
			if n := rlCount(r.p, "pipeline reconfigured in place") + rlCount(r.p, "pipeline file removed: stopping it"); n != 0 {
				t.Fatalf("replacing the directory with the same content changed the pipeline")
			}

			// A save in the new directory is seen.
			rlSaveRename(t, filepath.Join(conf, "p.yaml"), rlConfig(in, out, "v2"))
			rlAwaitCount(r.p, "pipeline reconfigured in place", 0)
			after := r.w.n()
			r.awaitSeq(after + 300)

			total := r.finish()
			checkExactlyOnce(t, "output", r.w.keys(total), r.o.keys())
			rlCheckSwitch(t, "output", r.o.poll(), "v1", "v2", after)
			r.checkInPlace(1)
		})
	}
}
