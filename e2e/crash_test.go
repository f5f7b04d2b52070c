package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The kill -9 tests of SPEC §3.1: for file sources and file sinks, after
// kill -9 and a restart with the same state dir, every input line is in
// the output exactly once. The moments of the kills are pseudo-random
// (the seed is logged; ETLD_E2E_SEED replays it) and chosen by what etld
// has done (output written, checkpoints committed, segments sealed, a
// checkpoint file being written), never by sleeping.

// crashFeeds are the four input feeds of TestKillNineRandom.
var crashFeeds = []string{"orders", "payments", "shipments", "refunds"}

const (
	crashKills   = 20      // kills in TestKillNineRandom
	crashPerFeed = 150000  // lines per feed at first (about 16 MB a feed)
	crashMaxSize = 1 << 20 // rotate.max_size of its sink
)

// TestKillNineRandom: four finite feeds fan out to a worker with four
// goroutines (parse_json, filter, set) and fan back into one rotating
// file sink (1 MiB segments), checkpointing every 25ms (a run lasts about
// as long as a few intervals: most kills roll back past several commits,
// some come before the first). One line in 997 is not JSON and goes to
// the dead-letter sink, a file sink under the same guarantee. Two
// variants: gzipped segments with the default fsync (checkpoint), and
// plain segments with fsync: never (which survives a crash of etld, if
// not of the machine).
//
// etld is killed with -9 twenty times at pseudo-random moments and
// restarted with the same state dir each time; the moments are: right at
// the start (during recovery), once the output has grown by a random
// amount, after a random number of new checkpoint commits, or right after
// a segment was sealed (while it is being compressed, with gzip). The
// last run finishes by itself (exit 0). Then the output, every segment
// read, compressed or not, holds every record that passes the filter
// exactly once, the dead-letter file every bad line exactly once, and the
// final checkpoint matches the files.
func TestKillNineRandom(t *testing.T) {
	t.Parallel()
	seed := crashSeed(t)
	for i, tc := range []struct {
		name  string
		gzip  bool
		fsync string
	}{
		{"rotate+gzip", true, "checkpoint"},
		{"rotate, fsync never", false, "never"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			crashKillNineRandom(t, rand.New(rand.NewSource(seed+int64(i))), tc.gzip, tc.fsync)
		})
	}
}

// crashBad reports whether line seq of a feed of TestKillNineRandom is
// not JSON (a bad record, for the dead-letter sink).
func crashBad(seq int) bool { return seq%997 == 500 }

func crashKillNineRandom(t *testing.T, rng *rand.Rand, gzip bool, fsync string) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "in"), 0o755); err != nil {
		t.Fatal(err)
	}
	var (
		want      []string
		wantDL    []string // the keys of the bad lines
		wantBytes int64    // the size of the expected output
		next      int      // the next seq of every feed
	)
	addInput := func(n int) {
		for _, f := range crashFeeds {
			var b []byte
			for seq := next; seq < next+n; seq++ {
				if crashBad(seq) {
					b = append(b, "not json "+key(f, seq)+"\n"...)
					wantDL = append(wantDL, key(f, seq))
					continue
				}
				l := len(b)
				b = appendRecord(b, f, seq)
				if !isDebug(seq) {
					want = append(want, key(f, seq))
					wantBytes += int64(len(b)-l-1+len(crashSuffix)) + 1
				}
				b = append(b, '\n')
			}
			appendFile(t, filepath.Join(dir, "in", f+".jsonl"), b)
		}
		next += n
	}
	addInput(crashPerFeed)

	var cfgText strings.Builder
	cfgText.WriteString("version: 1\ncheckpoint_interval: 25ms\nsources:\n")
	for _, f := range crashFeeds {
		fmt.Fprintf(&cfgText, "  %s: { type: file, path: in/%s.jsonl, follow: false }\n", f, f)
	}
	fmt.Fprintf(&cfgText, `workers:
  enrich:
    inputs: [%s]
    concurrency: 4
    steps:
      - parse_json: {}
      - filter: 'level != "debug"'
      - set: { crash: k9 }
sinks:
  out:
    type: file
    inputs: [enrich]
    path: out/out.jsonl
    fsync: %s
    rotate: { max_size: %d, gzip: %v }
  rejects:
    type: file
    path: out/rejects.jsonl
    fsync: %s
dead_letter: rejects
`, strings.Join(crashFeeds, ", "), fsync, crashMaxSize, gzip, fsync)
	cfg := writeConfig(t, dir, "crash.yaml", cfgText.String())
	state := filepath.Join(dir, "state")
	ckpt := filepath.Join(state, "crash.json")
	out := filepath.Join(dir, "out", "out.jsonl")
	progress := func() int64 { return crashProgress(out, crashMaxSize) }

	// high is the most output seen so far. Every kill but the ones at
	// start waits for the output to grow past it by a random amount below
	// step, a thirtieth of the expected output: twenty kills cannot use
	// up the input, and the run after the last kill still has work.
	var high int64
	kills, extra := 0, 0
	for kills < crashKills {
		p := startEtld(t, dir, nil, runArgs(cfg, state)...)
		step := wantBytes / 30
		lo, hi := high+rng.Int63n(step), high+step
		e0 := crashEpoch(ckpt)
		var mode string
		var cond func() bool
		switch r := rng.Intn(10); {
		case r == 0:
			mode = "at start"
			cond = func() bool { return true }
		case r <= 3:
			mode = fmt.Sprintf("output past %d bytes", lo)
			cond = func() bool { return progress() >= lo }
		case r <= 6:
			k := uint64(1 + rng.Intn(3))
			mode = fmt.Sprintf("%d new commits and output past %d bytes (or %d)", k, lo, hi)
			cond = func() bool {
				n := progress()
				return n >= hi || (n >= lo && crashEpoch(ckpt) >= e0+k)
			}
		case gzip:
			mode = fmt.Sprintf("a segment being compressed and output past %d bytes (or %d)", lo, hi)
			cond = func() bool {
				n := progress()
				if n >= hi {
					return true
				}
				if n < lo {
					return false
				}
				l := crashScan(out)
				if len(l.tmp) > 0 {
					return true
				}
				for _, s := range l.sealed {
					if !s.gz {
						return true
					}
				}
				return false
			}
		default:
			mode = fmt.Sprintf("right after a rotation and output past %d bytes (or %d)", lo, hi)
			cond = func() bool {
				n := progress()
				if n >= hi {
					return true
				}
				l := crashScan(out)
				return n >= lo && len(l.sealed) > 0 && l.active != nil && l.active.size < 128<<10
			}
		}
		if crashPoll(p, "the moment to kill: "+mode, crashPollEvery, cond) {
			// The input ran out first: append more, as a producer would
			// while etld is down, and go on killing.
			p.expectExit(p.wait(), 0, "a run that finished before its kill")
			extra++
			addInput(20000)
			t.Logf("run finished before kill %d (%s); appended 4 x 20000 lines", kills+1, mode)
			continue
		}
		p.kill()
		kills++
		now := progress()
		t.Logf("kill %2d: %s; output now %d bytes, epoch %d -> %d", kills, mode, now, e0, crashEpoch(ckpt))
		high = max(high, now)
	}

	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.expectExit(p.wait(), 0, fmt.Sprintf("the run after %d kills", kills))
	lines := crashReadOutput(t, out)
	t.Logf("output: %d lines in %d sealed segments and the active file; %d records expected, %d dead letters (%d input lines, %d appended during the test)",
		len(lines), len(crashScan(out).sealed), len(want), len(wantDL), next*len(crashFeeds), extra*20000*len(crashFeeds))
	checkExactlyOnce(t, fmt.Sprintf("output after %d kills", kills), want, crashKeys(t, "output", lines))
	rejects := filepath.Join(dir, "out", "rejects.jsonl")
	checkExactlyOnce(t, fmt.Sprintf("dead letters after %d kills", kills), wantDL, crashDeadLetterKeys(t, rejects))
	crashCheckFinalState(t, ckpt, "out", out)
	crashCheckFinalState(t, ckpt, "rejects", rejects)
}

// crashDeadLetterKeys returns the key of the record of every dead-letter
// line of path: its "record" is "not json <key>".
func crashDeadLetterKeys(t testing.TB, path string) []string {
	t.Helper()
	var keys []string
	for i, l := range splitLines(t, filepath.Base(path), readFile(t, path)) {
		var dl struct {
			Record string `json:"record"`
			Stage  string `json:"stage"`
		}
		if err := json.Unmarshal(l, &dl); err != nil {
			t.Errorf("%s line %d: %v: %.200q", filepath.Base(path), i+1, err, l)
			continue
		}
		k, ok := strings.CutPrefix(dl.Record, "not json ")
		if !ok || dl.Stage != "enrich" {
			t.Errorf("%s line %d is not the dead letter of a bad line: %.200q", filepath.Base(path), i+1, l)
			continue
		}
		keys = append(keys, k)
	}
	return keys
}

// crashRotWriter appends records to several log files in one goroutine,
// the way loggers do (whole lines, through a file opened for appending),
// and rotates each of them by rename every `every` lines: feed.log ->
// feed.log.N, then a new feed.log. The rotations of the feeds are
// staggered. It writes up to allowed lines per feed, then waits for
// allow.
type crashRotWriter struct {
	dir   string
	feeds []string
	every int
	total int

	written   atomic.Int64 // lines written to every feed
	rotations atomic.Int64
	allowed   atomic.Int64
	wake      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	err       error // read after done
}

func crashStartRotWriter(t *testing.T, dir string, feeds []string, every, total int) *crashRotWriter {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := &crashRotWriter{dir: dir, feeds: feeds, every: every, total: total,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	files := make([]*os.File, len(feeds))
	for i, f := range feeds {
		fh, err := os.OpenFile(w.path(f), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		files[i] = fh
	}
	go w.run(files)
	t.Cleanup(func() {
		close(w.stop)
		<-w.done
	})
	return w
}

func (w *crashRotWriter) path(feed string) string { return filepath.Join(w.dir, feed+".log") }

func (w *crashRotWriter) run(files []*os.File) {
	defer close(w.done)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	const chunk = 100
	rotated := make([]int, len(w.feeds))
	var buf []byte
	for seq := 0; seq < w.total; {
		lim := int(w.allowed.Load())
		if seq >= lim {
			select {
			case <-w.wake:
				continue
			case <-w.stop:
				return
			}
		}
		n := min(chunk, lim-seq, w.total-seq)
		for i, f := range w.feeds {
			buf = buf[:0]
			for s := seq; s < seq+n; s++ {
				buf = appendRecord(buf, f, s)
				buf = append(buf, '\n')
			}
			if _, err := files[i].Write(buf); err != nil {
				w.err = err
				return
			}
			// Rotate every `every` lines, staggered by feed so that
			// the rotations do not coincide.
			if off := i * w.every / len(w.feeds); (seq+n+off)/w.every > (seq+off)/w.every {
				rotated[i]++
				if err := os.Rename(w.path(f), fmt.Sprintf("%s.%d", w.path(f), rotated[i])); err != nil {
					w.err = err
					return
				}
				if err := files[i].Close(); err != nil {
					w.err = err
					return
				}
				fh, err := os.OpenFile(w.path(f), os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o644)
				if err != nil {
					w.err = err
					return
				}
				files[i] = fh
				w.rotations.Add(1)
			}
		}
		seq += n
		w.written.Store(int64(seq))
	}
}

// allow lets the writer go on up to n lines per feed.
func (w *crashRotWriter) allow(n int) {
	w.allowed.Store(int64(n))
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *crashRotWriter) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// TestKillNineFollowRotating: three followed logs (glob feed.log*, so
// that a rotated file still matches) are appended to and rotated by
// rename by a writer goroutine while etld reads them through a worker
// with four goroutines into one file. The writer keeps a random lead
// over etld's output, so that it writes and rotates while etld reads.
// etld is killed with -9 eight times at pseudo-random moments (after the
// output grew by a random number of lines, right after a rotation, or
// right after a checkpoint commit), the writer goes on while it is down,
// and it is restarted with the same state dir. Once every line is written
// and out, SIGTERM stops etld with exit 0, and the output holds every
// line exactly once.
func TestKillNineFollowRotating(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewSource(crashSeed(t)))
	const (
		perFeed = 120000
		every   = 5000 // lines per file between two rotations
		kills   = 8
	)
	feeds := []string{"app", "web", "db"}
	dir := t.TempDir()
	var want []string
	for _, f := range feeds {
		for seq := range perFeed {
			want = append(want, key(f, seq))
		}
	}
	var cfgText strings.Builder
	cfgText.WriteString("version: 1\ncheckpoint_interval: 100ms\nsources:\n")
	for _, f := range feeds {
		fmt.Fprintf(&cfgText, "  %s: { type: file, path: 'logs/%s.log*', follow: true }\n", f, f)
	}
	fmt.Fprintf(&cfgText, `workers:
  parse:
    inputs: [%s]
    concurrency: 4
    steps:
      - parse_json: {}
      - set: { crash: k9 }
sinks:
  out: { type: file, inputs: [parse], path: out/out.jsonl }
`, strings.Join(feeds, ", "))
	cfg := writeConfig(t, dir, "follow-crash.yaml", cfgText.String())
	state := filepath.Join(dir, "state")
	ckpt := filepath.Join(state, "follow-crash.json")
	out := filepath.Join(dir, "out", "out.jsonl")

	w := crashStartRotWriter(t, filepath.Join(dir, "logs"), feeds, every, perFeed)
	allowed := 0
	allow := func(n int) {
		allowed = max(allowed, min(perFeed, n))
		w.allow(allowed)
	}
	allow(every / 2)
	high := 0 // the most lines seen in the output
	for k := 1; k <= kills; k++ {
		p := startEtld(t, dir, nil, runArgs(cfg, state)...)
		// Until the pipeline has started, the output may still hold lines
		// written after the last commit, which it rolls back.
		p.eventually("the pipeline has started", func() bool { return p.logged("pipeline started") })
		c := &lineCounter{path: out}
		lead := 100 + rng.Intn(every) // lines per feed the writer may be ahead of the output
		var mode string
		var cond func() bool
		switch rng.Intn(3) {
		case 0:
			target := min(high+rng.Intn(every*len(feeds)), len(want))
			mode = fmt.Sprintf("output past %d lines (writer lead %d)", target, lead)
			cond = func() bool { return c.count() >= target }
		case 1:
			r0 := w.rotations.Load()
			mode = fmt.Sprintf("right after a rotation (writer lead %d)", lead)
			cond = func() bool { return w.rotations.Load() > r0 || w.exited() }
		default:
			e0 := crashEpoch(ckpt)
			mode = fmt.Sprintf("right after a checkpoint commit (writer lead %d)", lead)
			cond = func() bool { return crashEpoch(ckpt) > e0 }
		}
		p.eventually(mode, func() bool {
			allow(c.count()/len(feeds) + lead)
			return cond()
		})
		p.kill()
		n := (&lineCounter{path: out}).count()
		high = max(high, n)
		t.Logf("kill %d: %s; %d lines out, writer at %d of %d lines per feed, %d rotations",
			k, mode, n, w.written.Load(), perFeed, w.rotations.Load())
		allow(int(w.written.Load()) + rng.Intn(every)) // written while etld is down
	}
	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.eventually("the pipeline has started", func() bool { return p.logged("pipeline started") })
	allow(perFeed)
	p.eventually("the writer finishes", w.exited)
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	p.waitForLines(out, len(want), want)
	p.expectExit(p.stop(), 0, "SIGTERM after catching up")
	lines := splitLines(t, "out.jsonl", readFile(t, out))
	checkExactlyOnce(t, fmt.Sprintf("output after %d kills", kills), want, crashKeys(t, "out.jsonl", lines))
	crashCheckFinalState(t, ckpt, "out", out)
}

// TestKillNineDuringCheckpointWrite: a checkpoint is saved every
// millisecond (a temporary file written, fsynced and renamed over the
// old one, on the test's disk), and etld is killed with -9 the moment a
// new temporary checkpoint file shows up in the state dir, i.e. while a
// checkpoint is being written. After every kill, the checkpoint in place
// must decode (the old one or the new one, never a torn one), and every
// restart must go on from it. Then:
//
//   - a torn temporary file left by an earlier crash is ignored;
//   - a truncated or empty <pipeline>.json (what a crash can leave on a
//     filesystem that does not order the data before the rename) is
//     refused: exit 1, an error naming the file as corrupt, and the output
//     left untouched; etld does not silently start from scratch;
//   - with the good checkpoint back, the run finishes: every line is out
//     exactly once.
func TestKillNineDuringCheckpointWrite(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewSource(crashSeed(t)))
	const (
		perFeed  = 40000
		minKills = 12
		maxKills = 40
		minHits  = 3
	)
	feeds := []string{"alpha", "beta"}
	dir := t.TempDir()
	var want []string
	next := 0
	addInput := func(n int) {
		for _, f := range feeds {
			data, keys := feed(f, next, n)
			p := filepath.Join(dir, "in", f+".jsonl")
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			appendFile(t, p, data)
			want = append(want, keys...)
		}
		next += n
	}
	addInput(perFeed)
	cfg := writeConfig(t, dir, "ckpt.yaml", `version: 1
checkpoint_interval: 1ms
sources:
  alpha: { type: file, path: in/alpha.jsonl, follow: false }
  beta:  { type: file, path: in/beta.jsonl, follow: false }
workers:
  parse:
    inputs: [alpha, beta]
    concurrency: 2
    steps:
      - parse_json: {}
      - set: { crash: k9 }
sinks:
  out:
    type: file
    inputs: [parse]
    path: out/out.jsonl
    rotate: { max_size: 256KiB, gzip: true }
`)
	state := filepath.Join(dir, "state")
	ckpt := filepath.Join(state, "ckpt.json")
	out := filepath.Join(dir, "out", "out.jsonl")
	temps := func() map[string]bool {
		m := map[string]bool{}
		names, _ := filepath.Glob(filepath.Join(state, ".ckpt.json.tmp-*"))
		for _, n := range names {
			m[n] = true
		}
		return m
	}

	kills, hits := 0, 0
	saved := false // a checkpoint was seen
	for kills < minKills || (hits < minHits && kills < maxKills) {
		before := temps()
		// Kill at the n-th new temporary file seen (it is polled, so not
		// every one is seen).
		n, seen := 1+rng.Intn(8), map[string]bool{}
		p := startEtld(t, dir, nil, runArgs(cfg, state)...)
		finished := crashPoll(p, "a checkpoint being written", 100*time.Microsecond, func() bool {
			for name := range temps() {
				if !before[name] {
					seen[name] = true
				}
			}
			return len(seen) >= n
		})
		if finished {
			p.expectExit(p.wait(), 0, "a run that finished before its kill")
			addInput(10000)
			continue
		}
		p.kill()
		kills++
		left := 0
		for name := range temps() {
			if !before[name] {
				left++
			}
		}
		if left > 0 {
			hits++ // killed between the temporary file's creation and its rename
		}
		// The checkpoint in place decodes. It may be missing only if
		// the kill came during the very first save (the commit at start).
		_, ok, err := crashLoadCheckpoint(ckpt)
		if err != nil || (!ok && saved) {
			t.Fatalf("after kill %d (at new temporary checkpoint file %d): checkpoint exists %v, %v", kills, n, ok, err)
		}
		saved = saved || ok
	}
	t.Logf("%d kills at a checkpoint write; %d of them left the temporary file behind (killed mid-save)", kills, hits)
	if hits == 0 {
		t.Logf("note: no kill landed inside a save on this machine (the fsync is too fast); the kills still hit 1ms checkpoints")
	}

	// A torn temporary file from an earlier crash.
	torn := filepath.Join(state, ".ckpt.json.tmp-torn")
	if err := os.WriteFile(torn, []byte(`{"version":1,"pipeline":"ckpt","epoch":9`), 0o600); err != nil {
		t.Fatal(err)
	}

	// A truncated, then an empty checkpoint: refused, output untouched.
	good := readFile(t, ckpt)
	before := crashSnapshot(t, filepath.Dir(out))
	for _, bad := range []struct {
		name string
		data []byte
	}{
		{"truncated", good[:len(good)/2]},
		{"empty", nil},
	} {
		if err := os.WriteFile(ckpt, bad.data, 0o600); err != nil {
			t.Fatal(err)
		}
		p := startEtld(t, dir, nil, runArgs(cfg, state)...)
		p.expectExit(p.wait(), 1, bad.name+" checkpoint")
		if s := p.stderr.String(); !strings.Contains(s, ckpt) || !strings.Contains(s, "corrupt") {
			t.Errorf("%s checkpoint: the error does not name %s as corrupt:\n%s", bad.name, ckpt, s)
		}
		if after := crashSnapshot(t, filepath.Dir(out)); after != before {
			t.Errorf("%s checkpoint: etld changed the output although it refused to start:\nbefore %s\nafter  %s", bad.name, before, after)
		}
	}
	if err := os.WriteFile(ckpt, good, 0o600); err != nil {
		t.Fatal(err)
	}

	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.expectExit(p.wait(), 0, fmt.Sprintf("the run after %d kills", kills))
	checkExactlyOnce(t, fmt.Sprintf("output after %d kills", kills), want, crashKeys(t, "output", crashReadOutput(t, out)))
	crashCheckFinalState(t, ckpt, "out", out)
	if _, err := os.Stat(torn); err == nil {
		left := len(temps())
		t.Logf("note: temporary checkpoint files are never removed: %d left in the state dir after %d kills, the torn one included (TestCheckpointTempFilesCleanedUp)", left, kills)
	}
}

// crashSnapshot describes every file in dir by name, size and content
// hash, to tell whether anything changed.
func crashSnapshot(t testing.TB, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, e := range entries {
		data := readFile(t, filepath.Join(dir, e.Name()))
		var h uint64 = 14695981039346656037
		for _, c := range data {
			h ^= uint64(c)
			h *= 1099511628211
		}
		fmt.Fprintf(&b, "%s:%d:%x ", e.Name(), len(data), h)
	}
	return b.String()
}

// TestCheckpointTempFilesCleanedUp: a kill -9 during a checkpoint save
// leaves its temporary file (.<pipeline>.json.tmp-NNN) in the state dir;
// TestKillNineDuringCheckpointWrite leaves about one per kill. etld
// ignores them, rightly, but must not let them pile up across crashes (a
// crash loop under systemd would leave one per restart, forever): the
// next run of the pipeline removes its own leftovers, the way the file
// sink removes an interrupted compression's .gz.tmp. Other files in the
// state dir, and other pipelines' leftovers, are left alone.
func TestCheckpointTempFilesCleanedUp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data, want := feed("t", 0, 1000)
	writeFile(t, dir, "in/t.jsonl", data)
	cfg := writeConfig(t, dir, "tmpclean.yaml", `version: 1
sources:
  t: { type: file, path: in/t.jsonl, follow: false }
sinks:
  out: { type: file, inputs: [t], path: out/out.jsonl }
`)
	state := filepath.Join(dir, "state")
	stale := []string{".tmpclean.json.tmp-1234567", ".tmpclean.json.tmp-89"}
	others := []string{".other.json.tmp-1234567", "notes.txt"}
	for _, name := range append(slices.Clone(stale), others...) {
		writeFile(t, state, name, []byte(`{"version":1,"pipeline":"tmpclean","ep`))
	}
	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.expectExit(p.wait(), 0, "a run with leftovers of a crash in the state dir")
	checkExactlyOnce(t, "out.jsonl", want, outputKeys(t, filepath.Join(dir, "out", "out.jsonl")))
	for _, name := range stale {
		if _, err := os.Stat(filepath.Join(state, name)); err == nil {
			t.Errorf("the leftover temporary checkpoint file %s is still in the state dir after a clean run", name)
		}
	}
	for _, name := range others {
		if _, err := os.Stat(filepath.Join(state, name)); err != nil {
			t.Errorf("%s, not this pipeline's, was removed: %v", name, err)
		}
	}
}

// TestKillNineRotateKeep: with rotate.keep, a segment sealed after the
// last commit can also be pruned before the next one. Here the last
// commit names segment 1 as the active one, with 1000 lines; the run then
// seals segments 1, 2 and 3 (keep: 1 prunes 1 and 2), writes to 4 and is
// killed with -9. The restart rolls the output back to that commit and
// the source re-reads from it. Retention removed lines for good (that is
// what keep means), but no line may be in the output twice: the active
// file the restart finds holds only lines written after the commit
// (segment 4), so none of it may survive the rollback.
//
// The restart runs with keep: 0 (an operator raising the retention while
// etld is down): with keep: 1 a duplicate would still be written, and be
// seen by whatever reads the output, but pruned again by the end of the
// run, since the restart rewrites at least as many segments as the killed
// run sealed.
func TestKillNineRotateKeep(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := filepath.Join(dir, "in", "k.jsonl")
	data, want := feed("k", 0, 1000) // about 110 KB: less than a segment
	writeFile(t, dir, "in/k.jsonl", data)
	cfg := writeConfig(t, dir, "keep.yaml", `version: 1
checkpoint_interval: 1h
sources:
  k: { type: file, path: in/k.jsonl, follow: false }
sinks:
  out:
    type: file
    inputs: [k]
    path: out/out.jsonl
    rotate: { max_size: 256KiB, keep: 1 }
`)
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out", "out.jsonl")

	// Run 1 commits segment 1, active, with 110 KB.
	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.expectExit(p.wait(), 0, "the first run")

	// A crash right after run 1's commit, with everything after it
	// written: keep run 1's checkpoint aside, let run 2 write (and seal,
	// and prune) many segments, then put the old checkpoint back. This
	// is the state a kill -9 leaves when it lands after several
	// rotations since the last commit, made deterministic: a real kill
	// would have to land in a window of a few milliseconds.
	ckpt := filepath.Join(state, "keep.json")
	saved := readFile(t, ckpt)
	more, keys := feed("k", 1000, 40000)
	appendFile(t, in, more)
	want = append(want, keys...)
	p = startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.expectExit(p.wait(), 0, "the second run")
	if l := crashScan(out); len(l.sealed) == 0 || l.sealed[len(l.sealed)-1].seq < 3 {
		t.Fatalf("test bug: run 2 sealed too few segments: %s", crashDescribeOutput(out))
	}
	if err := os.WriteFile(ckpt, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpoint of run 1 restored over: %s", crashDescribeOutput(out))

	writeConfig(t, dir, "keep.yaml", strings.Replace(crashReadConfig(t, cfg), "keep: 1", "keep: 0", 1))
	p = startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.expectExit(p.wait(), 0, "the run after the kill")
	for _, line := range strings.Split(p.stderr.String(), "\n") {
		if strings.Contains(line, `"message":"output rolled back`) {
			t.Logf("%s", line)
		}
	}
	got := keysOf(t, "output", crashReadSegments(t, out, false))
	n := map[string]int{}
	var dup []string
	for _, k := range got {
		if n[k]++; n[k] == 2 {
			dup = append(dup, k)
		}
	}
	if len(dup) > 0 {
		slices.SortFunc(dup, compareKeys)
		t.Errorf("%d lines are in the output twice after the rollback (first: %v); output: %s", len(dup), dup[:min(8, len(dup))], crashDescribeOutput(out))
	}
	// What retention left out is the start of the input: the lines of
	// the pruned segments 1 to 3 and nothing else.
	if len(got) > 0 {
		if last := got[len(got)-1]; last != want[len(want)-1] {
			t.Errorf("the output ends with %s, want %s", last, want[len(want)-1])
		}
	}
}

// crashReadConfig returns the content of a config file.
func crashReadConfig(t testing.TB, path string) string {
	t.Helper()
	return string(readFile(t, path))
}
