package stages

import (
	"context"
	"errors"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/fswatch"
)

// ErrEndOfInput is returned by Source.Read when a finite source has
// delivered everything: the runtime drains the source's downstream and
// marks the source finished.
var ErrEndOfInput = errors.New("end of input")

// Settings are injected by the runtime, never written by users.
type Settings struct {
	Pipeline string // pipeline name (file name without extension)
	ID       string // stage id
	Logger   zerolog.Logger
	// Watcher is the daemon's shared inotify instance, for stages that
	// watch files; inactive means poll. Nil (tests, embedding): a stage
	// that needs one opens its own.
	Watcher *fswatch.Watcher
	_       struct{}
}

// Source reads records from the outside world.
//
// The runtime calls Open once, then Read from a single goroutine until it
// returns an error, then Close. Close is safe without Open and idempotent.
type Source interface {
	// Open acquires resources. ctx bounds only the open itself.
	Open(ctx context.Context) error
	// Read blocks until a batch is ready, ctx is done (returns ctx.Err()),
	// or a finite source is exhausted (returns ErrEndOfInput). A batch may
	// carry Rejects (for example over-long lines) and no Records.
	Read(ctx context.Context) (*Batch, error)
	Close() error
}

// Step is one worker step (parse_json, filter, ...). Process is called
// concurrently by the worker's goroutines, each with its own batch: it edits
// b.Records in place, removing filtered records and moving bad ones to
// b.Rejects. It must not keep references to b after returning.
type Step interface {
	Process(b *Batch)
}

// Sink writes records to one destination. The runtime calls every method
// from one goroutine (the sink's single writer), so output lines are never
// torn or interleaved.
type Sink interface {
	Open(ctx context.Context) error
	// Write writes every record of b as one line (Raw plus "\n"). It may
	// buffer; Flush makes everything written so far durable according to
	// the sink's policy. It must not keep references to b or to its
	// records' bytes after returning: once Write succeeds, the runtime
	// releases the batch and its buffers are reused (see Batch.Release).
	Write(ctx context.Context, b *Batch) error
	Flush(ctx context.Context) error
	// Close flushes and releases resources. Safe without Open; idempotent.
	Close(ctx context.Context) error
}

// FieldError is what a stage config's Validate returns to point at one of
// its options: the config loader reports it at the position of that option
// (Field "" means the stage or step itself).
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Err.Error()
	}
	return e.Field + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

// FieldErr is a shorthand for &FieldError{field, err}.
func FieldErr(field string, err error) error { return &FieldError{Field: field, Err: err} }

// Optional interfaces a stage config (the value returned by NewConfig) may
// implement. The config loader calls them after decoding.
type (
	// Validator checks option values and ranges, and compiles what can be
	// compiled at load time (expressions). Return FieldErrors, joined with
	// errors.Join, to point at options.
	Validator interface{ Validate() error }
	// PathResolver makes relative paths absolute against the directory of
	// the pipeline file.
	PathResolver interface{ ResolvePaths(dir string) }
	// Finiter reports whether a source ends by itself.
	Finiter interface{ Finite() bool }
	// OutputPather reports the file a sink writes, for the
	// "two sinks write the same path" check.
	OutputPather interface{ OutputPath() string }
)

// Stateful is implemented by sources and sinks whose position can be
// checkpointed, which makes them exactly-once across restarts (SPEC §3.1).
//
// For a source, State is called from its Read goroutine between two
// Reads, and covers exactly the batches returned so far. For a sink, it is
// called from its writer goroutine right after a successful Flush, and
// covers exactly what was written so far. Restore is called before Open
// with the state of the last committed checkpoint: a source resumes after
// it; a sink removes what was written after it.
type Stateful interface {
	State() ([]byte, error)
	Restore(state []byte) error
}
