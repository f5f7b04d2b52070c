package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/etld/etld/internal/stages"
)

// An input script is what one upstream sends on its edge: batches and
// barriers, then (always, in these tests) the close of the edge.
type scriptItem struct {
	epoch uint64 // > 0: a barrier
	seq   int    // batch number within its input
}

type script []scriptItem

// parseScript reads "b b 1 b 2": b is the next batch, a number a barrier.
func parseScript(s string) script {
	var sc script
	seq := 0
	for _, tok := range strings.Fields(s) {
		if tok == "b" {
			sc = append(sc, scriptItem{seq: seq})
			seq++
			continue
		}
		e, err := strconv.ParseUint(tok, 10, 64)
		if err != nil || e == 0 {
			panic("bad script token " + tok)
		}
		sc = append(sc, scriptItem{epoch: e})
	}
	return sc
}

// mergeOrigins tells the inputs' batches apart: input i's records have
// Origin mergeOrigins[i] and their batch number as Offset.
var mergeOrigins = func() []*stages.Origin {
	var o []*stages.Origin
	for i := range 16 {
		o = append(o, &stages.Origin{Source: strconv.Itoa(i)})
	}
	return o
}()

func scriptMsg(in int, it scriptItem) msg {
	if it.epoch > 0 {
		return msg{epoch: it.epoch}
	}
	return msg{b: &stages.Batch{Records: []stages.Record{{Origin: mergeOrigins[in], Offset: int64(it.seq)}}}}
}

// outItem is one message that came out of a merge.
type outItem struct {
	in, seq int
	epoch   uint64
}

func (o outItem) String() string {
	if o.epoch > 0 {
		return "#" + strconv.FormatUint(o.epoch, 10)
	}
	return fmt.Sprintf("%d.%d", o.in, o.seq)
}

func outOf(m msg) outItem {
	if m.b == nil {
		return outItem{epoch: m.epoch}
	}
	r := m.b.Records[0]
	in, _ := strconv.Atoi(r.Origin.Source)
	return outItem{in: in, seq: int(r.Offset)}
}

func formatOut(items []outItem) string {
	s := make([]string, len(items))
	for i, it := range items {
		s[i] = it.String()
	}
	return strings.Join(s, " ")
}

// checkMerged checks what a merge forwarded against what its inputs sent:
//   - every batch comes out exactly once, each input's batches in order;
//   - barriers come out once each, in increasing epochs;
//   - a barrier e comes out after every batch that an input sent before
//     its barrier e (or a later one), and before every batch sent after
//     it: the cut of epoch e is consistent;
//   - with allEpochs, every epoch sent on any input comes out.
func checkMerged(t *testing.T, scripts []script, got []outItem, allEpochs bool) {
	t.Helper()
	pos := map[[2]int]int{}
	type fwd struct {
		e  uint64
		at int
	}
	var barriers []fwd
	for k, it := range got {
		if it.epoch > 0 {
			barriers = append(barriers, fwd{it.epoch, k})
			continue
		}
		key := [2]int{it.in, it.seq}
		if _, dup := pos[key]; dup {
			t.Errorf("batch %v came out twice", it)
		}
		pos[key] = k
	}
	want := map[uint64]bool{}
	for i, sc := range scripts {
		last := -1
		for _, it := range sc {
			if it.epoch > 0 {
				want[it.epoch] = true
				continue
			}
			k, ok := pos[[2]int{i, it.seq}]
			if !ok {
				t.Errorf("batch %d.%d never came out", i, it.seq)
				continue
			}
			if k < last {
				t.Errorf("batch %d.%d came out before an earlier batch of its input", i, it.seq)
			}
			last = k
		}
	}
	var prev uint64
	for _, b := range barriers {
		if b.e <= prev {
			t.Errorf("barrier %d came out after barrier %d", b.e, prev)
		}
		prev = b.e
		delete(want, b.e)
	}
	if allEpochs && len(want) > 0 {
		t.Errorf("barriers %v were never forwarded", want)
	}
	for _, b := range barriers {
		for i, sc := range scripts {
			covered := false // a barrier >= b.e was sent before
			for _, it := range sc {
				if it.epoch > 0 {
					if it.epoch >= b.e {
						covered = true
					}
					continue
				}
				k, ok := pos[[2]int{i, it.seq}]
				if !ok {
					continue
				}
				switch {
				case covered && k < b.at:
					t.Errorf("batch %d.%d, sent after barrier %d, came out before it", i, it.seq, b.e)
				case !covered && k > b.at:
					t.Errorf("batch %d.%d, sent before barrier %d, came out after it", i, it.seq, b.e)
				}
			}
		}
	}
	if t.Failed() {
		t.Logf("merged: %s", formatOut(got))
	}
}

// jitter yields a random number of times, so that goroutines interleave
// differently from run to run.
func jitter(r *rand.Rand, max int) {
	for range r.IntN(max + 1) {
		runtime.Gosched()
	}
}

// runMerge sends the scripts concurrently, one goroutine per input, into
// a merge and collects its output until it closes.
func runMerge(t *testing.T, scripts []script, seed uint64) []outItem {
	t.Helper()
	hard, cancel := context.WithCancel(context.Background())
	defer cancel()
	ins := make([]chan msg, len(scripts))
	for i := range ins {
		ins[i] = newEdge()
	}
	out := merge(hard, ins)
	var senders sync.WaitGroup
	for i, sc := range scripts {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		senders.Go(func() {
			defer close(ins[i])
			for _, it := range sc {
				jitter(r, 3)
				if !send(hard, ins[i], scriptMsg(i, it)) {
					return
				}
			}
		})
	}
	defer senders.Wait()
	r := rand.New(rand.NewPCG(seed, 99))
	var got []outItem
	timeout := time.NewTimer(hangTimeout)
	defer timeout.Stop()
	for {
		select {
		case m, ok := <-out:
			if !ok {
				return got
			}
			got = append(got, outOf(m))
			jitter(r, 3)
		case <-timeout.C:
			t.Fatalf("merge did not close its output; so far: %s", formatOut(got))
		}
	}
}

func parseScripts(ss ...string) []script {
	out := make([]script, len(ss))
	for i, s := range ss {
		out[i] = parseScript(s)
	}
	return out
}

func TestMergeScripts(t *testing.T) {
	cases := map[string][]string{
		"one input":                  {"b b 1 b 2 b 3"},
		"one input only barriers":    {"1 2 3"},
		"two inputs same shape":      {"b 1 b 2 b", "b 1 b 2 b"},
		"uneven batches":             {"b b b b b 1 b b 2 b", "1 b b b 2", "b 1 2 b b b b"},
		"input closes without any":   {"b 1 b 2 b", ""},
		"input closes before 1":      {"b b 1 b 2 b", "b b"},
		"input closes between 1,2":   {"b 1 b b 2 b", "b 1 b", "b b 1 b 2"},
		"input closes after last":    {"b 1 b 2", "b 1 b 2 b b b"},
		"barrier first everywhere":   {"1 b 2 b", "1 b 2 b", "1 b 2 b"},
		"many epochs, many inputs":   {"1 2 3 4 5 b", "b 1 b 2 b 3 b 4 b 5", "b b b 1 2 3 4 5", "1 b 2 3 b 4 5 b"},
		"all inputs close, no epoch": {"b b", "b", ""},
	}
	for name, ss := range cases {
		t.Run(name, func(t *testing.T) {
			scripts := parseScripts(ss...)
			for seed := range uint64(50) {
				got := runMerge(t, scripts, seed)
				checkMerged(t, scripts, got, true)
				if t.Failed() {
					t.Fatalf("seed %d", seed)
				}
			}
		})
	}
}

// randomScripts makes n inputs that all carry epochs 1..epochs in order,
// with random batches around them; some inputs close early.
func randomScripts(r *rand.Rand, n, epochs int) []script {
	scripts := make([]script, n)
	for i := range scripts {
		var sb strings.Builder
		for e := 1; e <= epochs; e++ {
			for range r.IntN(4) {
				sb.WriteString("b ")
			}
			fmt.Fprintf(&sb, "%d ", e)
		}
		for range r.IntN(4) {
			sb.WriteString("b ")
		}
		sc := parseScript(sb.String())
		if r.IntN(3) == 0 {
			sc = sc[:r.IntN(len(sc)+1)] // closes early
		}
		scripts[i] = sc
	}
	return scripts
}

func TestMergeRandomScripts(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		scripts := randomScripts(r, 1+r.IntN(5), r.IntN(6))
		got := runMerge(t, scripts, uint64(round))
		checkMerged(t, scripts, got, true)
		if t.Failed() {
			for i, sc := range scripts {
				t.Logf("input %d: %v", i, sc)
			}
			t.Fatalf("round %d", round)
		}
	}
}

func TestMergeZeroInputs(t *testing.T) {
	hard, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := merge(hard, nil)
	m, ok := <-out
	if ok {
		t.Fatalf("merge of no inputs delivered %+v; want a closed channel", m)
	}
}

// mergeHarness drives a merge step by step inside a synctest bubble:
// after every step, synctest.Wait lets the forwarders go as far as they
// can, so what has come out so far is deterministic.
type mergeHarness struct {
	t      *testing.T
	ins    []chan msg
	hard   context.Context
	cancel context.CancelFunc

	mu   sync.Mutex
	got  []outItem
	done chan struct{} // closed when the merged channel closed
}

// newMergeHarness must be called inside synctest.Test. With read false
// nobody reads the merged channel until readOut is called.
func newMergeHarness(t *testing.T, n int, read bool) (*mergeHarness, chan msg) {
	h := &mergeHarness{t: t, done: make(chan struct{})}
	h.hard, h.cancel = context.WithCancel(context.Background())
	t.Cleanup(h.cancel)
	for range n {
		h.ins = append(h.ins, newEdge())
	}
	out := merge(h.hard, h.ins)
	if read {
		h.readOut(out)
	}
	return h, out
}

func (h *mergeHarness) readOut(out chan msg) {
	go func() {
		defer close(h.done)
		for m := range out {
			h.mu.Lock()
			h.got = append(h.got, outOf(m))
			h.mu.Unlock()
		}
	}()
}

// put sends script items (see parseScript; batch numbers continue per
// input) on input i without blocking, then waits for the merge to settle.
func (h *mergeHarness) put(i int, s string, seq *int) {
	h.t.Helper()
	for _, it := range parseScript(s) {
		if it.epoch == 0 {
			it.seq = *seq
			*seq++
		}
		select {
		case h.ins[i] <- scriptMsg(i, it):
		default:
			h.t.Fatalf("input %d is full", i)
		}
	}
	synctest.Wait()
}

func (h *mergeHarness) close(i int) {
	close(h.ins[i])
	synctest.Wait()
}

// expect compares what came out so far.
func (h *mergeHarness) expect(want string) {
	h.t.Helper()
	h.mu.Lock()
	got := formatOut(h.got)
	h.mu.Unlock()
	if got != want {
		h.t.Errorf("merged so far: %q\nwant:          %q", got, want)
	}
}

func (h *mergeHarness) closed() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// TestMergeHoldsBarrier: a barrier that arrived on one input is held, with
// everything after it on that input, until every other input delivers it;
// the other inputs' batches keep flowing meanwhile.
func TestMergeHoldsBarrier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, _ := newMergeHarness(t, 2, true)
		var s0, s1 int
		h.put(0, "b 1 b", &s0)
		h.expect("0.0")
		h.put(1, "b b", &s1)
		h.expect("0.0 1.0 1.1")
		h.put(1, "1", &s1)
		h.expect("0.0 1.0 1.1 #1 0.1")
		h.put(1, "b 2", &s1)
		h.put(0, "b", &s0)
		h.expect("0.0 1.0 1.1 #1 0.1 1.2 0.2")
		h.put(0, "2 b", &s0)
		h.expect("0.0 1.0 1.1 #1 0.1 1.2 0.2 #2 0.3")
		h.close(0)
		h.close(1)
		if !h.closed() {
			t.Fatal("merged channel not closed after every input closed")
		}
	})
}

// TestMergeInputClosesWhileBarrierHeld: an input that ends without
// delivering a barrier releases it once its own batches are out.
func TestMergeInputClosesWhileBarrierHeld(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, _ := newMergeHarness(t, 3, true)
		var s0, s1, s2 int
		h.put(0, "b 1 b", &s0)
		h.put(1, "1", &s1)
		h.expect("0.0")
		h.put(2, "b b", &s2)
		h.expect("0.0 2.0 2.1")
		h.close(2)
		h.expect("0.0 2.0 2.1 #1 0.1")
		h.put(1, "b", &s1)
		h.expect("0.0 2.0 2.1 #1 0.1 1.0")
		// Now only two inputs are left to align barrier 2.
		h.put(0, "2", &s0)
		h.expect("0.0 2.0 2.1 #1 0.1 1.0")
		h.put(1, "b", &s1)
		h.expect("0.0 2.0 2.1 #1 0.1 1.0 1.1")
		h.close(1) // closes holding nothing: barrier 2 goes
		h.expect("0.0 2.0 2.1 #1 0.1 1.0 1.1 #2")
		h.put(0, "3 b", &s0) // a lone input forwards at once
		h.expect("0.0 2.0 2.1 #1 0.1 1.0 1.1 #2 #3 0.2")
		h.close(0)
		if !h.closed() {
			t.Fatal("merged channel not closed after every input closed")
		}
	})
}

// TestMergeHardStopWhileAligning: at the hard stop, forwarders waiting
// for an alignment, reading an input or sending downstream all return,
// and the merged channel closes, although the inputs stay open.
func TestMergeHardStopWhileAligning(t *testing.T) {
	t.Run("waiting for alignment", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, _ := newMergeHarness(t, 3, true)
			var s0, s1 int
			h.put(0, "1 b", &s0)
			h.put(1, "1", &s1)
			h.expect("")
			h.cancel()
			synctest.Wait()
			if !h.closed() {
				t.Fatal("merged channel still open after the hard stop")
			}
		})
	})
	t.Run("blocked sending downstream", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, out := newMergeHarness(t, 2, false)
			var s0, s1 int
			h.put(0, "b b", &s0)
			h.put(1, "b", &s1)
			h.cancel()
			synctest.Wait()
			n := 0
			for range out {
				n++ // a forwarder may have raced a batch in before the stop
			}
			if n > 0 {
				t.Logf("%d batches delivered at the hard stop", n)
			}
		})
	})
	t.Run("blocked releasing a barrier", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h, out := newMergeHarness(t, 2, false)
			var s0, s1 int
			h.put(0, "1", &s0)
			h.put(1, "1", &s1) // the last to arrive blocks sending #1
			h.cancel()
			synctest.Wait()
			for range out {
			}
		})
	})
	t.Run("real goroutines", func(t *testing.T) {
		hard, cancel := context.WithCancel(context.Background())
		ins := []chan msg{newEdge(), newEdge(), newEdge()}
		out := merge(hard, ins)
		ins[0] <- msg{epoch: 1}
		ins[1] <- msg{b: &stages.Batch{}}
		got := recvWithin(t, out, hangTimeout, "the batch of input 1")
		if got.b == nil {
			t.Fatalf("got barrier %d before input 1's batch", got.epoch)
		}
		cancel()
		for range out {
		}
		// goleak (TestMain) checks that the forwarders are gone.
	})
}

// The aligner relies on every open input delivering every epoch, in
// order: an input that skipped epoch e would have its barrier e+1 counted
// as an arrival of e (aligner.arrive counts arrivals, not epochs), which
// releases barriers too early or deadlocks the merge. Sources guarantee
// it (TestSourceInjectsEveryRequestedEpoch); TestRunBackpressuredSource
// checks the whole chain.
