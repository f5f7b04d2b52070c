package stagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// The suite is checked on fake stages: as written they keep the
// contract and pass; each `broken` variant breaks one rule, and the suite
// must fail it, naming the rule. A failing subtest fails its parent, so
// the broken variants run in a child process (TestBroken).

// TestSuitePassesFakes: the fakes keep the contract.
func TestSuitePassesFakes(t *testing.T) {
	Source(t, fakeSourceFactory(""), fakeSourceCase)
	Step(t, fakeStepFactory(""), &struct{}{})
	Sink(t, fakeSinkFactory(""), fakeSinkCase)
}

// TestSuiteCatches runs each broken fake in a child process and expects
// the suite to fail it with the given message.
func TestSuiteCatches(t *testing.T) {
	for _, c := range []struct{ broken, want string }{
		{"source-loses-on-cancel", "records read around cancellations"},
		{"source-leaks", "found unexpected goroutines"},
		{"source-restore-ignored", "records read after Restore"},
		{"step-shares-buffer", "records after a later Process"},
		{"sink-no-trim", "every record once, in order: the trim rule"},
		{"sink-close-twice", "second Close"},
		{"sink-keeps-bytes", "output after the written batches were overwritten"},
		{"sink-close-moves-state", "Close must not change it"},
		{"source-commits-stateless", "implements stages.Committer but not stages.Stateful"},
		{"source-state-not-json", "returned invalid JSON"},
	} {
		t.Run(c.broken, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBroken$", "-test.v")
			cmd.Env = append(os.Environ(), "STAGETEST_BROKEN="+c.broken)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a stage that breaks a rule (%s):\n%s", c.broken, out)
			}
			if !bytes.Contains(out, []byte(c.want)) {
				t.Errorf("the suite failed %s without saying %q:\n%s", c.broken, c.want, out)
			}
		})
	}
}

// TestBroken runs the suite on the fake named by $STAGETEST_BROKEN.
func TestBroken(t *testing.T) {
	broken := os.Getenv("STAGETEST_BROKEN")
	switch {
	case broken == "":
		t.Skip("run by TestSuiteCatches")
	case strings.HasPrefix(broken, "source-"):
		Source(t, fakeSourceFactory(broken), fakeSourceCase)
	case strings.HasPrefix(broken, "step-"):
		Step(t, fakeStepFactory(broken), &struct{}{})
	default:
		Sink(t, fakeSinkFactory(broken), fakeSinkCase)
	}
}

// fakeConfig is a finite source's config.
type fakeConfig struct{}

func (*fakeConfig) Finite() bool { return true }

// fakeSource yields fakeLines in batches of 100, and is Stateful.
type fakeSource struct {
	broken string
	lines  []string
	pos    int
	stop   chan struct{}
}

var fakeLines = Lines(450)

func fakeSourceFactory(broken string) stages.Factory {
	return stages.Factory{Kind: stages.KindSource, Type: "fake", NewConfig: func() any { return &fakeConfig{} },
		NewSource: func(stages.Settings, any) (stages.Source, error) {
			src := &fakeSource{broken: broken, lines: fakeLines, stop: make(chan struct{})}
			if broken == "source-commits-stateless" {
				return statelessCommitter{src}, nil
			}
			return src, nil
		}}
}

// statelessCommitter acknowledges commits but has no state (only the
// Source methods of the fake are promoted).
type statelessCommitter struct{ stages.Source }

func (statelessCommitter) Committed(context.Context, []byte) error { return nil }

func fakeSourceCase(t *testing.T) SourceCase {
	return SourceCase{Config: Config(t, fakeSourceFactory(""), t.TempDir(), ""), Want: fakeLines}
}

func (s *fakeSource) Open(context.Context) error {
	if s.broken == "source-leaks" {
		go func() { select {} }()
	}
	return nil
}

func (s *fakeSource) Read(ctx context.Context) (*stages.Batch, error) {
	if s.broken != "source-loses-on-cancel" {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	if s.pos == len(s.lines) {
		return nil, stages.ErrEndOfInput
	}
	end := min(s.pos+100, len(s.lines))
	b := batch(s.lines[s.pos:end], false)
	s.pos = end
	if err := ctx.Err(); err != nil && s.broken == "source-loses-on-cancel" {
		return nil, err // pulled, then dropped
	}
	return b, nil
}

func (s *fakeSource) Close() error { return nil }

func (s *fakeSource) State() ([]byte, error) {
	if s.broken == "source-state-not-json" {
		return []byte("pos=" + strconv.Itoa(s.pos)), nil
	}
	return []byte(strconv.Itoa(s.pos)), nil
}

func (s *fakeSource) Restore(state []byte) error {
	if s.broken == "source-restore-ignored" {
		return nil
	}
	n, err := strconv.Atoi(strings.TrimPrefix(string(state), "pos="))
	s.pos = n
	return err
}

// fakeStep upper-cases every record into memory the batch owns.
type fakeStep struct {
	broken string
	mu     sync.Mutex
	shared []byte
}

func fakeStepFactory(broken string) stages.Factory {
	return stages.Factory{Kind: stages.KindStep, Type: "fake", NewConfig: func() any { return &struct{}{} },
		NewStep: func(stages.Settings, any) (stages.Step, error) { return &fakeStep{broken: broken}, nil }}
}

func (s *fakeStep) Process(b *stages.Batch) {
	var buf []byte
	if s.broken == "step-shares-buffer" {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.shared == nil {
			s.shared = make([]byte, 0, 1<<16)
		}
		buf = s.shared[:0]
	}
	n := 0
	for _, r := range b.Records {
		n += len(r.Raw)
	}
	if cap(buf) < n {
		buf = make([]byte, 0, n)
	}
	for i := range b.Records {
		start := len(buf)
		buf = append(buf, bytes.ToUpper(b.Records[i].Raw)...)
		b.Records[i].Raw = buf[start:len(buf):len(buf)]
	}
	if s.broken == "step-shares-buffer" {
		s.shared = buf
	}
}

// fakeSink buffers up to 4 KiB of lines and writes them to its case's
// fakeOut; it is Stateful (its state is the output's length).
type fakeSink struct {
	broken string
	out    *fakeOut
	buf    []byte
	keep   [][]byte // sink-keeps-bytes: the records' Raw, written at Flush
	closed bool
}

type fakeOut struct {
	data  []byte
	fails int
}

func (o *fakeOut) write(p []byte) error {
	if o.fails > 0 {
		o.fails--
		return errors.New("injected failure")
	}
	o.data = append(o.data, p...)
	return nil
}

func fakeSinkFactory(broken string) stages.Factory {
	return stages.Factory{Kind: stages.KindSink, Type: "fake", NewConfig: func() any { return &fakeOut{} },
		NewSink: func(_ stages.Settings, cfg any) (stages.Sink, error) {
			return &fakeSink{broken: broken, out: cfg.(*fakeOut)}, nil
		}}
}

func fakeSinkCase(*testing.T) SinkCase {
	out := &fakeOut{}
	return SinkCase{
		Config: out,
		Output: func(*testing.T) []string {
			s := strings.TrimSuffix(string(out.data), "\n")
			if s == "" {
				return nil
			}
			return strings.Split(s, "\n")
		},
		FailWrites: func(n int) { out.fails = n },
	}
}

func (s *fakeSink) Open(context.Context) error { return nil }

func (s *fakeSink) Write(_ context.Context, b *stages.Batch) error {
	for i := range b.Records {
		if s.broken == "sink-keeps-bytes" {
			s.keep = append(s.keep, b.Records[i].Raw)
			continue
		}
		if len(s.buf) > 4096 {
			if err := s.flush(); err != nil {
				if s.broken != "sink-no-trim" {
					b.Records = b.Records[i:]
				}
				return err
			}
		}
		s.buf = append(append(s.buf, b.Records[i].Raw...), '\n')
	}
	return nil
}

func (s *fakeSink) flush() error {
	for _, raw := range s.keep {
		s.buf = append(append(s.buf, raw...), '\n')
	}
	s.keep = nil
	if err := s.out.write(s.buf); err != nil {
		return err
	}
	s.buf = s.buf[:0]
	return nil
}

func (s *fakeSink) Flush(context.Context) error { return s.flush() }

func (s *fakeSink) Close(context.Context) error {
	if s.closed {
		if s.broken == "sink-close-twice" {
			return errors.New("closed twice")
		}
		return nil
	}
	s.closed = true
	return s.flush()
}

func (s *fakeSink) State() ([]byte, error) {
	n := len(s.out.data)
	if s.closed && s.broken == "sink-close-moves-state" {
		n++ // as if Close wrote a trailer its state after Flush misses
	}
	return []byte(strconv.Itoa(n)), nil
}

func (s *fakeSink) Restore(state []byte) error {
	n, err := strconv.Atoi(string(state))
	if err != nil || n > len(s.out.data) {
		return fmt.Errorf("bad state %q", state)
	}
	s.out.data = s.out.data[:n]
	return nil
}
