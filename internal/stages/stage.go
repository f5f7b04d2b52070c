package stages

import (
	"context"
	"errors"
	"io"

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
	// Stdin and Stdout are the streams of the stdin source and the stdout
	// sink; nil means the process's (os.Stdin, os.Stdout). Tests and the
	// stagetest suite give their own.
	Stdin  io.Reader
	Stdout io.Writer
	// Watcher is the daemon's shared inotify instance, for stages that
	// watch files; inactive means poll. Nil (tests, embedding): a stage
	// that needs one opens its own.
	Watcher *fswatch.Watcher
	// Own is the set of files the daemon's sinks write, kept current
	// across reloads by the runtime; file sources skip them. Nil: none.
	Own *OwnOutputs
	// Meter gives the stage collectors of its own (see Meter); use
	// Settings.Counter and Settings.Gauge, which work without one.
	Meter Meter
	// RequestCheckpoint asks the runtime for a checkpoint barrier now
	// rather than at the next checkpoint_interval tick; nil outside the
	// runtime. A source that acknowledges on commit (stages.Committer)
	// calls it after Read returned records somebody waits for, so the
	// wait is one barrier round trip. Requests while a checkpoint is on
	// its way are merged into one more checkpoint after it. Safe for
	// concurrent use; it never blocks.
	RequestCheckpoint func()
	_                 struct{}
}

// Source reads records from the outside world.
//
// Lifecycle: the runtime builds a source with its factory's NewSource,
// calls Restore (Stateful sources with a committed checkpoint only), Open
// once, then Read from a single goroutine until Read returns an error,
// then Close. State is called from that same goroutine between two Reads.
// Close must be safe without Open and when called twice.
//
// Cancellation and checkpoints: every Read gets a fresh context derived
// from the pipeline's stop context, and the runtime cancels it when a
// checkpoint barrier (or the park of a reconfiguration) is requested
// while Read runs, and at a graceful stop (it never calls Read with a
// context already done). After such an interruption
// it takes the source's State, injects the barrier downstream and calls
// Read again with a new context: an interrupted Read is routine, not an
// error, and happens about once per checkpoint interval.
type Source interface {
	// Open acquires resources. ctx bounds only the open itself: Open
	// returns promptly (with ctx.Err() or a result) once it is done.
	Open(ctx context.Context) error
	// Read blocks until a batch is ready, ctx is done (returns ctx.Err()),
	// or a finite source is exhausted (returns ErrEndOfInput). A batch may
	// carry Rejects (for example over-long lines) and no Records.
	//
	// Read must not lose what it already pulled: input it took from the
	// outside world (bytes read from a file, a message received) but did
	// not return before ctx was done stays in the source and comes first
	// in the next Read. State covers exactly the batches Read returned, so
	// that input is not in it either. A batch returned together with an
	// error is emitted too, but returning (nil, ctx.Err()) and keeping the
	// records for the next Read is the simpler contract to keep.
	Read(ctx context.Context) (*Batch, error)
	// Close releases resources. It is safe without Open and idempotent;
	// after Close, only State may still be called.
	Close() error
}

// Step is one worker step (parse_json, filter, ...). Process is called
// concurrently by the worker's goroutines, each with its own batch: it edits
// b.Records in place, removing filtered records and moving bad ones to
// b.Rejects. It must not keep references to b, its records or their bytes
// after returning: the next holder of the batch may overwrite them.
// Record.Raw of a record it rewrites must point into memory the batch owns
// (Batch.Own) or that nothing else references.
type Step interface {
	Process(b *Batch)
}

// Sink writes records to one destination. The runtime calls every method
// from one goroutine (the sink's single writer), so output lines are never
// torn or interleaved.
//
// Lifecycle: NewSink, Restore (Stateful sinks with a committed checkpoint
// only, before Open), Open, then Write and Flush any number of times, then
// Close. Close must be safe without Open and when called twice; State may
// be called after Close (the runtime reads the final position of a sink
// whose inputs ended after closing it).
//
// Failures are retried, not skipped: a Write or Flush that returns an
// error is called again with backoff (Write with the same batch) until it
// succeeds or the pipeline is stopped hard, holding the input back
// meanwhile. The exception is a record that can never be written: Write
// returns Permanent(err) with that record first in the trimmed b.Records,
// and the runtime sends it to the dead letter and writes the rest at once
// (see PermanentError). Close is not retried. A sink that must acknowledge
// what it wrote to something outside implements Committer.
type Sink interface {
	Open(ctx context.Context) error
	// Write writes every record of b as one line (Raw plus "\n"). It may
	// buffer; Flush makes everything written so far durable according to
	// the sink's policy.
	//
	// The trim rule: records are accepted in order, and on error Write
	// trims b.Records to exactly the suffix it did not accept (b.Records =
	// b.Records[n:] after accepting n), so that the runtime's retry with
	// the same batch writes every record once. An error that leaves
	// b.Records as it was means nothing was accepted. On success the
	// runtime does not look at b.Records again (it counted them before the
	// call): the sink may leave it as is or empty it.
	//
	// Write must not keep references to b or to its records' bytes after
	// returning: once Write succeeds, the runtime releases the batch and
	// its buffers are reused (see Batch.Release).
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
	// the pipeline file. It runs after Validate.
	PathResolver interface{ ResolvePaths(dir string) }
	// FileChecker checks the files a config names (TLS certificates,
	// credentials) once their paths are resolved, so that a missing or
	// unreadable file is a config error at its option. It runs after
	// ResolvePaths, and only when Validate found nothing wrong. Report
	// FieldErrors like Validate.
	FileChecker interface{ CheckFiles() error }
	// Finiter reports whether a source ends by itself.
	Finiter interface{ Finite() bool }
	// FieldsProducer reports whether a source's records already have
	// fields (Record.SetParsed: journald's JSON objects, syslog with
	// parse: true, ...), so that steps needing fields may follow it
	// without a parsing step. A source that says so must set Parsed on
	// every record it emits.
	FieldsProducer interface{ ProducesFields() bool }
	// OutputPather reports the file a sink writes, for the
	// "two sinks write the same path" check.
	OutputPather interface{ OutputPath() string }
	// InputMatcher reports whether a source reads the file at path
	// (absolute and clean), for the "a source reads a sink's output"
	// check.
	InputMatcher interface{ MatchesInput(path string) bool }
	// UpstreamChecker checks a sink's options against the types of the
	// sources that feed it, directly or through workers (sorted, each
	// once). The loader reports what it returns as warnings, FieldErrors
	// at their option: the pipeline runs, but not as its options promise
	// (a transactional kafka sink with no kafka source upstream).
	UpstreamChecker interface {
		CheckUpstream(sourceTypes []string) error
	}
)

// Drainer is implemented by sources that hold input they accepted from
// the outside and cannot give back: a listener's queued messages (syslog
// has no acknowledgement to make the sender send them again). Without
// it, what such a source holds when it goes away is lost.
//
// When the source is about to go away cleanly (a graceful stop, or a
// reload that replaces or removes it) the runtime calls Drain once, from
// the Read goroutine between two Reads. The source then stops accepting
// input (closes its listeners, stops reading its connections) and its
// following Reads return what it still holds, then ErrEndOfInput. The
// runtime reads it to the end before the barrier that parks it for the
// reload (so the reload's checkpoint covers what was drained) or before
// its edges close at a stop; their ctx is cancelled only at the hard stop.
// A source that gives input back on its own (an HTTP request answered
// 503, a broker redelivering an unacknowledged message) does not need it.
type Drainer interface {
	Drain()
}

// Stateful is implemented by sources and sinks whose position can be
// checkpointed, which makes them exactly-once across restarts (SPEC §3.1).
//
// For a source, State is called from its Read goroutine between two
// Reads, and covers exactly the batches returned so far (see Source.Read:
// input pulled but not returned is not covered). For a sink, it is called
// from its writer goroutine right after a successful Flush, and covers
// exactly what was written so far. Both may also be asked right after
// Open (the start-up checkpoint) and, for sinks, after Close: State must
// work then and describe the final position.
//
// A state is valid JSON, or nil (written as null, and restored as the
// four bytes null). The checkpoint embeds it as it is, without
// compacting it; the conformance suite (stagetest) checks it, and the
// runtime checks it again as it takes it (unless the stage is a
// ValidJSONState): a checkpoint whose state is not valid JSON fails
// rather than be written and then not read back.
//
// Restore is called at most once, before Open, with the state of the last
// committed checkpoint: a source resumes after it; a sink removes what was
// written after it. A fresh instance restored from a State continues
// exactly where the stage that produced it was.
type Stateful interface {
	State() ([]byte, error)
	Restore(state []byte) error
}

// ValidJSONState is a Stateful stage whose State is valid JSON by
// construction: written by an encoder of its own that a test compares
// with encoding/json. The runtime does not scan such a state before a
// checkpoint holds it. The scan is cheap per byte, but a file source
// following 10,000 files has a 1.5 MB state at every checkpoint, and
// scanning it was 6 % of that source's CPU.
type ValidJSONState interface {
	Stateful
	ValidJSONState()
}
