package engine

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/stages"
)

// scriptedSource returns its steps in turn: a batch, an error, or (block)
// a Read that waits until release is closed whatever its ctx says, like a
// Read stuck in a slow system call. After the script it waits for ctx.
// Its state is the number of batches returned.
type scriptedSource struct {
	steps   []sourceStep
	reading chan int // receives the index of every step started
	read    int
}

type sourceStep struct {
	batch   *stages.Batch
	err     error
	release chan struct{} // non-nil: block until closed, then return batch
}

func (s *scriptedSource) Open(context.Context) error { return nil }
func (s *scriptedSource) Close() error               { return nil }

func (s *scriptedSource) Read(ctx context.Context) (*stages.Batch, error) {
	i := s.read
	if i >= len(s.steps) {
		s.reading <- i
		<-ctx.Done()
		return nil, ctx.Err()
	}
	s.read++
	st := s.steps[i]
	s.reading <- i
	if st.release != nil {
		<-st.release
	}
	return st.batch, st.err
}

func (s *scriptedSource) State() ([]byte, error) { return []byte(strconv.Itoa(s.read)), nil }
func (s *scriptedSource) Restore([]byte) error   { return nil }

type sourceRig struct {
	runner *sourceRunner
	out    chan msg
	stop   context.CancelFunc
	result chan error
	mx     *Metrics
}

func newSourceRig(t *testing.T, src stages.Source) *sourceRig {
	r := &sourceRig{out: make(chan msg, 64), result: make(chan error, 1), mx: NewMetrics()}
	hard, cancelHard := context.WithCancel(context.Background())
	t.Cleanup(cancelHard)
	stop, cancelStop := context.WithCancel(hard)
	r.stop = cancelStop
	r.runner = &sourceRunner{
		id: "src", src: src, log: zerolog.Nop(), ckpt: newTestCheckpointer(r.mx, 1),
		out: &emitter{stage: "src", outs: []chan msg{r.out}, hard: hard, m: r.mx.stage("p", "src"), badLog: zerolog.Nop()},
	}
	go func() { r.result <- r.runner.run(stop) }()
	return r
}

// drain returns what the source sent, once it closed its edge.
func (r *sourceRig) drain(t *testing.T) string {
	t.Helper()
	var got []msg
	for {
		m := recvWithin(t, r.out, hangTimeout, "the source's output")
		if m.b == nil && m.epoch == 0 {
			break // closed
		}
		got = append(got, m)
	}
	return strings.Join(flatten(got), " ")
}

func oneRecord(s string) *stages.Batch {
	return &stages.Batch{Records: []stages.Record{rec(&stages.Origin{Source: "src"}, 0, s)}}
}

// TestSourceInjectsEveryRequestedEpoch: barriers requested while a Read
// is stuck are all injected, in order, after it returns, each with the
// source's state then. Aligners count on every input delivering every
// epoch (see edge.go).
func TestSourceInjectsEveryRequestedEpoch(t *testing.T) {
	release := make(chan struct{})
	src := &scriptedSource{reading: make(chan int, 16), steps: []sourceStep{
		{batch: oneRecord("a")},
		{batch: oneRecord("b"), release: release},
	}}
	r := newSourceRig(t, src)
	recvWithin(t, src.reading, hangTimeout, "the first Read")
	recvWithin(t, src.reading, hangTimeout, "the stuck Read")
	r.runner.requestBarrier(1)
	r.runner.requestBarrier(2)
	r.runner.requestBarrier(3)
	close(release)
	recvWithin(t, src.reading, hangTimeout, "the Read after the barriers")
	r.stop()
	if err := recvWithin(t, r.result, hangTimeout, "the source to stop"); err != nil {
		t.Fatal(err)
	}
	if got, want := r.drain(t), "a b #1 #2 #3"; got != want {
		t.Errorf("source sent %q, want %q", got, want)
	}
	c := r.runner.ckpt
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := uint64(1); e <= 3; e++ {
		k := c.pending[e]
		if k == nil || string(k.sources["src"]) != "2" {
			t.Errorf("epoch %d: source state %v, want the state after 2 batches", e, k)
		}
	}
}

// TestSourceBarrierInterruptsRead: a barrier requested while the source
// waits for input is injected without waiting for input; reading goes on.
func TestSourceBarrierInterruptsRead(t *testing.T) {
	src := &scriptedSource{reading: make(chan int, 16), steps: []sourceStep{{batch: oneRecord("a")}}}
	r := newSourceRig(t, src)
	recvWithin(t, src.reading, hangTimeout, "the first Read")
	recvWithin(t, src.reading, hangTimeout, "the idle Read")
	r.runner.requestBarrier(1)
	recvWithin(t, src.reading, hangTimeout, "the Read after the barrier")
	r.runner.requestBarrier(2)
	recvWithin(t, src.reading, hangTimeout, "the Read after barrier 2")
	r.stop()
	if err := recvWithin(t, r.result, hangTimeout, "the source to stop"); err != nil {
		t.Fatal(err)
	}
	if got, want := r.drain(t), "a #1 #2"; got != want {
		t.Errorf("source sent %q, want %q", got, want)
	}
}

func TestSourceEnds(t *testing.T) {
	t.Run("end of input emits the last batch", func(t *testing.T) {
		src := &scriptedSource{reading: make(chan int, 16), steps: []sourceStep{
			{batch: oneRecord("a")},
			{batch: oneRecord("b"), err: stages.ErrEndOfInput},
		}}
		r := newSourceRig(t, src)
		if err := recvWithin(t, r.result, hangTimeout, "the source to end"); err != nil {
			t.Fatal(err)
		}
		if got, want := r.drain(t), "a b"; got != want {
			t.Errorf("source sent %q, want %q", got, want)
		}
		checkCounter(t, "records in", r.mx.recordsIn.WithLabelValues("p", "src"), 2)
	})
	t.Run("read error", func(t *testing.T) {
		boom := errors.New("disk on fire")
		src := &scriptedSource{reading: make(chan int, 16), steps: []sourceStep{
			{batch: oneRecord("a"), err: boom},
		}}
		r := newSourceRig(t, src)
		err := recvWithin(t, r.result, 5*time.Second, "the source to fail (a Read error must not be taken for an interruption)")
		if !errors.Is(err, boom) {
			t.Fatalf("run = %v, want the read error", err)
		}
		if got, want := r.drain(t), "a"; got != want {
			t.Errorf("source sent %q, want %q (a batch returned with an error is kept)", got, want)
		}
		checkCounter(t, "errors", r.mx.errors.WithLabelValues("p", "src"), 1)
	})
}
