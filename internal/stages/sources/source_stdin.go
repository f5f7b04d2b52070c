package sources

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/etld/etld/internal/stages"
)

// StdinConfig is the config of the `stdin` source.
type StdinConfig struct {
	MaxLineBytes stages.ByteSize `yaml:"max_line_bytes" doc:"longest line; a longer line is a bad record that keeps its first max_line_bytes bytes"`
	Multiline    MultilineConfig `yaml:"multiline" doc:"join consecutive lines into one record, such as a stack trace with the line before it (off by default); the record's lines are separated by \\n and it is one record for max_line_bytes"`
}

// NewStdinConfig returns a StdinConfig with its defaults.
func NewStdinConfig() *StdinConfig {
	return &StdinConfig{MaxLineBytes: defaultMaxLineBytes, Multiline: newMultilineConfig()}
}

// Validate implements stages.Validator.
func (c *StdinConfig) Validate() error {
	return errors.Join(validateMaxLineBytes(c.MaxLineBytes), c.Multiline.validate())
}

// Finite implements stages.Finiter: stdin ends at end of file.
func (c *StdinConfig) Finite() bool { return true }

func init() {
	register(stages.Factory{
		Kind:      stages.KindSource,
		Type:      "stdin",
		Doc:       "Reads lines from standard input until it ends.",
		NewConfig: func() any { return NewStdinConfig() },
		NewSource: func(s stages.Settings, cfg any) (stages.Source, error) {
			c, ok := cfg.(*StdinConfig)
			if !ok {
				return nil, fmt.Errorf("stdin source %q: config is %T, want *StdinConfig", s.ID, cfg)
			}
			in := s.Stdin
			if in == nil {
				in = os.Stdin
			}
			return newStdinSource(s, c, in, realClock{}), nil
		},
	})
}

// stdinSource reads lines from a stream (os.Stdin outside tests). Records
// have Origin.Path "-" and Offset the byte offset in the stream.
//
// Each read of the stream runs in a short-lived goroutine so that Read can
// return ctx.Err() when ctx is cancelled while the stream has no data. The
// read stays pending then, and the next Read picks up its result. Close
// closes the stream when it is an io.Closer and waits for a pending read,
// except on os.Stdin: a blocking read of a terminal or pipe cannot be
// interrupted, so its goroutine stays parked until the read returns (data,
// end of file, or process exit). Read and Close are called from one
// goroutine.
type stdinSource struct {
	r      io.Reader
	origin *stages.Origin
	sp     lineSplitter
	bb     batchBuilder

	clk      clock
	timeout  time.Duration // multiline timeout
	lastData time.Time     // when a read last got data

	results chan readResult // capacity 1: the result of the pending read
	pending bool            // a read goroutine owns the buffer's free tail
	eof     bool
	err     error // sticky read error, returned once the buffered lines are out
	closed  bool
}

type readResult struct {
	n   int
	err error
}

func newStdinSource(s stages.Settings, c *StdinConfig, r io.Reader, clk clock) *stdinSource {
	src := &stdinSource{
		clk:     clk,
		r:       r,
		origin:  &stages.Origin{Source: s.ID, Path: "-"},
		results: make(chan readResult, 1),
	}
	src.sp.max = int(c.MaxLineBytes)
	src.sp.copyLines = true // a read may still be pending in the buffer when Read returns
	if c.Multiline.on() {
		src.sp.ml, src.timeout = newJoiner(&c.Multiline), c.Multiline.Timeout
	}
	return src
}

// Open does nothing: the stream is already open.
func (s *stdinSource) Open(context.Context) error { return nil }

// Read returns the lines available now (waiting for at least one), up to
// ~1024 records or ~256 KiB; stages.ErrEndOfInput after the end of the
// stream; ctx.Err() when ctx is done first.
func (s *stdinSource) Read(ctx context.Context) (*stages.Batch, error) {
	if s.closed {
		return nil, errors.New("stdin source: read after close")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.bb.start()
	for !s.bb.take(&s.sp, s.origin) && s.bb.empty() {
		if s.eof {
			s.bb.takeFinal(&s.sp, s.origin)
			break
		}
		if s.err != nil {
			return nil, s.err
		}
		res, ok, timedOut := s.fill(ctx)
		if timedOut {
			s.bb.addFlushed(&s.sp, s.origin)
			break
		}
		if !ok {
			return nil, ctx.Err()
		}
		s.sp.advance(res.n)
		if res.n > 0 && s.sp.ml != nil {
			s.lastData = s.clk.Now()
		}
		switch {
		case res.err == nil:
		case errors.Is(res.err, io.EOF):
			s.eof = true
		default:
			s.err = fmt.Errorf("stdin source: read: %w", res.err)
		}
	}
	if b := s.bb.finish(); b != nil {
		return b, nil
	}
	return nil, stages.ErrEndOfInput
}

// fill waits for the pending read, starting one first if none is pending.
// ok is false when ctx is done first, timedOut true when a pending
// multiline record's timeout expires first; the read then stays pending.
func (s *stdinSource) fill(ctx context.Context) (res readResult, ok, timedOut bool) {
	if !s.pending {
		dst := s.sp.space(nil)
		s.pending = true
		go func(r io.Reader, results chan<- readResult) {
			n, err := r.Read(dst)
			results <- readResult{n, err}
		}(s.r, s.results)
	}
	var timeout <-chan time.Time
	if s.sp.hasPending() {
		left := s.lastData.Add(s.timeout).Sub(s.clk.Now())
		if left <= 0 {
			select {
			case res = <-s.results: // data that came meanwhile may join the record
				s.pending = false
				return res, true, false
			default:
				return res, false, true
			}
		}
		c, stop := s.clk.After(left)
		defer stop()
		timeout = c
	}
	select {
	case res = <-s.results:
		s.pending = false
		return res, true, false
	case <-timeout:
		return res, false, true
	case <-ctx.Done():
		return res, false, false
	}
}

// Close closes the stream when it is an io.Closer and, except for os.Stdin
// (see stdinSource), waits for a pending read to end. Idempotent.
func (s *stdinSource) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if c, ok := s.r.(io.Closer); ok {
		if cerr := c.Close(); cerr != nil {
			err = fmt.Errorf("stdin source: close: %w", cerr)
		}
		if s.pending && s.r != io.Reader(os.Stdin) {
			<-s.results
			s.pending = false
		}
	}
	return err
}
