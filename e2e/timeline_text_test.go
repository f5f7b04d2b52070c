package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The text timeline of examples/timeline-text.yaml at scale: an nginx
// access log, a logfmt application log with Java stack traces (joined by
// multiline) and a syslog file (RFC 5424 and rsyslog's high-precision
// lines) merged by time into one file. The expected output is computed
// from the generator's own records (their times and ids), never by
// etld's parsers, and compared record by record.

// tlConfig is examples/timeline-text.yaml as shipped (it reads
// data/timeline-text/ and writes out/timeline-text.jsonl and
// out/timeline-text-rejects.jsonl), written to dir with extra added at
// the top level. The tests run the example itself, so that it cannot
// drift from what they prove.
func tlConfig(t testing.TB, dir, extra string) string {
	t.Helper()
	yaml := string(readFile(t, filepath.Join(repoRoot, "examples", "timeline-text.yaml")))
	if !strings.Contains(yaml, "\nversion: 1\n") {
		t.Fatal("examples/timeline-text.yaml: no `version: 1` line to add settings after")
	}
	return writeConfig(t, dir, "timeline-text.yaml", strings.Replace(yaml, "\nversion: 1\n", "\nversion: 1\n"+extra, 1))
}

// tlRec is one generated record: its feed, its id (the nginx path, the
// app's seq, the syslog message), its time and, for the app, its stack
// trace (the lines after the first, joined by \n).
type tlRec struct {
	feed, id string
	ts       time.Time
	trace    string
}

// tlFeeds are the generated files and what the timeline must hold.
type tlFeeds struct {
	access, app, syslog []byte
	recs                []tlRec // in merge order
	bad                 int     // malformed lines, one record each
}

// tlZones are the offsets the access log and rsyslog lines are written in:
// the merge must order by instant, not by the text.
var tlZones = []*time.Location{
	time.FixedZone("", 3600), time.FixedZone("", -5*3600), time.UTC, time.FixedZone("", 5*3600+1800),
}

// tlGenerate writes n records per feed with increasing, interleaved
// times. The three feeds never share an instant (nginx times are whole
// seconds, app times have a nonzero millisecond, syslog times a
// microsecond that is not a whole millisecond), so the merge order is the
// order by time alone; within a feed, equal times keep the input order.
// Every few records an app record carries a stack trace, and each feed
// has malformed lines.
func tlGenerate(rng *rand.Rand, n int) tlFeeds {
	base := time.Date(2026, 12, 4, 6, 0, 0, 0, time.UTC)
	var f tlFeeds
	// nginx: whole seconds, sometimes two lines in the same second.
	t := base
	for i := range n {
		t = t.Add(time.Duration(rng.Intn(2)) * time.Second)
		id := "/item/" + strconv.Itoa(i)
		f.access = fmt.Appendf(f.access, "198.51.100.%d - - [%s] \"GET %s HTTP/1.1\" 200 %d \"-\" \"curl/8.5.0\"\n",
			i%250, t.In(tlZones[i%len(tlZones)]).Format("02/Jan/2006:15:04:05 -0700"), id, i)
		f.recs = append(f.recs, tlRec{feed: "nginx", id: id, ts: t})
		if i%997 == 500 {
			f.access = append(f.access, "GET /broken HTTP/1.1 - not an access log line\n"...)
			f.bad++
		}
	}
	// app: a nonzero millisecond; some records have a stack trace.
	t = base
	for i := range n {
		if t = t.Add(time.Duration(1+rng.Intn(1500)) * time.Millisecond); t.Nanosecond() == 0 {
			t = t.Add(time.Millisecond)
		}
		id := strconv.Itoa(i)
		f.app = fmt.Appendf(f.app, "ts=%s level=info msg=\"request %d served\" seq=%s\n", t.Format("2006-01-02T15:04:05.000Z07:00"), i, id)
		r := tlRec{feed: "app", id: id, ts: t}
		if i%7 == 3 {
			var tr []string
			tr = append(tr, fmt.Sprintf("java.lang.IllegalStateException: pool exhausted at record %d", i))
			for j := range 1 + rng.Intn(5) {
				tr = append(tr, fmt.Sprintf("\tat com.example.Handler%d.handle(Handler.java:%d)", j, 10+j))
			}
			if i%2 == 1 {
				tr = append(tr, "Caused by: java.net.SocketTimeoutException: connect timed out", "\t... 2 more")
			}
			r.trace = strings.Join(tr, "\n")
			f.app = append(f.app, r.trace+"\n"...)
		}
		f.recs = append(f.recs, r)
		if i%997 == 700 {
			f.app = fmt.Appendf(f.app, "ts=%s level=warn msg=\"unclosed quote\n", t.Format(time.RFC3339Nano))
			f.bad++
		}
	}
	// syslog: microseconds that are not whole milliseconds; RFC 5424
	// and rsyslog high-precision lines alternate.
	t = base
	for i := range n {
		if t = t.Add(time.Duration(1+rng.Intn(1500000)) * time.Microsecond); t.Nanosecond()%int(time.Millisecond) == 0 {
			t = t.Add(time.Microsecond)
		}
		id := "event " + strconv.Itoa(i)
		if i%2 == 0 {
			f.syslog = fmt.Appendf(f.syslog, "<165>1 %s web1 billing 2201 EVT [job@32473 n=\"%d\"] %s\n", t.Format("2006-01-02T15:04:05.000000Z07:00"), i, id)
		} else {
			f.syslog = fmt.Appendf(f.syslog, "%s web1 sshd[811]: %s\n", t.In(tlZones[i%len(tlZones)]).Format("2006-01-02T15:04:05.000000-07:00"), id)
		}
		f.recs = append(f.recs, tlRec{feed: "syslog", id: id, ts: t})
		if i%997 == 900 {
			f.syslog = append(f.syslog, "-- MARK --\n"...)
			f.bad++
		}
	}
	slices.SortStableFunc(f.recs, func(a, b tlRec) int { return a.ts.Compare(b.ts) })
	return f
}

// tlSetup generates n records per feed into a new directory where the
// example reads them, and writes the example there with extra. It
// returns the directory, the pipeline file, the feeds and the seeded
// random source (for the test's own choices).
func tlSetup(t testing.TB, n int, extra string) (dir, cfg string, f tlFeeds, rng *rand.Rand) {
	t.Helper()
	rng = rand.New(rand.NewSource(crashSeed(t)))
	dir = t.TempDir()
	f = tlGenerate(rng, n)
	writeFile(t, dir, "data/timeline-text/access.log", f.access)
	writeFile(t, dir, "data/timeline-text/app.log", f.app)
	writeFile(t, dir, "data/timeline-text/syslog", f.syslog)
	return dir, tlConfig(t, dir, extra), f, rng
}

// tlCheck compares the timeline's lines with the expected records: same
// count, and at each position the same feed, id, instant and stack trace.
func tlCheck(t testing.TB, lines [][]byte, want []tlRec) {
	t.Helper()
	if len(lines) != len(want) {
		t.Errorf("timeline has %d records, want %d", len(lines), len(want))
	}
	bad := 0
	for i := range min(len(lines), len(want)) {
		var got struct {
			Feed, TS, Path, Seq, Message string
			Trace                        string `json:"stack_trace"`
		}
		if err := json.Unmarshal(lines[i], &got); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, lines[i])
		}
		id := map[string]string{"nginx": got.Path, "app": got.Seq, "syslog": got.Message}[got.Feed]
		ts, err := time.Parse(time.RFC3339Nano, got.TS)
		w := want[i]
		if err != nil || got.Feed != w.feed || id != w.id || !ts.Equal(w.ts) || got.Trace != w.trace {
			t.Errorf("line %d: got %s\n  want feed %s id %q ts %s trace %q", i+1, lines[i], w.feed, w.id, w.ts.Format(time.RFC3339Nano), w.trace)
			if bad++; bad == 5 {
				t.FailNow()
			}
		}
	}
}

// tlRejects checks that the dead-letter file holds exactly the malformed
// lines, each once, with the id of the step that refused it.
func tlRejects(t testing.TB, path string, want int) {
	t.Helper()
	lines := crashReadOutput(t, path)
	seen := map[string]bool{}
	for _, l := range lines {
		var dl struct{ Stage, Origin, Error string }
		if err := json.Unmarshal(l, &dl); err != nil {
			t.Fatalf("dead letter %s: %v", l, err)
		}
		if !strings.HasPrefix(dl.Stage, "parse_") || dl.Error == "" || seen[dl.Origin] {
			t.Errorf("dead letter (duplicate, or without stage or error): %s", l)
		}
		seen[dl.Origin] = true
	}
	if len(lines) != want {
		t.Errorf("%d dead letters, want %d", len(lines), want)
	}
}

// TestTimelineTextMatchesGenerator: three finite text feeds of 3000
// records each merge into exactly the generator's time order, and every
// malformed line is a dead letter.
func TestTimelineTextMatchesGenerator(t *testing.T) {
	t.Parallel()
	dir, cfg, f, _ := tlSetup(t, 3000, "")
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "finite text timeline")
	tlCheck(t, crashReadOutput(t, filepath.Join(dir, "out", "timeline-text.jsonl")), f.recs)
	tlRejects(t, filepath.Join(dir, "out", "timeline-text-rejects.jsonl"), f.bad)
}

// TestTimelineTextKill9Twice: the same timeline, larger, with etld killed
// by SIGKILL twice while it writes (and restarted with the same state
// dir): the final output is still exactly the expected one, nothing
// lost, doubled or out of order, and so are the dead letters.
func TestTimelineTextKill9Twice(t *testing.T) {
	t.Parallel()
	dir, cfg, f, rng := tlSetup(t, 30000, "checkpoint_interval: 20ms\n")
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out", "timeline-text.jsonl")
	ckpt := filepath.Join(state, "timeline-text.json")
	size := func() int64 {
		fi, err := os.Stat(out)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	// The output is larger than the input (JSON with parsed fields), so
	// marks within the input's size are within the output's.
	in := int64(len(f.access) + len(f.app) + len(f.syslog))
	marks := []int64{in * (5 + rng.Int63n(26)) / 100, in * (45 + rng.Int63n(36)) / 100}
	runs, kills := 0, 0
	for ; ; runs++ {
		if runs > 10 {
			t.Fatalf("etld did not finish in %d runs", runs)
		}
		before := fileMTime(ckpt)
		p := startEtld(t, dir, nil, runArgs(cfg, state)...)
		if kills == len(marks) {
			p.expectExit(p.wait(), 0, "the run after the kills")
			break
		}
		// Kill once the output is past the mark and this run has
		// committed a checkpoint of its own (after a restart the file
		// is already long before the run has done anything). Both are
		// a stat: parsing the checkpoint at every poll would make the
		// kills late.
		mark := marks[kills]
		what := fmt.Sprintf("output past %d bytes and a new checkpoint", mark)
		if crashPoll(p, what, crashPollEvery, func() bool { return size() >= mark && fileMTime(ckpt) != before }) {
			p.expectExit(p.exitCode(), 0, "a run that finished before its kill")
			t.Logf("run %d finished before its kill (%s)", runs+1, what)
			break
		}
		p.kill()
		kills++
		t.Logf("run %d: kill -9 with %d bytes written (mark %d)", runs+1, size(), mark)
	}
	t.Logf("%d runs, %d kills", runs+1, kills)
	tlCheck(t, crashReadOutput(t, out), f.recs)
	tlRejects(t, filepath.Join(dir, "out", "timeline-text-rejects.jsonl"), f.bad)
	crashCheckFinalState(t, ckpt, "timeline", out)
}

// TestTimelineTextExample runs examples/timeline-text.yaml on its own
// sample data: every well-formed record of the three feeds is written
// once, in time order, the two stack traces stay with their log lines,
// and the three malformed lines (one per feed) are dead letters.
func TestTimelineTextExample(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want := map[string]int{}
	for _, name := range []string{"access.log", "app.log", "syslog"} {
		data := readFile(t, filepath.Join(repoRoot, "examples", "data", "timeline-text", name))
		writeFile(t, dir, filepath.Join("data", "timeline-text", name), data)
		n := 0
		for _, l := range splitLines(t, name, data) {
			if name != "app.log" || bytes.HasPrefix(l, []byte("ts=")) {
				n++ // a record (an app record starts with ts=)
			}
		}
		want[name] = n - 1 // one malformed line each
	}
	cfg := tlConfig(t, dir, "")
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "the timeline-text example")

	got := map[string]int{}
	traces := 0
	var prev time.Time
	for i, l := range splitLines(t, "timeline-text.jsonl", readFile(t, filepath.Join(dir, "out", "timeline-text.jsonl"))) {
		var rec struct {
			Feed, TS string
			Trace    string `json:"stack_trace"`
		}
		if err := json.Unmarshal(l, &rec); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, l)
		}
		ts, err := time.Parse(time.RFC3339Nano, rec.TS)
		if err != nil || ts.Before(prev) {
			t.Errorf("line %d: ts %q is not an RFC 3339 time at or after %s (%v)", i+1, rec.TS, prev.Format(time.RFC3339Nano), err)
		}
		prev = ts
		got[map[string]string{"nginx": "access.log", "app": "app.log", "syslog": "syslog"}[rec.Feed]]++
		if strings.HasPrefix(rec.Trace, "java.lang.") && strings.Contains(rec.Trace, "\n\tat ") {
			traces++
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("records per feed file: got %v, want %v", got, want)
	}
	if traces != 2 {
		t.Errorf("%d records with a stack trace, want 2", traces)
	}
	tlRejects(t, filepath.Join(dir, "out", "timeline-text-rejects.jsonl"), 3)
}
