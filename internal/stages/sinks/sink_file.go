package sinks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/rotate"
	"github.com/etld/etld/internal/stages"
)

// Fsync policies of the file sink.
const (
	FsyncCheckpoint = "checkpoint" // fsync in Flush, i.e. at every checkpoint commit
	FsyncBatch      = "batch"      // flush and fsync after every Write
	FsyncNever      = "never"      // hand bytes to the OS, never fsync
)

const (
	defaultFileBuffer = 256 << 10
	maxFileBuffer     = 64 << 20
)

// FileConfig is the config of the file sink.
type FileConfig struct {
	Path       string          `yaml:"path" doc:"output file (required); relative to the pipeline file's directory; parent directories are created"`
	Fsync      string          `yaml:"fsync" doc:"when to fsync: checkpoint (at every checkpoint commit), batch (after every write) or never"`
	Rotate     RotateConfig    `yaml:"rotate" doc:"rotation of the output file into numbered segments (off by default)"`
	BufferSize stages.ByteSize `yaml:"buffer_size" doc:"write buffer size (default 256KiB)"`
	Encoding   string          `yaml:"encoding" doc:"how a record becomes a line: json (the record as is), text (template), logfmt or csv (columns); text and logfmt write a line break in a value as \\n, csv quotes it (RFC 4180)"`
	Template   string          `yaml:"template" doc:"encoding text: the line, with {{field}} for a field's value (empty when missing) and {{_line}} for the original line (as read, also once a step parsed it); non-string values are their JSON text"`
	Columns    []string        `yaml:"columns" doc:"encoding csv (required) or logfmt: the fields to write, in order; logfmt writes every field without it"`
	Header     bool            `yaml:"header" doc:"encoding csv: write the columns as a header line at the start of each new file and rotated segment"`
}

// WritesLineRuns tells the runtime (see stages.LineRunWriter) that the
// sink writes line runs as they are: encoded as json (the line itself)
// and with no size rotation, which needs each line's length.
func (c *FileConfig) WritesLineRuns() bool {
	return (c.Encoding == "" || c.Encoding == EncodingJSON) && c.Rotate.MaxSize == 0
}

func (c *FileConfig) encoding() encodingOptions {
	return encodingOptions{Encoding: c.Encoding, Template: c.Template, Columns: c.Columns, Header: c.Header}
}

// RotateConfig is the `rotate` option of the file sink. The active file is
// always `path`; sealed segments are `path.000001`, `path.000002`, ...
// (plus `.gz` with gzip).
type RotateConfig struct {
	MaxSize stages.ByteSize `yaml:"max_size" doc:"seal the active file before a line would take it over this size; 0 = no size limit"`
	MaxAge  time.Duration   `yaml:"max_age" doc:"seal the active file once it is older than this (checked on write and flush); 0 = no age limit"`
	Keep    int             `yaml:"keep" doc:"number of sealed segments kept, the oldest are removed; 0 = keep all"`
	Gzip    bool            `yaml:"gzip" doc:"gzip sealed segments to <segment>.gz"`
}

// enabled reports whether any rotation trigger is set.
func (r RotateConfig) enabled() bool { return r.MaxSize > 0 || r.MaxAge > 0 }

// NewFileConfig returns a file sink config with its defaults.
func NewFileConfig() *FileConfig {
	return &FileConfig{Fsync: FsyncCheckpoint, BufferSize: defaultFileBuffer, Encoding: EncodingJSON}
}

// Validate checks the options' values, pointing at the faulty options.
func (c *FileConfig) Validate() error {
	var errs []error
	switch {
	case c.Path == "":
		errs = append(errs, stages.FieldErr("path", errors.New("required")))
	case strings.HasSuffix(c.Path, "/") || strings.HasSuffix(c.Path, string(filepath.Separator)) ||
		filepath.Base(c.Path) == "." || filepath.Base(c.Path) == "..":
		errs = append(errs, stages.FieldErr("path", fmt.Errorf("%q names a directory, want a file", c.Path)))
	}
	switch c.Fsync {
	case FsyncCheckpoint, FsyncBatch, FsyncNever:
	default:
		errs = append(errs, stages.FieldErr("fsync", fmt.Errorf("invalid value %q: want checkpoint, batch or never", c.Fsync)))
	}
	if c.BufferSize < 1 || c.BufferSize > maxFileBuffer {
		errs = append(errs, stages.FieldErr("buffer_size", fmt.Errorf("%v out of range: want 1 byte to %v", c.BufferSize, stages.ByteSize(maxFileBuffer))))
	}
	errs = append(errs, c.encoding().validate()...)
	r := c.Rotate
	if r.MaxSize < 0 {
		errs = append(errs, stages.FieldErr("rotate.max_size", errors.New("must not be negative")))
	}
	if r.MaxAge < 0 {
		errs = append(errs, stages.FieldErr("rotate.max_age", errors.New("must not be negative")))
	}
	if r.Keep < 0 {
		errs = append(errs, stages.FieldErr("rotate.keep", errors.New("must not be negative")))
	}
	if !r.enabled() {
		if r.Keep > 0 {
			errs = append(errs, stages.FieldErr("rotate.keep", errors.New("has no effect without rotate.max_size or rotate.max_age")))
		}
		if r.Gzip {
			errs = append(errs, stages.FieldErr("rotate.gzip", errors.New("has no effect without rotate.max_size or rotate.max_age")))
		}
	}
	return errors.Join(errs...)
}

// ResolvePaths makes Path absolute against dir, the pipeline file's
// directory.
func (c *FileConfig) ResolvePaths(dir string) {
	if c.Path != "" && !filepath.IsAbs(c.Path) {
		c.Path = filepath.Join(dir, c.Path)
	}
}

// OutputPath is the file the sink writes.
func (c *FileConfig) OutputPath() string { return c.Path }

// FileSink appends records as lines to a file, with an fsync policy and
// optional rotation (see RotateConfig and package rotate for the layout).
//
// All methods but Active are called from the sink's single goroutine.
//
// Errors and retries: a failed Write leaves the sink consistent for a
// retry of the same batch. Records are accepted in order; on error,
// b.Records is trimmed to the records not accepted, so retrying Write(ctx,
// b) writes each record exactly once. Accepted lines are never lost by a
// failure: they stay in the buffer until the file takes them, and a write
// that fails halfway is truncated back to the last known-good size of the
// active file (the file never holds a partial line), see rotate.File.Write.
// A failed Flush can likewise be retried.
type FileSink struct {
	cfg    FileConfig
	log    zerolog.Logger
	file   *rotate.File
	lw     *lineWriter
	header []byte // encoding csv with header: true: the header line
	closed bool
	opts   fileOptions
	// direct counts the bytes written straight from the batches'
	// buffers (see writeSpans).
	direct prometheus.Counter
}

// fileOptions are what a file sink takes from outside besides its config;
// the zero value is the real thing (tests pass fakes to newFileSink).
type fileOptions struct {
	now  func() time.Time     // the clock for max_age (nil: time.Now)
	sync func(*os.File) error // fsync (nil: (*os.File).Sync)
}

// NewFileSink builds a file sink from a validated, path-resolved config.
// It does no I/O.
func NewFileSink(set stages.Settings, cfg *FileConfig) *FileSink {
	return newFileSink(set, cfg, fileOptions{})
}

// newFileSink is NewFileSink with a clock and an fsync of the caller's.
func newFileSink(set stages.Settings, cfg *FileConfig, opts fileOptions) *FileSink {
	return &FileSink{cfg: *cfg, log: set.Logger, opts: opts,
		direct: set.Counter("etld_sink_direct_bytes_total", "Bytes a file sink wrote straight from the memory its input read them into, without copying them (the passthrough path: no step rewrote the lines, encoding json, no rotate.max_size); part of etld_sink_bytes_written_total.")}
}

// Open creates the parent directories and opens the file for appending
// (see rotate.Open). ctx is not used: opening a local file is not
// cancellable.
func (s *FileSink) Open(context.Context) error {
	if s.closed {
		return fmt.Errorf("open %s: sink is closed", s.cfg.Path)
	}
	if s.file != nil {
		return nil
	}
	enc, err := newEncoder(s.cfg.encoding())
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	f, err := rotate.Open(rotate.Options{
		Path:   s.cfg.Path,
		Keep:   s.cfg.Rotate.Keep,
		Gzip:   s.cfg.Rotate.Gzip,
		NoSync: s.cfg.Fsync == FsyncNever,
		Now:    s.opts.now,
		Sync:   s.opts.sync,
		OnError: func(err error) {
			s.log.Warn().Err(err).Str("path", s.cfg.Path).Msg("file sink housekeeping failed; retrying at the next rotation")
		},
	})
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	s.file = f
	s.lw = newLineWriter(f, int(s.cfg.BufferSize), enc)
	if enc != nil {
		s.header = enc.header
	}
	return nil
}

// Active returns the active segment (path, future sealed number and size
// in bytes after the last flush), for checkpoints. After Flush returns nil,
// Size covers every record written so far unless a rotation sealed them
// (then they are in sealed segments, whose numbers are below Seq). It is
// safe to call from any goroutine, and returns the zero Segment before
// Open.
func (s *FileSink) Active() rotate.Segment {
	if s.file == nil {
		return rotate.Segment{}
	}
	return s.file.Active()
}

// errorf adds "op path: " to err unless it already names the file (as the
// *os.PathError of a failed write does: "write /out/x.jsonl: no space left
// on device").
func (s *FileSink) errorf(op string, err error) error {
	if strings.Contains(err.Error(), s.cfg.Path) {
		return err
	}
	return fmt.Errorf("%s %s: %w", op, s.cfg.Path, err)
}

// Write writes every record of b as one line (Raw + "\n"), rotating the
// file before a line that would take it over rotate.max_size and before
// writing to a segment older than rotate.max_age. With fsync: batch, the
// lines are flushed and fsynced before Write returns. See FileSink for the
// error contract.
func (s *FileSink) Write(_ context.Context, b *stages.Batch) error {
	if s.file == nil || s.closed {
		return fmt.Errorf("write %s: sink is not open", s.cfg.Path)
	}
	done := 0
	var err error
	if b.LineRuns() > 0 && !s.spans() {
		b.SplitRuns() // encoded, or rotated by size: line by line
	}
	if b.LineRuns() > 0 {
		err = s.writeRuns(b)
	} else {
		err = s.write(b, &done)
	}
	if err != nil {
		b.Records = b.Records[done:]
		return err
	}
	if s.cfg.Fsync == FsyncBatch {
		if err := s.flushSync(); err != nil {
			// Every record was accepted (they stay buffered): a retry of
			// the emptied batch only retries the flush and fsync.
			b.Records = b.Records[len(b.Records):]
			return err
		}
	}
	return nil
}

// WritesLineRuns reports that Write takes batches of line runs (see
// stages.LineRunWriter): it writes their runs as they are, or splits
// them first when it encodes or rotates by size.
func (s *FileSink) WritesLineRuns() bool { return true }

// spans reports whether records go to the file as Raw plus newline with
// no size limit: runs of them can be written as they are in memory.
func (s *FileSink) spans() bool { return s.cfg.WritesLineRuns() }

// writeRuns writes the runs of a batch of line runs (see
// stages.AddLines) in order, each removed from b once accepted, with
// writeSpans's choice: a large run straight to the file, a small one
// through the buffer. On error b holds the runs not accepted.
func (s *FileSink) writeRuns(b *stages.Batch) error {
	if err := s.rotateIfOld(); err != nil {
		return err
	}
	for b.LineRuns() > 0 {
		lines, _ := b.LineRun(0)
		if len(lines) >= s.lw.size/directMin {
			if err := s.lw.writeDirect(lines); err != nil {
				return s.errorf("write", err)
			}
			s.direct.Add(float64(len(lines)))
		} else {
			if s.lw.buffered()+int64(len(lines)) > int64(s.lw.size) {
				if err := s.lw.flush(); err != nil {
					return s.errorf("write", err)
				}
			}
			s.lw.writeRaw(lines)
		}
		b.DropLineRuns(1)
	}
	return nil
}

func (s *FileSink) write(b *stages.Batch, done *int) error {
	if err := s.rotateIfOld(); err != nil {
		return err
	}
	recs := b.Records
	if s.spans() {
		n, err := s.writeSpans(b, *done)
		*done += n
		if err != nil {
			return s.errorf("write", err)
		}
		return nil
	}
	maxSize := int64(s.cfg.Rotate.MaxSize)
	for *done < len(recs) {
		used := s.file.Size() + s.lw.buffered()
		fresh := used == 0 // no line in this segment yet
		if fresh && s.header != nil {
			// The header starts every segment: a new file, a rotated
			// one, or one a restart truncated back to empty (a header
			// that was committed is never truncated away, so it is
			// never written twice).
			s.lw.writeRaw(s.header)
			used = s.lw.buffered()
		}
		room := int64(-1)
		if maxSize > 0 {
			room = max(0, maxSize-used) // an existing file may exceed a lowered max_size
		}
		n, err := s.lw.writeLines(recs[*done:], room)
		*done += n
		if err == nil && n == 0 && fresh {
			// A line over max_size goes into a segment alone.
			n, err = s.lw.writeLines(recs[*done:*done+1], -1)
			*done += n
		}
		if err != nil {
			return s.errorf("write", err)
		}
		if *done < len(recs) {
			if err := s.rotate(); err != nil {
				return err
			}
		}
	}
	return nil
}

// directMin is the least a run of lines must weigh, as a fraction of
// the buffer size, to be written without being copied into the buffer:
// smaller ones are gathered into fewer, larger writes.
const directMin = 4 // buffer_size / directMin

// writeSpans writes the records from b.Records[i:] as lines (Raw plus
// newline, no size limit, no header: encoding json) and returns how many
// it accepted, with lineWriter.writeLines's error contract. Runs of
// records that are in memory as they will be in the file (see
// stages.Batch.Span: lines a source read and nothing rewrote) go to the
// file as they are, one write each, without a copy; the others go
// through the buffer.
func (s *FileSink) writeSpans(b *stages.Batch, i int) (int, error) {
	recs, done, missed := b.Records, i, false
	for done < len(recs) {
		lines, n := b.Span(done)
		if n > 0 && len(lines) >= s.lw.size/directMin {
			if err := s.lw.writeDirect(lines); err != nil {
				return done - i, err
			}
			s.direct.Add(float64(len(lines)))
			done, missed = done+n, false
			continue
		}
		// Through the buffer: a short run, or a record out of place.
		m := n
		if n == 0 {
			m = 1
			if missed {
				// Two records in a row out of place: the batch is not
				// made of runs (a step rewrote it); stop looking.
				m = len(recs) - done
			}
		}
		missed = n == 0
		k, err := s.lw.writeLines(recs[done:done+m], -1)
		done += k
		if err != nil {
			return done - i, err
		}
	}
	return done - i, nil
}

// rotateIfOld seals a non-empty segment older than rotate.max_age.
func (s *FileSink) rotateIfOld() error {
	if s.cfg.Rotate.MaxAge <= 0 || s.file.Size()+s.lw.buffered() == 0 || s.file.Age() < s.cfg.Rotate.MaxAge {
		return nil
	}
	return s.rotate()
}

// rotate flushes the buffer and seals the active segment (rotate.File
// fsyncs it unless fsync is never).
func (s *FileSink) rotate() error {
	if err := s.lw.flush(); err != nil {
		return s.errorf("write", err)
	}
	if err := s.file.Rotate(); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	return nil
}

func (s *FileSink) flushSync() error {
	if err := s.lw.flush(); err != nil {
		return s.errorf("write", err)
	}
	if s.cfg.Fsync == FsyncNever {
		return nil
	}
	return s.file.Sync()
}

// Flush hands the buffered lines to the OS, seals the segment if it is
// older than rotate.max_age, and fsyncs the active file unless fsync is
// never. After it returns nil, Active().Size counts every line written.
func (s *FileSink) Flush(context.Context) error {
	if s.file == nil || s.closed {
		return nil
	}
	if err := s.rotateIfOld(); err != nil {
		return err
	}
	// An output deleted or moved away (or its directory removed) keeps
	// accepting writes into the unlinked file: notice it at every flush,
	// before the buffer goes out, and write to a fresh file at the
	// configured path instead. (Full buffers written since the last flush
	// went to the vanished file.)
	before := s.file.Size()
	reattached, err := s.file.Reattach()
	if reattached && err == nil && s.header != nil && before > 0 && s.file.Size() == 0 && s.lw.buffered() > 0 {
		s.lw.prependRaw(s.header) // the buffered lines now start a new file
	}
	if reattached && err == nil {
		s.log.Warn().Str("path", s.cfg.Path).Msg("output file vanished (deleted or moved); writing to a new file at its path")
	}
	if err != nil {
		return s.errorf("reopen", err)
	}
	return s.flushSync()
}

// Close flushes, fsyncs (unless fsync is never) and closes the file. It is
// safe without Open and idempotent; after a failed flush it still closes
// the file and reports the error, and lines still buffered are lost (the
// checkpoint protocol re-reads them from the sources).
func (s *FileSink) Close(context.Context) error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.file == nil {
		return nil
	}
	err := s.flushSync()
	if cerr := s.file.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	s.lw = nil
	return err
}

func init() {
	register(stages.Factory{
		Kind:      stages.KindSink,
		Type:      "file",
		Doc:       "Appends every record as one line (JSON, text, logfmt or CSV) to a file, with an fsync policy and optional size/age rotation, retention and gzip.",
		NewConfig: func() any { return NewFileConfig() },
		NewSink: func(set stages.Settings, cfg any) (stages.Sink, error) {
			c, ok := cfg.(*FileConfig)
			if !ok {
				return nil, fmt.Errorf("file sink: config is %T, want *FileConfig", cfg)
			}
			return NewFileSink(set, c), nil
		},
	})
}
