package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Helpers of the ordered-merge tests (merge_test.go, SPEC §5). Every name
// starts with "merge" so that it cannot collide with the other e2e files.
//
// A merge record is one line
//
//	{"ts":"2026-11-27T10:00:00.123450Z","feed":"feed-3","seq":"000123"}
//
// with ts fixed-width (six fractional digits, Z) or, in the numbers form,
// {"ts":1795773600.123450,...} (Unix seconds, six fractional digits), and
// seq zero-padded in a string. With this layout, for feeds whose names
// sort like their paths, the byte order of whole lines is the order the
// merge must produce (key, then feed, then input order), so sorted feeds
// merged by `LC_ALL=C sort -m` are the expected output.

// mergeTSLayout formats a key as fixed-width RFC 3339 in UTC.
const mergeTSLayout = "2006-01-02T15:04:05.000000Z"

// mergeT0 is the first instant of the generated finite feeds.
var mergeT0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// mergeTick is the grid of the generated keys: coarse, so that equal keys
// happen within a feed and across feeds.
const mergeTick = 50 // µs

// mergeFeed is one generated input file.
type mergeFeed struct {
	name string  // feed-N: also the file name without .jsonl
	data []byte  // its lines, each with its newline
	keys []int64 // key of line i, µs since 1970
}

// mergeAppendLine appends one record line with its newline. The key is
// in µs since 1970; numeric selects the numbers form of ts.
func mergeAppendLine(dst []byte, us int64, numeric bool, feed string, seq int) []byte {
	dst = append(dst, `{"ts":`...)
	if numeric {
		dst = strconv.AppendInt(dst, us/1e6, 10)
		dst = append(dst, '.')
		dst = append(dst, fmt.Sprintf("%06d", us%1e6)...)
	} else {
		dst = append(dst, '"')
		dst = time.UnixMicro(us).UTC().AppendFormat(dst, mergeTSLayout)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"feed":"`...)
	dst = append(dst, feed...)
	dst = append(dst, `","seq":"`...)
	dst = append(dst, fmt.Sprintf("%06d", seq)...)
	return append(dst, "\"}\n"...)
}

// mergeGenFeed generates a sorted feed of n lines: it starts up to 5s
// after mergeT0 and spans 10 to 30s, with random gaps on a 50µs grid
// (zero now and then: equal keys within the feed) and a pause of up to
// 2s once in a few hundred lines.
func mergeGenFeed(rng *rand.Rand, name string, n int, numeric bool) mergeFeed {
	f := mergeFeed{name: name, keys: make([]int64, 0, n)}
	us := mergeT0.UnixMicro() + rng.Int63n(5e6/mergeTick)*mergeTick
	span := int64(10e6) + rng.Int63n(20e6)
	mean := max(1, span/int64(n)/mergeTick)
	for seq := range n {
		if seq > 0 {
			g := rng.Int63n(2*mean + 1)
			if rng.Intn(400) == 0 {
				g += rng.Int63n(2e6 / mergeTick)
			}
			us += g * mergeTick
		}
		f.keys = append(f.keys, us)
		f.data = mergeAppendLine(f.data, us, numeric, name, seq)
	}
	return f
}

// mergeGenFeeds generates feeds feed-1..feed-k with n(i) lines each and
// writes them to dir/in. It fails the test if the data lacks equal keys
// within a feed or across feeds (the tie rule would go untested).
func mergeGenFeeds(t testing.TB, rng *rand.Rand, dir string, k int, n func(i int) int, numeric bool) []mergeFeed {
	t.Helper()
	feeds := make([]mergeFeed, k)
	for i := range feeds {
		feeds[i] = mergeGenFeed(rng, fmt.Sprintf("feed-%d", i+1), n(i), numeric)
		writeFile(t, dir, filepath.Join("in", feeds[i].name+".jsonl"), feeds[i].data)
	}
	within, across, total := 0, 0, 0
	owner := map[int64]int{}
	for i, f := range feeds {
		total += len(f.keys)
		for j, us := range f.keys {
			if j > 0 && f.keys[j-1] == us {
				within++
			}
			if o, ok := owner[us]; !ok {
				owner[us] = i
			} else if o != i && o >= 0 {
				across++
				owner[us] = -1 // count each shared key once
			}
		}
	}
	t.Logf("%d feeds, %d lines; %d equal keys in a row within a feed, %d keys shared by feeds", k, total, within, across)
	if within == 0 || across == 0 {
		t.Fatalf("test data: want equal keys within and across feeds, got %d and %d", within, across)
	}
	return feeds
}

// mergeFeedPaths are the paths of feeds in dir/in, in feed order.
func mergeFeedPaths(dir string, feeds []mergeFeed) []string {
	paths := make([]string, len(feeds))
	for i, f := range feeds {
		paths[i] = filepath.Join(dir, "in", f.name+".jsonl")
	}
	return paths
}

// mergeSortM returns `LC_ALL=C sort -m paths...`.
func mergeSortM(t testing.TB, paths []string) []byte {
	t.Helper()
	cmd := exec.Command("sort", append([]string{"-m"}, paths...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sort -m: %v\n%s", err, stderr.String())
	}
	return out
}

// mergeOwnSort merges feeds by the tie rule of SPEC §5 without looking at
// the bytes: by key, then feed order (the order of feeds), then input
// order.
func mergeOwnSort(feeds []mergeFeed) []byte {
	type ref struct {
		key  int64
		line []byte
	}
	var all []ref
	for _, f := range feeds { // feed order, then input order: a stable sort keeps it
		lines := bytes.SplitAfter(f.data, []byte{'\n'})
		for i, us := range f.keys {
			all = append(all, ref{us, lines[i]})
		}
	}
	slices.SortStableFunc(all, func(a, b ref) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return 0
	})
	var out []byte
	for _, r := range all {
		out = append(out, r.line...)
	}
	return out
}

// mergeCheckSame fails the test unless got is want byte for byte; on a
// difference it shows the first differing line with some context, and
// what is lost or duplicated.
func mergeCheckSame(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	gl := bytes.Split(bytes.TrimSuffix(got, []byte{'\n'}), []byte{'\n'})
	wl := bytes.Split(bytes.TrimSuffix(want, []byte{'\n'}), []byte{'\n'})
	i := 0
	for i < len(gl) && i < len(wl) && bytes.Equal(gl[i], wl[i]) {
		i++
	}
	ctx := func(lines [][]byte) string {
		var b strings.Builder
		for j := max(0, i-3); j < min(len(lines), i+4); j++ {
			mark := "  "
			if j == i {
				mark = "> "
			}
			fmt.Fprintf(&b, "\n    %s%d: %s", mark, j+1, lines[j])
		}
		return b.String()
	}
	n := map[string]int{}
	for _, l := range wl {
		n[string(l)]--
	}
	for _, l := range gl {
		n[string(l)]++
	}
	var lost, extra []string
	for l, c := range n {
		if c < 0 {
			lost = append(lost, l)
		} else if c > 0 {
			extra = append(extra, fmt.Sprintf("%s x%d", l, c))
		}
	}
	slices.Sort(lost)
	slices.Sort(extra)
	t.Errorf("%s: output (%d lines, %d bytes) differs from the expected (%d lines, %d bytes) first at line %d; %d lines lost %v, %d duplicated or unexpected %v\n  got:%s\n  want:%s",
		what, len(gl), len(got), len(wl), len(want), i+1,
		len(lost), lost[:min(len(lost), 3)], len(extra), extra[:min(len(extra), 3)], ctx(gl), ctx(wl))
}

// ---------------------------------------------------------------------------
// Live feeds

// mergeRec is one record of the live tests, as written or as read back.
type mergeRec struct {
	feed string
	seq  int
	ts   int64 // ns since 1970
	old  bool  // written with a key older than one already in the output
}

func (r mergeRec) key() string { return key(r.feed, r.seq) }

// mergeParseRec decodes a record line.
func mergeParseRec(line []byte) (mergeRec, error) {
	var v struct {
		TS   *string `json:"ts"`
		Feed string  `json:"feed"`
		Seq  string  `json:"seq"`
	}
	if err := json.Unmarshal(line, &v); err != nil {
		return mergeRec{}, err
	}
	if v.TS == nil {
		return mergeRec{}, errors.New("no ts")
	}
	ts, err := time.Parse(time.RFC3339Nano, *v.TS)
	if err != nil {
		return mergeRec{}, err
	}
	seq, err := strconv.Atoi(v.Seq)
	if err != nil {
		return mergeRec{}, fmt.Errorf("seq: %w", err)
	}
	return mergeRec{feed: v.Feed, seq: seq, ts: ts.UnixNano()}, nil
}

// mergeFollower reads a growing output file, line by line.
type mergeFollower struct {
	t       testing.TB
	path    string
	off     int64
	partial []byte
	recs    []mergeRec
	raw     [][]byte // the line of recs[i]
	maxTS   int64    // newest key so far
	decode  func(line []byte) (mergeRec, error)
}

// poll reads what was appended since the last call.
func (f *mergeFollower) poll() {
	f.t.Helper()
	file, err := os.Open(f.path)
	if err != nil {
		return
	}
	defer file.Close()
	if _, err := file.Seek(f.off, io.SeekStart); err != nil {
		f.t.Fatal(err)
	}
	b, err := io.ReadAll(file)
	if err != nil {
		f.t.Fatal(err)
	}
	f.off += int64(len(b))
	b = append(f.partial, b...)
	i := bytes.LastIndexByte(b, '\n')
	if i < 0 {
		f.partial = b
		return
	}
	f.partial = slices.Clone(b[i+1:])
	for _, l := range bytes.Split(b[:i], []byte{'\n'}) {
		r, err := f.decode(l)
		if err != nil {
			f.t.Fatalf("%s: line %d is not a record (%v): %.200q", filepath.Base(f.path), len(f.recs)+1, err, l)
		}
		f.recs = append(f.recs, r)
		f.raw = append(f.raw, slices.Clone(l))
		f.maxTS = max(f.maxTS, r.ts)
	}
}

// mergeDeadLetterRec decodes a dead-letter line and the record in it.
func mergeDeadLetterRec(line []byte) (mergeRec, error) {
	var v struct {
		Error  string  `json:"error"`
		Record *string `json:"record"`
	}
	if err := json.Unmarshal(line, &v); err != nil {
		return mergeRec{}, err
	}
	if v.Record == nil {
		return mergeRec{}, errors.New("no record field")
	}
	return mergeParseRec([]byte(*v.Record))
}

// mergeViolations returns the indexes of the records whose key is less
// than the newest key of the records before them.
func mergeViolations(recs []mergeRec) []int {
	var out []int
	var newest int64
	for i, r := range recs {
		if i > 0 && r.ts < newest {
			out = append(out, i)
		}
		newest = max(newest, r.ts)
	}
	return out
}

// mergeCheckFeedOrder fails the test unless the records of every feed
// come in the order they were written (seq ascending).
func mergeCheckFeedOrder(t testing.TB, what string, recs []mergeRec) {
	t.Helper()
	last := map[string]int{}
	bad := 0
	for i, r := range recs {
		if l, ok := last[r.feed]; ok && r.seq <= l {
			if bad++; bad <= 5 {
				t.Errorf("%s: line %d is %s seq %d, after seq %d of that feed", what, i+1, r.feed, r.seq, l)
			}
		}
		last[r.feed] = r.seq
	}
	if bad > 5 {
		t.Errorf("%s: %d lines out of their feed's order in all", what, bad)
	}
}

// mergeWriter appends records to a live feed every `every`, with the
// current time as key; with old set, every 20th record gets instead a key
// 2s before the newest key already in the output (*outNewest, once it is
// known), so it is late for sure.
type mergeWriter struct {
	feed  string
	path  string
	every time.Duration
	limit int // stop after this many records (0: when told)
	old   bool

	n    atomic.Int64 // records written
	oldN atomic.Int64 // of them old
	recs []mergeRec   // read after the writer is done
	err  error
}

func (w *mergeWriter) run(stop <-chan struct{}, outNewest *atomic.Int64, wg *sync.WaitGroup) {
	defer wg.Done()
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		w.err = err
		return
	}
	defer func() {
		if err := f.Close(); err != nil && w.err == nil {
			w.err = err
		}
	}()
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	var line []byte
	for seq := 0; w.limit == 0 || seq < w.limit; seq++ {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		r := mergeRec{feed: w.feed, seq: seq, ts: time.Now().UTC().Truncate(time.Microsecond).UnixNano()}
		if n := outNewest.Load(); w.old && seq%20 == 10 && n > 0 {
			r.ts, r.old = n-int64(2*time.Second), true
		}
		line = line[:0]
		line = append(line, `{"ts":"`...)
		line = time.Unix(0, r.ts).UTC().AppendFormat(line, mergeTSLayout)
		line = append(line, `","feed":"`...)
		line = append(line, w.feed...)
		line = append(line, `","seq":"`...)
		line = append(line, fmt.Sprintf("%06d", seq)...)
		line = append(line, "\"}\n"...)
		if _, err := f.Write(line); err != nil {
			w.err = err
			return
		}
		w.recs = append(w.recs, r)
		w.n.Add(1)
		if r.old {
			w.oldN.Add(1)
		}
	}
}

// ---------------------------------------------------------------------------
// Admin server

// mergeHTTP keeps no idle connection (and so no goroutine) after a
// request: TestMain checks for leaks.
var mergeHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// mergeMetricSum returns the sum of the samples of metric whose labels
// include every one of labels (`name="value"`), and how many there are.
func mergeMetricSum(addr, metric string, labels ...string) (sum float64, n int, err error) {
	resp, err := mergeHTTP.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("GET /metrics: %s", resp.Status)
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
		lbls := "," + line[len(metric)+1:i] + ","
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(lbls, ","+l+",")
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[i+1:]), 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%q: %w", line, err)
		}
		sum += v
		n++
	}
	return sum, n, nil
}

// mergeKillTwice runs etld on cfg with state dir state, kills it with -9
// twice (once its output out has passed 5-35% of total bytes, then past
// 45-80%, or possibly at once at the restart, during recovery) and
// restarts it until it exits 0 by itself.
func mergeKillTwice(t *testing.T, rng *rand.Rand, dir, cfg, state, out string, total int64) {
	t.Helper()
	size := func() int64 {
		fi, err := os.Stat(out)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	// The kills: past 5-35% of the output, then past 45-80% or at start.
	marks := []int64{total * (5 + rng.Int63n(31)) / 100, total * (45 + rng.Int63n(36)) / 100}
	atStart := rng.Intn(3) == 0
	runs := 0
	for kills := 0; ; runs++ {
		if runs > 10 {
			t.Fatalf("etld did not finish in %d runs", runs)
		}
		p := startEtld(t, dir, nil, runArgs(cfg, state)...)
		if kills == len(marks) {
			p.expectExit(p.wait(), 0, "the run after the kills")
			break
		}
		mark := marks[kills]
		mode := fmt.Sprintf("output past %d of %d bytes", mark, total)
		cond := func() bool { return size() >= mark }
		if kills == 1 && atStart {
			mode, cond = "at start", func() bool { return true }
		}
		if crashPoll(p, "the moment to kill: "+mode, crashPollEvery, cond) {
			p.expectExit(p.exitCode(), 0, "a run that finished before its kill")
			t.Logf("run %d finished before its kill (%s)", runs+1, mode)
			break
		}
		p.kill()
		kills++
		t.Logf("run %d: kill -9 %s; output had %d bytes", runs+1, mode, size())
	}
	t.Logf("%d runs", runs+1)
}
