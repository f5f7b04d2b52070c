package sinks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/etld/etld/internal/stages"
)

// stdoutBufferSize is the stdout sink's buffer: large enough to write in
// few syscalls, small enough for interactive use with frequent flushes.
const stdoutBufferSize = 64 << 10

// StdoutConfig is the config of the stdout sink.
type StdoutConfig struct {
	Encoding string   `yaml:"encoding" doc:"how a record becomes a line: json (the record as is), text (template), logfmt or csv (columns); text and logfmt write a line break in a value as \\n, csv quotes it (RFC 4180)"`
	Template string   `yaml:"template" doc:"encoding text: the line, with {{field}} for a field's value (empty when missing) and {{_line}} for the original line (as read, also once a step parsed it); non-string values are their JSON text"`
	Columns  []string `yaml:"columns" doc:"encoding csv (required) or logfmt: the fields to write, in order; logfmt writes every field without it"`
	Header   bool     `yaml:"header" doc:"encoding csv: write the columns as a header line before the first record"`
}

// Validate checks the encoding options, pointing at the faulty ones.
func (c *StdoutConfig) Validate() error {
	return errors.Join(c.encoding().validate()...)
}

func (c *StdoutConfig) encoding() encodingOptions {
	return encodingOptions{Encoding: c.Encoding, Template: c.Template, Columns: c.Columns, Header: c.Header}
}

// StdoutSink writes every record as one line to the process's standard
// output, through a buffer flushed by Flush and Close (and when full).
// Like every sink, it is used from a single goroutine.
type StdoutSink struct {
	out    io.Writer // Settings.Stdout, else os.Stdout
	enc    *encoder  // nil: json
	lw     *lineWriter
	header []byte // the CSV header, until it is written
	closed bool
}

// Open prepares the buffer. ctx is unused: opening does no I/O.
func (s *StdoutSink) Open(context.Context) error {
	if s.closed {
		return errors.New("stdout sink: open after close")
	}
	if s.lw == nil {
		s.lw = newLineWriter(s.out, stdoutBufferSize, s.enc)
	}
	return nil
}

// Write buffers the batch's records as lines. On error, b.Records is
// trimmed to the records that were not accepted, so retrying Write with the
// same batch writes each record exactly once.
func (s *StdoutSink) Write(_ context.Context, b *stages.Batch) error {
	if s.lw == nil || s.closed {
		return errors.New("write stdout: sink is not open")
	}
	if s.header != nil && len(b.Records) > 0 {
		s.lw.writeRaw(s.header)
		s.header = nil
	}
	n, err := s.lw.writeLines(b.Records, -1)
	if err != nil {
		b.Records = b.Records[n:]
		return fmt.Errorf("write stdout: %w", err)
	}
	return nil
}

// Flush writes the buffered lines to standard output.
func (s *StdoutSink) Flush(context.Context) error {
	if s.lw == nil {
		return nil
	}
	if err := s.lw.flush(); err != nil {
		return fmt.Errorf("write stdout: %w", err)
	}
	return nil
}

// Close flushes the buffer. It does not close standard output. It is safe
// without Open and idempotent; a failed flush is reported once and the
// lines still buffered are dropped.
func (s *StdoutSink) Close(ctx context.Context) error {
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.Flush(ctx)
	s.lw = nil
	return err
}

func init() {
	register(stages.Factory{
		Kind:      stages.KindSink,
		Type:      "stdout",
		Doc:       "Writes every record as one line to standard output, as JSON, text, logfmt or CSV.",
		NewConfig: func() any { return &StdoutConfig{Encoding: EncodingJSON} },
		NewSink: func(set stages.Settings, cfg any) (stages.Sink, error) {
			c, ok := cfg.(*StdoutConfig)
			if !ok {
				return nil, fmt.Errorf("stdout sink: config is %T, want *StdoutConfig", cfg)
			}
			enc, err := newEncoder(c.encoding())
			if err != nil {
				return nil, fmt.Errorf("stdout sink: %w", err)
			}
			out := set.Stdout
			if out == nil {
				out = os.Stdout
			}
			s := &StdoutSink{out: out, enc: enc}
			if enc != nil {
				s.header = enc.header
			}
			return s, nil
		},
	})
}
