package pipetest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/engine"
	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/sinks"
	"github.com/etld/etld/internal/stages/sources"
)

// DefaultTimeout bounds one test when Options.Timeout is 0.
const DefaultTimeout = 30 * time.Second

// Options tune RunFile.
type Options struct {
	Registry *stages.Registry
	// Env looks up the pipeline's ${VAR}s; nil means os.LookupEnv.
	Env config.LookupEnv
	// Timeout bounds each test (a pipeline that does not finish fails
	// it); 0 means DefaultTimeout.
	Timeout time.Duration
}

// Result is the outcome of one test.
type Result struct {
	File *File
	Test *Test
	// Err is set when the pipeline failed or did not finish; Sinks are
	// compared all the same.
	Err   error
	Sinks []SinkResult // one per expected sink, in the test's order
}

// Passed reports whether the pipeline ran and every sink matched.
func (r *Result) Passed() bool {
	if r.Err != nil {
		return false
	}
	for _, s := range r.Sinks {
		if !s.OK {
			return false
		}
	}
	return true
}

// SinkResult compares what one sink got with what the test expects.
type SinkResult struct {
	ID   string
	OK   bool
	Diff []DiffLine
}

// RunFile loads the pipeline a test file names and runs its tests, one
// after the other. It returns no results and the problems (pipeline file
// errors, or ids of the test file the pipeline does not have) when the
// pipeline or the test file is invalid; warnings come with results.
func RunFile(ctx context.Context, f *File, opts Options) ([]Result, config.Diagnostics) {
	src, err := os.ReadFile(f.Pipeline)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, config.Diagnostics{{File: f.Path, Line: f.PipelinePos.Line, Col: f.PipelinePos.Col,
			Msg: fmt.Sprintf("pipeline %s: %v", f.Pipeline, err)}}
	}
	copts := config.Options{Registry: opts.Registry, Env: opts.Env}
	pipe, diags := config.Parse(f.Pipeline, src, copts)
	if pipe == nil {
		return nil, diags
	}
	if ds := Check(f, pipe); len(ds) > 0 {
		return nil, append(diags, ds...)
	}
	timeout := cmp.Or(opts.Timeout, DefaultTimeout)
	out := make([]Result, 0, len(f.Tests))
	for _, t := range f.Tests {
		if ctx.Err() != nil {
			break
		}
		// A fresh config per test: the run replaces its stages'
		// factories.
		pipe, _ := config.Parse(f.Pipeline, src, copts)
		out = append(out, runTest(ctx, f, t, pipe, timeout))
	}
	return out, diags
}

// runTest runs one test on pipe, which it modifies.
func runTest(ctx context.Context, f *File, t *Test, pipe *config.Pipeline, timeout time.Duration) Result {
	res := Result{File: f, Test: t}
	captures := substitute(pipe, t)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := engine.Run(rctx, []*config.Pipeline{pipe}, engine.Options{Logger: zerolog.Nop(), ShutdownTimeout: timeout})
	switch {
	case rctx.Err() != nil && ctx.Err() == nil:
		res.Err = fmt.Errorf("the pipeline did not finish within %v", timeout)
	case err != nil:
		res.Err = err
	}
	for _, e := range t.Expect {
		d, ok := diff(e.Lines, captures[e.ID].lines())
		res.Sinks = append(res.Sinks, SinkResult{ID: e.ID, OK: ok, Diff: d})
	}
	return res
}

// substitute replaces every source of pipe by one that reads the test's
// lines for it (none when the test gives none), and every sink by a
// capture. Workers run one goroutine each, so that each source's records
// keep their order; they are the same records with more goroutines.
func substitute(pipe *config.Pipeline, t *Test) map[string]*capture {
	input := map[string][]string{}
	for _, l := range t.Input {
		input[l.ID] = l.Lines
	}
	srcs := pipe.Sources()
	slices.SortStableFunc(srcs, func(a, b *config.Stage) int {
		return cmp.Or(cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Col, b.Pos.Col))
	})
	order := map[string]int{}
	for i, st := range srcs {
		order[st.ID] = i
		var data []byte
		if lines := input[st.ID]; len(lines) > 0 {
			data = []byte(strings.Join(lines, "\n") + "\n")
		}
		cfg, id := st.Config, st.ID
		fp, ok := cfg.(stages.FieldsProducer)
		fields := ok && fp.ProducesFields()
		st.Finite = true
		st.Factory.NewSource = func(s stages.Settings, _ any) (stages.Source, error) {
			src := sources.NewReaderSource(s, cfg, bytes.NewReader(data), id)
			if fields {
				src = &fieldsSource{Source: src}
			}
			return src, nil
		}
	}
	for _, w := range pipe.Workers() {
		w.Worker.Concurrency = 1
	}
	captures := map[string]*capture{}
	for _, st := range pipe.Sinks() {
		c := &capture{order: order, merge: st.Merge != nil}
		cfg := st.Config
		st.Factory.NewSink = func(stages.Settings, any) (stages.Sink, error) {
			enc, err := sinks.NewLineEncoder(cfg)
			if err != nil {
				return nil, err
			}
			c.enc = enc
			return c, nil
		}
		captures[st.ID] = c
	}
	return captures
}

// fieldsSource stands for a source whose records have fields (journald
// and the like): each test line must be one JSON object, which becomes
// the record's fields; another line is a bad record.
type fieldsSource struct{ stages.Source }

func (s *fieldsSource) Read(ctx context.Context) (*stages.Batch, error) {
	b, err := s.Source.Read(ctx)
	if b == nil {
		return b, err
	}
	kept := b.Records[:0]
	for _, r := range b.Records {
		obj, verr := jsonrec.ValidObject(r.Raw)
		if verr != nil {
			b.Rejects = append(b.Rejects, stages.Reject{Record: r, Err: fmt.Errorf("invalid JSON: %w", verr)})
			continue
		}
		r.SetParsed(obj)
		kept = append(kept, r)
	}
	b.Records = kept
	return b, err
}

// capture is a sink that keeps the lines it would write, each with
// where its record came from.
type capture struct {
	enc   *sinks.LineEncoder
	order map[string]int // source id -> position in the pipeline file
	merge bool
	buf   []byte
	recs  []captured
}

type captured struct {
	src  int   // the source's position; past the last one when unknown
	off  int64 // the record's offset in its source's input
	line string
}

func (c *capture) Open(context.Context) error  { return nil }
func (c *capture) Flush(context.Context) error { return nil }
func (c *capture) Close(context.Context) error { return nil }

func (c *capture) Write(_ context.Context, b *stages.Batch) error {
	for i := range b.Records {
		r := &b.Records[i]
		c.buf = c.enc.AppendLine(c.buf[:0], r)
		k := captured{src: len(c.order), off: r.Offset, line: string(c.buf)}
		if r.Origin != nil {
			if ix, ok := c.order[r.Origin.Source]; ok {
				k.src = ix
			}
		}
		c.recs = append(c.recs, k)
	}
	return nil
}

// lines returns what the sink wrote. An ordered merge's order is the
// engine's; any other sink gets its records source after source, in the
// order of the pipeline file, each source's in input order, so that a
// test's result does not depend on how the goroutines were scheduled.
func (c *capture) lines() []string {
	if c == nil || len(c.recs) == 0 {
		return []string{}
	}
	recs := c.recs
	if !c.merge {
		recs = slices.Clone(recs)
		slices.SortStableFunc(recs, func(a, b captured) int {
			return cmp.Or(cmp.Compare(a.src, b.src), cmp.Compare(a.off, b.off))
		})
	}
	out := make([]string, 0, len(recs)+1)
	if h := c.enc.Header(); h != "" {
		out = append(out, h)
	}
	for _, r := range recs {
		out = append(out, r.line)
	}
	return out
}
