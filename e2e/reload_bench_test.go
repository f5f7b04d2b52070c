package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/etld/etld/internal/linescan"
)

// BenchmarkReloadLatency measures hot reload at a steady load: a writer
// appends 5,000 or 50,000 records/s (every 2ms) to a followed file, each
// stamped with its write time; etld parses them and sets "version"; each
// iteration saves the config with the next version (write temp, rename)
// and etld, with its default 250ms debounce, swaps the worker in place.
// The source and the sink do not change.
//
//	go test -run '^$' -bench BenchmarkReloadLatency -benchtime 20x ./e2e/
//
// How it measures. A poller goroutine reads the output file every
// millisecond and timestamps every complete line it finds (its arrival).
// Per save:
//
//   - save-to-new-ms: from just before the rename to the arrival of the
//     first record with the new version (what an operator sees);
//   - stall-ms: the longest time without any output arrival between the
//     save and 100ms after the first new record: how long the unchanged
//     source and sink were held for the swap (the worker's drain, the
//     checkpoint commit, the swap) as seen from outside;
//   - rec-latency-max-ms: the largest write-to-arrival time of the records
//     written in that window (from the "wts" stamp), which shows the
//     stall too, from the records' side;
//   - baseline-gap-ms and baseline-rec-latency-max-ms: the same two over
//     the second before the save, for reference: what the poller, the
//     writer and the scheduler give without any reload;
//   - swap-ms and drain-ms: what etld logs ("pipeline reconfigured in
//     place": took, drain).
//
// Arrival is when the bytes are in the output file, so the sink's flush
// policy is part of it. Sub-benchmark fsync=batch flushes (and fsyncs)
// the output after every write, so arrivals follow etld's own progress;
// fsync=checkpoint is the default (lines reach the file at checkpoints,
// every checkpoint_interval, 1s by default), where save-to-new includes
// the wait for the next checkpoint after the swap and the gaps are the
// checkpoint interval (no stall figure).
func BenchmarkReloadLatency(b *testing.B) {
	for _, c := range []struct {
		rate  int
		fsync string
	}{{5000, "batch"}, {50000, "batch"}, {5000, "checkpoint"}} {
		b.Run(fmt.Sprintf("rate=%d/fsync=%s", c.rate, c.fsync), func(b *testing.B) { benchReload(b, c.rate, c.fsync) })
	}
}

// rlBenchPoll is how often the benchmark looks for new output lines.
const rlBenchPoll = time.Millisecond

func benchReload(b *testing.B, rate int, fsync string) {
	dir := b.TempDir()
	in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
	if err := os.MkdirAll(filepath.Dir(in), 0o755); err != nil {
		b.Fatal(err)
	}
	config := func(version int) string {
		return fmt.Sprintf(`version: 1
sources:
  app: { type: file, path: %q, follow: true }
workers:
  enrich:
    inputs: [app]
    concurrency: 2
    steps:
      - parse_json: {}
      - set: { version: %d }
sinks:
  out: { type: file, inputs: [enrich], path: %q, fsync: %s }
`, in, version, out, fsync)
	}
	cfg := writeConfig(b, dir, "p.yaml", config(0))
	p := startEtld(b, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.eventually("the pipeline has started", func() bool { return p.logged("pipeline started") })
	w := rlStartWriterOpts(b, in, "app", rate, rlWriterOpts{stamp: true})
	arr := rlStartArrivals(b, out)
	defer arr.halt()
	// Steady state first: two seconds of output.
	p.eventually("two seconds of output", func() bool { return arr.since(time.Time{}) > 2*rate })

	var lat, stall, recLat, baseGap, baseRecLat, swap, drain []float64
	for i := 1; i <= b.N; i++ {
		before := rlCount(p, "pipeline reconfigured in place")
		saved := time.Now()
		rlSaveRename(b, cfg, config(i))
		var first time.Time
		p.eventually(fmt.Sprintf("a record with version %d", i), func() bool {
			var ok bool
			first, ok = arr.firstVersion(i)
			return ok
		})
		rlAwaitCount(p, "pipeline reconfigured in place", before)
		// Observe 100ms past the first new record, plus a second of
		// steady state before the next save.
		end := first.Add(100 * time.Millisecond)
		p.eventually("a second of output after the swap", func() bool {
			last, ok := arr.last()
			return ok && last.After(first.Add(time.Second))
		})
		lat = append(lat, rlMs(first.Sub(saved)))
		g, rl := arr.window(saved, end)
		stall, recLat = append(stall, g), append(recLat, rl)
		g, rl = arr.window(saved.Add(-time.Second), saved)
		baseGap, baseRecLat = append(baseGap, g), append(baseRecLat, rl)
		logged := rlLogged(p, "pipeline reconfigured in place")
		if len(logged) > before {
			v := logged[before]
			took, _ := v["took"].(float64)
			dr, _ := v["drain"].(float64)
			swap, drain = append(swap, took), append(drain, dr)
		}
	}
	b.StopTimer()
	total := w.halt()
	p.eventually(fmt.Sprintf("all %d records out", total), func() bool { return arr.since(time.Time{}) >= total })
	rlStillRunning(b, p, p.cmd.Process.Pid, "after the reloads")
	p.expectExit(p.stop(), 0, "SIGTERM after the reloads")
	arr.halt()
	checkExactlyOnce(b, "output", w.keys(total), arr.keys())

	b.ReportMetric(rlMean(lat), "save-to-new-ms")
	b.ReportMetric(slices.Max(lat), "max-save-to-new-ms")
	if fsync == "batch" {
		b.ReportMetric(rlMean(stall), "stall-ms")
		b.ReportMetric(slices.Max(stall), "max-stall-ms")
		b.ReportMetric(slices.Max(recLat), "rec-latency-max-ms")
		b.ReportMetric(slices.Max(baseGap), "baseline-gap-ms")
		b.ReportMetric(slices.Max(baseRecLat), "baseline-rec-latency-max-ms")
	}
	if len(swap) > 0 {
		b.ReportMetric(rlMean(swap), "swap-ms")
		b.ReportMetric(rlMean(drain), "drain-ms")
	}
	b.Logf("fsync=%s, %d saves: save-to-new ms %v; stall ms %v; record latency max ms %v; baseline gap ms %v; swap ms %v",
		fsync, len(lat), rlRounded(lat), rlRounded(stall), rlRounded(recLat), rlRounded(baseGap), rlRounded(swap))
}

func rlMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func rlMean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(max(1, len(xs)))
}

func rlRounded(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(int(x*10+0.5)) / 10
	}
	return out
}

// rlArrival is one output line as the poller found it.
type rlArrival struct {
	at      time.Time // when the poller found it in the file
	seq     int
	wts     int64 // when the writer wrote it (Unix ns)
	version int
	key     string
}

// rlArrivals polls an output file every rlBenchPoll and timestamps the
// lines that appear.
type rlArrivals struct {
	path  string
	mu    sync.Mutex
	recs  []rlArrival
	first map[int]time.Time // arrival of the first line of each version
	bad   int
	stop  chan struct{}
	done  chan struct{}
}

func rlStartArrivals(tb testing.TB, path string) *rlArrivals {
	a := &rlArrivals{path: path, first: map[int]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	tb.Cleanup(a.halt)
	return a
}

func (a *rlArrivals) halt() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
}

func (a *rlArrivals) run() {
	defer close(a.done)
	tick := time.NewTicker(rlBenchPoll)
	defer tick.Stop()
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	var part []byte
	buf := make([]byte, 1<<20)
	for {
		select {
		case <-a.stop:
			return
		case <-tick.C:
		}
		if f == nil {
			var err error
			if f, err = os.Open(a.path); err != nil {
				f = nil
				continue
			}
		}
		for {
			n, err := f.Read(buf)
			now := time.Now()
			data := append(part, buf[:n]...)
			i := bytes.LastIndexByte(data, '\n')
			if i >= 0 {
				a.add(now, data[:i+1])
				part = bytes.Clone(data[i+1:])
			} else {
				part = data
			}
			if n < len(buf) || err == io.EOF {
				break
			}
		}
	}
}

// add parses the lines the poller found at now. The line is the stamped
// record plus ,"version":N before its closing brace.
func (a *rlArrivals) add(now time.Time, data []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for line := range bytes.Lines(data) {
		r := rlArrival{at: now, seq: -1, version: -1}
		r.key, _ = linescan.String(line, `"key":"`)
		if n, ok := linescan.Int(line, `"seq":`); ok {
			r.seq = int(n)
		}
		if n, ok := linescan.Int(line, `"wts":`); ok {
			r.wts = n
		}
		if n, ok := linescan.Int(line, `"version":`); ok {
			r.version = int(n)
		}
		if r.key == "" || r.seq < 0 || r.wts == 0 || r.version < 0 {
			a.bad++
		}
		if _, ok := a.first[r.version]; !ok {
			a.first[r.version] = now
		}
		a.recs = append(a.recs, r)
	}
}

// since counts the lines that arrived after t.
func (a *rlArrivals) since(t time.Time) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for i := len(a.recs) - 1; i >= 0 && a.recs[i].at.After(t); i-- {
		n++
	}
	return n
}

// last is the arrival time of the newest line.
func (a *rlArrivals) last() (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.recs) == 0 {
		return time.Time{}, false
	}
	return a.recs[len(a.recs)-1].at, true
}

// firstVersion is the arrival of the first line with version v.
func (a *rlArrivals) firstVersion(v int) (time.Time, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.first[v]
	return t, ok
}

// window returns, over [from, to), the longest time without an arrival
// (from the last arrival at or before from, to the first at or after to)
// and the largest write-to-arrival latency of the lines that arrived in
// it, both in ms.
func (a *rlArrivals) window(from, to time.Time) (gap, recLat float64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	prev := time.Time{}
	for _, r := range a.recs {
		if r.at.Before(from) {
			prev = r.at
			continue
		}
		if !prev.IsZero() {
			gap = max(gap, rlMs(r.at.Sub(prev)))
		}
		prev = r.at
		if !r.at.Before(to) {
			break
		}
		recLat = max(recLat, rlMs(r.at.Sub(time.Unix(0, r.wts))))
	}
	return gap, recLat
}

// keys returns the keys of every line, failing on a malformed one.
func (a *rlArrivals) keys() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.recs))
	for _, r := range a.recs {
		out = append(out, r.key)
	}
	if a.bad > 0 {
		out = append(out, fmt.Sprintf("(%d malformed lines)", a.bad))
	}
	return out
}
