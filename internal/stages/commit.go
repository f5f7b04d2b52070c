package stages

import "context"

// Committer is implemented by sources and sinks that must acknowledge
// something outside once their records are safe: an HTTP response, a
// broker ack, an offset or a transaction commit. Only stages that are
// also Stateful are notified; the notification names the state (see
// Stateful) that a checkpoint made durable.
//
// The contract:
//
//   - Committed(ctx, state) is called after the checkpoint holding state
//     was durably saved. state is exactly the bytes State returned for
//     that checkpoint. It belongs to the runtime: read it, keep it if
//     needed, never modify it.
//   - It is called on the stage's own goroutine, never concurrently with
//     its other methods: for a source between two Reads (a Read in
//     progress is interrupted by cancelling its ctx, as at a checkpoint
//     barrier, so the source must not lose what it already pulled; see
//     Source.Read), for a sink between two Writes or Flushes.
//   - Calls come in checkpoint order, at most once per checkpoint, and
//     never for a state that was not committed. When several
//     checkpoints were saved before the stage got to it, only the newest
//     is delivered: a state covers everything before it. A checkpoint
//     whose state for the stage equals the one the stage last got (by
//     Committed or Restore) is not delivered either.
//   - From the start to the Close of the stage. A state committed before
//     it started (the start-up checkpoint) is not delivered. After a
//     restart Restore gets the last committed state, and Committed is not
//     called for it: a stage that acks at least once should ack in
//     Restore (or after its Open) what the restored state covers; brokers
//     treat a repeated ack as harmless.
//   - The end: a Committer that stops cleanly (its input ended, a
//     graceful stop, a reload that removes or replaces it) is not closed
//     at once. A source stops reading; a sink is flushed (Close is not
//     called yet, so State after Flush must be what it would be after
//     Close). Its state then is final: once a saved checkpoint holds it
//     (the final checkpoint of a graceful stop, the next checkpoint while
//     the rest of the pipeline runs, the quiescent checkpoint of a
//     reload), Committed gets it, then Close is called, on the same
//     goroutine. A reload closes it without waiting for a newer
//     checkpoint (it gets what the reload's checkpoint holds for it). At
//     a hard stop (shutdown timeout), when the final checkpoint cannot be
//     saved, or when the pipeline fails, it gets what was committed
//     (nothing at a hard stop) and is closed: a state not committed is
//     never announced, and the outside redelivers what was not acked.
//   - ctx is cancelled at the hard stop only. Committed holds up the
//     stage's reads or writes, and its end the pipeline's stop, so it
//     should not block for long.
//   - An error is logged and counted in etld_stage_errors_total; the
//     pipeline goes on and the same state is not delivered again. The
//     checkpoint stays committed (the records are safe in the sinks), and
//     the next checkpoint's Committed covers the same ground: an
//     acknowledgement that failed is retried by acknowledging a newer
//     state, or by the outside redelivering what was never acked.
type Committer interface {
	Committed(ctx context.Context, state []byte) error
}
