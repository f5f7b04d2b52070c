package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Helpers of the hot reload tests (reload_more_test.go and
// reload_bench_test.go). Every name starts with rl.

// ---------------------------------------------------------------------------
// Load: a writer appending at a steady rate

// rlWriter appends records of one feed to a followed file at a steady
// rate, like a busy application: every rlWriterTick it writes, in one
// write(2), the records due since it started. It never pauses, so a test
// edits the config while lines keep coming.
type rlWriter struct {
	path string
	feed string
	rate int // records per second
	rlWriterOpts

	written atomic.Int64 // records written: the next seq
	stop    chan struct{}
	done    chan struct{}
	err     error // the writer's failure; read after done
}

const rlWriterTick = 2 * time.Millisecond

// rlWriterOpts vary what rlWriter writes.
type rlWriterOpts struct {
	// stamp: records carry "wts", their write time in Unix ns (the
	// benchmark).
	stamp bool
	// badEvery > 0: every badEvery-th line is "not json KEY", a bad
	// record (seq % badEvery == badEvery-1).
	badEvery int
}

// bad reports whether the line of seq is a bad record.
func (o rlWriterOpts) bad(seq int) bool { return o.badEvery > 0 && seq%o.badEvery == o.badEvery-1 }

// rlStartWriter starts appending records of feed (seq 0, 1, ...) to path
// (created when missing) at rate records per second. It is stopped by
// halt, else at the end of the test.
func rlStartWriter(t testing.TB, path, feed string, rate int) *rlWriter {
	t.Helper()
	return rlStartWriterOpts(t, path, feed, rate, rlWriterOpts{})
}

func rlStartWriterOpts(t testing.TB, path, feed string, rate int, opts rlWriterOpts) *rlWriter {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	w := &rlWriter{path: path, feed: feed, rate: rate, rlWriterOpts: opts, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(f)
	t.Cleanup(func() { w.halt() })
	return w
}

func (w *rlWriter) run(f *os.File) {
	defer close(w.done)
	defer f.Close()
	tick := time.NewTicker(rlWriterTick)
	defer tick.Stop()
	start := time.Now()
	seq := 0
	var buf []byte
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		// At most a tenth of a second's worth at once: after the test
		// process itself was descheduled, the writer catches up smoothly.
		due := int(time.Since(start).Seconds() * float64(w.rate))
		n := min(due-seq, max(1, w.rate/10))
		if n <= 0 {
			continue
		}
		buf = buf[:0]
		now := time.Now().UnixNano()
		for s := seq; s < seq+n; s++ {
			switch {
			case w.bad(s):
				buf = append(buf, "not json "...)
				buf = append(buf, key(w.feed, s)...)
			case w.stamp:
				buf = rlStampedRecord(buf, w.feed, s, now)
			default:
				buf = appendRecord(buf, w.feed, s)
			}
			buf = append(buf, '\n')
		}
		if _, err := f.Write(buf); err != nil {
			w.err = err
			return
		}
		seq += n
		w.written.Store(int64(seq))
	}
}

// halt stops the writer and returns the number of records written. It
// may be called more than once.
func (w *rlWriter) halt() int {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	return int(w.written.Load())
}

// n is the number of records written so far.
func (w *rlWriter) n() int { return int(w.written.Load()) }

// keys are the keys of the first n records of the feed.
func (w *rlWriter) keys(n int) []string {
	out := make([]string, n)
	for i := range n {
		out[i] = key(w.feed, i)
	}
	return out
}

// rlStampedRecord is the benchmark's record: a key, a seq and the time it
// was written, plus some payload to make it a realistic size.
func rlStampedRecord(dst []byte, feed string, seq int, wts int64) []byte {
	dst = append(dst, `{"key":"`...)
	dst = append(dst, key(feed, seq)...)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendInt(dst, int64(seq), 10)
	dst = append(dst, `,"wts":`...)
	dst = strconv.AppendInt(dst, wts, 10)
	dst = append(dst, `,"level":"info","msg":"a line of about a hundred bytes, like a short application log"}`...)
	return dst
}

// ---------------------------------------------------------------------------
// Output: parsed incrementally while it grows

// rlRec is an output record of the reload tests: appendRecord's fields
// plus what the workers under test add.
type rlRec struct {
	Key     string `json:"key"`
	Feed    string `json:"feed"`
	Seq     int    `json:"seq"`
	Level   string `json:"level"`
	Version string `json:"version"`
	Cents   *int   `json:"cents"`
}

// rlOutput follows an output file, parsing each complete line once.
type rlOutput struct {
	t    testing.TB
	path string
	off  int64
	part []byte // a line not complete yet
	recs []rlRec
	bad  int
}

func rlFollow(t testing.TB, path string) *rlOutput { return &rlOutput{t: t, path: path} }

// poll reads what was appended since the last call and returns every
// record so far. A line that is not one JSON object with a key is an
// error (a torn or interleaved line).
func (o *rlOutput) poll() []rlRec {
	f, err := os.Open(o.path)
	if err != nil {
		return o.recs
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return o.recs
	}
	if fi.Size() < o.off {
		o.t.Errorf("%s shrank from %d to %d bytes while etld ran", filepath.Base(o.path), o.off, fi.Size())
		o.off, o.part, o.recs = 0, nil, nil
	}
	data := make([]byte, fi.Size()-o.off)
	n, _ := io.ReadFull(io.NewSectionReader(f, o.off, int64(len(data))), data)
	o.off += int64(n)
	data = append(o.part, data[:n]...)
	i := bytes.LastIndexByte(data, '\n')
	if i < 0 {
		o.part = data
		return o.recs
	}
	o.part = bytes.Clone(data[i+1:])
	for line := range bytes.Lines(data[:i+1]) {
		line = bytes.TrimSuffix(line, []byte{'\n'})
		var r rlRec
		if err := json.Unmarshal(line, &r); err != nil || r.Key == "" {
			if o.bad++; o.bad <= 5 {
				o.t.Errorf("%s: not a JSON record with a key: %.300q", filepath.Base(o.path), line)
			}
			continue
		}
		o.recs = append(o.recs, r)
	}
	return o.recs
}

// has reports whether some record so far satisfies cond.
func (o *rlOutput) has(cond func(rlRec) bool) bool {
	return slices.ContainsFunc(o.poll(), cond)
}

// keys returns the keys of every record, once etld has stopped: the file
// must end with a newline then.
func (o *rlOutput) keys() []string {
	recs := o.poll()
	if len(o.part) > 0 {
		o.t.Errorf("%s ends with a partial line: %.200q", filepath.Base(o.path), o.part)
	}
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Key
	}
	return out
}

// describe summarises the output for a hang message.
func (o *rlOutput) describe() string {
	recs := o.poll()
	byVersion := map[string]int{}
	maxSeq := -1
	for _, r := range recs {
		byVersion[r.Version]++
		maxSeq = max(maxSeq, r.Seq)
	}
	return fmt.Sprintf("%s: %d records, newest seq %d, by version %v", filepath.Base(o.path), len(recs), maxSeq, byVersion)
}

// rlCheckSwitch checks one behaviour switch in the output of one feed:
// every record carries version from or to; the records with to are
// exactly those from some seq on (a replaced stage drains before its
// successor takes over, so the switch is a cut in input order, whatever
// the worker's concurrency); and every record with seq >= after, written
// once the reload had been applied, carries to. It returns the cut: the
// first seq with the new behaviour.
func rlCheckSwitch(t testing.TB, what string, recs []rlRec, from, to string, after int) int {
	t.Helper()
	maxFrom, minTo, bad := -1, -1, 0
	for _, r := range recs {
		switch r.Version {
		case from:
			maxFrom = max(maxFrom, r.Seq)
			if r.Seq >= after {
				if bad++; bad <= 5 {
					t.Errorf("%s: %s carries %q although it was written after the reload had been applied (from seq %d on)", what, r.Key, from, after)
				}
			}
		case to:
			if minTo < 0 || r.Seq < minTo {
				minTo = r.Seq
			}
		default:
			if bad++; bad <= 5 {
				t.Errorf("%s: %s carries version %q, want %q or %q", what, r.Key, r.Version, from, to)
			}
		}
	}
	if minTo < 0 {
		t.Fatalf("%s: no record carries the new version %q", what, to)
	}
	if maxFrom >= minTo {
		t.Errorf("%s: %q up to seq %d but %q from seq %d: the versions overlap, the old stage did not drain before the new one took over", what, from, maxFrom, to, minTo)
	}
	t.Logf("%s: %q up to seq %d, %q from seq %d (written after the reload from seq %d)", what, from, maxFrom, to, minTo, after)
	return minTo
}

// ---------------------------------------------------------------------------
// etld's log

// rlCount counts the log lines whose message is msg.
func rlCount(p *proc, msg string) int {
	return strings.Count(p.stderr.String(), `"message":"`+msg+`"`)
}

// rlLogged returns every log line whose message is msg, decoded.
func rlLogged(p *proc, msg string) []map[string]any {
	var out []map[string]any
	for line := range strings.Lines(p.stderr.String()) {
		if !strings.Contains(line, `"message":"`+msg+`"`) {
			continue
		}
		var v map[string]any
		if json.Unmarshal([]byte(line), &v) == nil {
			out = append(out, v)
		}
	}
	return out
}

// rlStrs returns a string list field of a decoded log line.
func rlStrs(v map[string]any, field string) []string {
	list, _ := v[field].([]any)
	var out []string
	for _, x := range list {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// rlAwaitCount waits until msg has been logged more than before times and
// returns the new count.
func rlAwaitCount(p *proc, msg string, before int) int {
	p.t.Helper()
	n := 0
	p.eventually(func() string { return fmt.Sprintf("log %q more than %d times (now %d)", msg, before, n) },
		func() bool { n = rlCount(p, msg); return n > before })
	return n
}

// rlStillRunning fails the test unless the etld process started by the
// test still runs: a reload never restarts or stops the process. The
// process is the one exec.Cmd started, so its pid cannot have changed
// while it runs.
func rlStillRunning(t testing.TB, p *proc, pid int, what string) {
	t.Helper()
	if p.exited() {
		t.Fatalf("%s: etld (pid %d) exited with %d", what, pid, p.exitCode())
	}
	if got := p.cmd.Process.Pid; got != pid {
		t.Fatalf("%s: etld pid %d, want %d", what, got, pid)
	}
	if n := rlCount(p, "config loaded"); n != 1 {
		t.Fatalf("%s: etld loaded its config at start %d times, want 1 (a re-exec?)", what, n)
	}
}

// ---------------------------------------------------------------------------
// Admin server

// rlAdminAddr waits for etld (run with --admin 127.0.0.1:0) to log its
// admin address and returns it.
func rlAdminAddr(p *proc) string {
	p.t.Helper()
	var addr string
	p.eventually(`log "admin HTTP listening"`, func() bool {
		for _, v := range rlLogged(p, "admin HTTP listening") {
			if a, ok := v["addr"].(string); ok && a != "" {
				addr = a
				return true
			}
		}
		return false
	})
	return addr
}

// rlMetric returns the value of the sample of metric whose labels
// include every one of labels (`name="value"`), or -1 when there is none
// or the admin server does not answer.
func rlMetric(addr, metric string, labels ...string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return -1
	}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, metric+"{") {
			continue
		}
		i := strings.LastIndexByte(line, '}')
		if i < 0 {
			continue
		}
		lbls := line[len(metric)+1 : i]
		ok := true
		for _, l := range labels {
			if !strings.Contains(","+lbls+",", ","+l+",") {
				ok = false
			}
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64)
		if err != nil {
			return -1
		}
		return v
	}
	return -1
}

// rlAPIPipelines decodes /api/pipelines into v.
func rlAPIPipelines(t testing.TB, addr string, v any) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/pipelines")
	if err != nil {
		t.Fatalf("GET /api/pipelines: %v", err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET /api/pipelines: %v", err)
	}
}

// rlLastReloadError returns the error of pipeline name's last reload in
// /api/pipelines ("" when there is none).
func rlLastReloadError(t testing.TB, addr, name string) string {
	t.Helper()
	if _, p := rlLastReloads(t, addr, name); p != nil {
		return p.Error
	}
	return ""
}

// rlReload is a last_reload of /api/pipelines.
type rlReload struct {
	Result string `json:"result"`
	Action string `json:"action"`
	Error  string `json:"error"`
}

// rlLastReloads returns the last reload of the whole config and that of
// pipeline name from /api/pipelines; nil where there is none.
func rlLastReloads(t testing.TB, addr, name string) (overall, pipe *rlReload) {
	t.Helper()
	var v struct {
		LastReload *rlReload `json:"last_reload"`
		Pipelines  []struct {
			Name       string    `json:"name"`
			LastReload *rlReload `json:"last_reload"`
		} `json:"pipelines"`
	}
	rlAPIPipelines(t, addr, &v)
	for _, p := range v.Pipelines {
		if p.Name == name {
			return v.LastReload, p.LastReload
		}
	}
	return v.LastReload, nil
}

// rlStage is a stage as /api/pipelines describes it.
type rlStage struct {
	ID          string   `json:"id"`
	Kind        string   `json:"kind"`
	Concurrency int      `json:"concurrency"`
	Steps       []string `json:"steps"`
}

// rlStages returns the stages of pipeline name from /api/pipelines.
func rlStages(t testing.TB, addr, name string) []rlStage {
	t.Helper()
	var v struct {
		Pipelines []struct {
			Name   string    `json:"name"`
			Stages []rlStage `json:"stages"`
		} `json:"pipelines"`
	}
	rlAPIPipelines(t, addr, &v)
	for _, p := range v.Pipelines {
		if p.Name == name {
			return p.Stages
		}
	}
	t.Fatalf("GET /api/pipelines: no pipeline %q", name)
	return nil
}

// ---------------------------------------------------------------------------
// Saving a config file, the ways people and tools do

// rlSaveRename saves like vim and VS Code: a temporary file in the same
// directory, renamed over the config.
func rlSaveRename(t testing.TB, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".swp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// rlSaveInPlace saves like nano or `cat > file`: truncate, then write.
func rlSaveInPlace(t testing.TB, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// rlConfigMap is a Kubernetes ConfigMap volume as the kubelet's atomic
// writer lays it out: the files live in a hidden timestamped directory,
// dir/..data is a symlink to it, and every visible file dir/NAME is a
// symlink to ..data/NAME. An update writes a new hidden directory, points
// a new symlink ..data_tmp at it, renames ..data_tmp over ..data (the one
// atomic step), then removes the old directory.
type rlConfigMap struct {
	dir string
	gen int
	cur string // the current hidden directory
}

// publish makes files (name -> content) the ConfigMap's content.
func (c *rlConfigMap) publish(t testing.TB, files map[string]string) {
	t.Helper()
	c.gen++
	ts := fmt.Sprintf("..2026_01_01_00_00_%02d.%09d", c.gen, c.gen)
	if err := os.MkdirAll(filepath.Join(c.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(c.dir, ts, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(c.dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
	if c.cur != "" {
		if err := os.RemoveAll(filepath.Join(c.dir, c.cur)); err != nil {
			t.Fatal(err)
		}
	}
	c.cur = ts
}
