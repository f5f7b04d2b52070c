package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"sync"
	"time"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/state"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// checkpointer commits source and sink positions together (SPEC §3.1).
//
// Every checkpoint interval it asks each source for barrier e. A source
// injects the barrier between two reads, together with its position at
// that point. Workers and sinks align the barrier across their inputs, so
// a sink sees it exactly after every record read before it and before any
// record read after it; the sink flushes (and fsyncs, per policy) and
// reports its output position. Once every running sink has done so, the
// positions of epoch e form a consistent cut: they are saved atomically in
// the state dir by a committer goroutine, off the data path. After a
// crash, sinks truncate their output to the committed positions and
// sources resume from theirs, so every record is written exactly once.
// Once a cut is saved, each running stage that is a stages.Committer is
// told its state in it, on its own goroutine (see commitBox).
type checkpointer struct {
	pipeline string
	interval time.Duration
	store    *state.Store // nil: no persistence
	log      zerolog.Logger
	age      prometheus.Gauge
	failures prometheus.Counter
	done     prometheus.Counter // completed checkpoints, written or not

	// saveMu makes saves one at a time, in the order their cuts were
	// taken, so that an older checkpoint never overwrites a newer one, and
	// a saveQueued that finds nothing queued returns only once the save in
	// progress (perhaps of its own cut) is over.
	saveMu sync.Mutex
	// saved is the checkpoint on disk (saved, or loaded at start; under
	// saveMu): a cut whose stage states equal its own is not written
	// again, so an idle pipeline does not rewrite and fsync its state
	// file every interval (hundreds of idle pipelines would keep the
	// disk busy for nothing).
	saved *state.Checkpoint

	mu          sync.Mutex
	liveSinks   map[string]bool // running sinks: each must ack an epoch
	pending     map[uint64]*cut // by epoch
	sourceFinal map[string][]byte
	sinkFinal   map[string][]byte
	mergeFinal  map[string][]byte
	merging     map[string]bool  // sinks that merge now; nil: keep every merge state
	committed   state.Checkpoint // the newest complete cut, saved or being saved
	completed   time.Time
	toSave      *state.Checkpoint   // handed to the committer
	seq         uint64              // number of cuts completed: orders the saves
	toSaveSeq   uint64              // seq of toSave
	boxes       map[*commitBox]bool // Committer stages running, see subscribe
	wake        chan struct{}
	requested   uint64 // newest epoch requested
	settled     uint64 // newest epoch completed (committed, or void when broken)
	requestedAt time.Time
	stallLogged bool // a stall was logged, while settled was stallAt
	stallAt     uint64
	frozen      bool // a sink failed: commit nothing more
	paused      bool // a reconfiguration holds the sources: no new epochs
	reached     []epochWaiter

	soon  chan struct{} // a stage asked for a checkpoint now (requestSoon)
	again bool          // one was asked while another was on its way (mu)
}

// cut collects the states reported for one epoch.
type cut struct {
	sources, sinks map[string][]byte
	merges         map[string][]byte // ordered merges' states, by sink id
	acked          map[string]bool   // sinks that flushed this epoch
	broken         bool              // a stage could not report its state: never commit
}

func (c *checkpointer) init(p *pipeline, mx *Metrics, store *state.Store) {
	c.pipeline = p.cfg.Name
	c.interval = p.cfg.CheckpointInterval
	if c.interval <= 0 {
		c.interval = time.Second
	}
	c.store = store
	c.log = p.log
	c.age = mx.checkpointAge.WithLabelValues(p.cfg.Name)
	c.failures = mx.checkpointFailures.WithLabelValues(p.cfg.Name)
	c.done = mx.checkpoints.WithLabelValues(p.cfg.Name)
	c.pending = map[uint64]*cut{}
	c.liveSinks = map[string]bool{}
	c.sourceFinal = map[string][]byte{}
	c.sinkFinal = map[string][]byte{}
	c.mergeFinal = map[string][]byte{}
	c.committed = state.Checkpoint{Pipeline: p.cfg.Name,
		Sources: map[string]json.RawMessage{}, Sinks: map[string]json.RawMessage{}}
	c.wake = make(chan struct{}, 1)
	c.soon = make(chan struct{}, 1)
}

// requestSoon asks for a checkpoint barrier without waiting for the next
// tick (stages.Settings.RequestCheckpoint). It never blocks.
func (c *checkpointer) requestSoon() {
	select {
	case c.soon <- struct{}{}:
	default:
	}
}

// load returns the committed checkpoint, or nil, and makes it the base
// that new cuts update.
func (c *checkpointer) load() (*state.Checkpoint, error) {
	if c.store == nil {
		return nil, nil
	}
	c.store.RemoveLeftovers(c.pipeline)
	cp, err := c.store.Load(c.pipeline)
	if err != nil || cp == nil {
		return nil, err
	}
	c.committed = *cp
	c.committed.Pipeline = c.pipeline // a renamed state file keeps its name
	if cp.Pipeline == c.pipeline && cp.Version == state.Version {
		c.saved = ownStates(cp)
	}
	if c.committed.Sources == nil {
		c.committed.Sources = map[string]json.RawMessage{}
	}
	if c.committed.Sinks == nil {
		c.committed.Sinks = map[string]json.RawMessage{}
	}
	return cp, nil
}

// current is the newest epoch requested or committed: a source starting
// now injects the epochs after it.
func (c *checkpointer) current() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.requested, c.committed.Epoch)
}

// requestNow requests a barrier from every source unless one is on its
// way or a reconfiguration holds the sources; then it is requested once
// that one settled (see loop), or at the next tick.
func (c *checkpointer) requestNow(sources func() []*sourceRunner) {
	c.mu.Lock()
	if c.paused || c.requested > c.settled {
		c.again = true
		c.mu.Unlock()
		return
	}
	c.requestLocked(sources)
}

// requestLocked requests the next epoch from every source. Called with
// mu held, it releases it.
func (c *checkpointer) requestLocked(sources func() []*sourceRunner) {
	c.again = false
	c.requested = max(c.requested, c.committed.Epoch) + 1
	c.requestedAt = time.Now()
	epoch := c.requested
	c.mu.Unlock()
	for _, s := range sources() {
		s.requestBarrier(epoch)
	}
}

// loop requests a barrier from every source each interval and saves
// completed cuts, until ctx is done. sources returns the running sources.
func (c *checkpointer) loop(ctx context.Context, sources func() []*sourceRunner) {
	c.mu.Lock()
	c.completed = time.Now()
	c.mu.Unlock()
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.saveQueued()
			return
		case <-c.wake:
			c.saveQueued()
			c.mu.Lock()
			again := c.again && c.requested <= c.settled
			c.mu.Unlock()
			if again {
				c.requestNow(sources)
			}
		case <-c.soon:
			c.requestNow(sources)
		case <-t.C:
			c.mu.Lock()
			// The age grows on every tick, also while a checkpoint is
			// stuck (a sink retrying on a full disk): that is when the
			// alert on it must fire.
			c.age.Set(time.Since(c.completed).Seconds())
			if c.paused {
				c.mu.Unlock()
				continue
			}
			if c.requested > c.settled {
				// One checkpoint at a time: while the previous barrier is
				// still on its way, a new one would only interrupt the
				// sources again, and when a round trip takes longer than
				// the interval the sources would do nothing but inject
				// barriers. Should one never settle, a newer one, once
				// complete, supersedes it: ask again after a while.
				if time.Since(c.requestedAt) < max(10*c.interval, time.Second) {
					c.mu.Unlock()
					continue
				}
				if !c.stallLogged || c.stallAt != c.settled { // once per stall
					c.stallLogged, c.stallAt = true, c.settled
					c.log.Warn().Uint64("epoch", c.requested).Dur("after", time.Since(c.requestedAt)).
						Msg("checkpoint barrier not completed yet (a sink retrying?); requesting a newer one")
				}
			}
			c.requestLocked(sources)
		}
	}
}

func (c *checkpointer) cut(epoch uint64) *cut {
	k := c.pending[epoch]
	if k == nil {
		k = &cut{sources: map[string][]byte{}, sinks: map[string][]byte{}, merges: map[string][]byte{}, acked: map[string]bool{}}
		c.pending[epoch] = k
	}
	return k
}

// sourceBarrier records a source's state at barrier epoch; err means a
// stateful source could not tell its state, which voids the epoch.
func (c *checkpointer) sourceBarrier(id string, epoch uint64, st []byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.record(func(k *cut) map[string][]byte { return k.sources }, "source", id, epoch, st, err)
}

// record stores a stage's state in the cut of epoch (returned; nil when
// the epoch is already settled). Called with mu held.
func (c *checkpointer) record(states func(*cut) map[string][]byte, kind, id string, epoch uint64, st []byte, err error) *cut {
	if epoch <= c.committed.Epoch {
		return nil
	}
	k := c.cut(epoch)
	if err != nil {
		k.broken = true
		c.log.Error().Str("stage", id).Err(err).Uint64("epoch", epoch).Msg(kind + " state unavailable; skipping this checkpoint")
	}
	if st != nil {
		states(k)[id] = st
	}
	return k
}

// sourceEnded records the final state of a source that stopped reading.
func (c *checkpointer) sourceEnded(id string, st []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st != nil {
		c.sourceFinal[id] = st
	}
}

// sinkAck records that a sink has flushed everything before barrier epoch,
// with its state then (and that of its ordered merge, or nil); the last
// running sink to do so completes the cut.
func (c *checkpointer) sinkAck(id string, epoch uint64, st, merge []byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.record(func(k *cut) map[string][]byte { return k.sinks }, "sink", id, epoch, st, err)
	if k == nil {
		return
	}
	if merge != nil {
		k.merges[id] = merge
	}
	k.acked[id] = true
	if c.allAcked(k) {
		c.complete(epoch, k)
	}
}

// allAcked reports whether every running sink acked the cut. Counting
// acks is not enough: a sink that acked and then ended would be counted
// twice. Called with mu held.
func (c *checkpointer) allAcked(k *cut) bool {
	for id := range c.liveSinks {
		if !k.acked[id] {
			return false
		}
	}
	return true
}

// sinkEnded records the final state of a sink that closed cleanly (st nil
// when it is not stateful or failed; merge nil without an ordered merge,
// else what the merge holds, handed over or nothing): it acks no more
// barriers.
func (c *checkpointer) sinkEnded(id string, st, merge []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.liveSinks, id)
	if st != nil {
		c.sinkFinal[id] = st
	}
	if merge != nil {
		c.mergeFinal[id] = merge
	}
	// Cuts that only this sink was holding back are complete now.
	var newest uint64
	for e, k := range c.pending {
		if c.allAcked(k) && e > newest {
			newest = e
		}
	}
	if newest > 0 {
		c.complete(newest, c.pending[newest])
	}
}

// complete turns the cut of epoch into the committed checkpoint and queues
// it for saving. Called with mu held.
//
// A source that has not reported epoch reported nothing after it either;
// if it ended, its final state is consistent with the cut (its records
// all reached the sinks before the barrier was released downstream), else
// it feeds no running sink and its older state stands. Sinks likewise.
func (c *checkpointer) complete(epoch uint64, k *cut) {
	c.settled = max(c.settled, epoch)
	for e := range c.pending {
		if e <= epoch {
			delete(c.pending, e)
		}
	}
	if c.frozen || (k != nil && k.broken) {
		return
	}
	next := c.committed
	next.Epoch = epoch
	next.Time = time.Now().UTC()
	next.Sources = maps.Clone(c.committed.Sources)
	next.Sinks = maps.Clone(c.committed.Sinks)
	next.Merge = maps.Clone(c.committed.Merge)
	if next.Merge == nil {
		next.Merge = map[string]json.RawMessage{}
	}
	for id, st := range c.mergeFinal {
		next.Merge[id] = st
	}
	for id, st := range c.sourceFinal {
		next.Sources[id] = st
	}
	for id, st := range c.sinkFinal {
		next.Sinks[id] = st
	}
	if k != nil {
		for id, st := range k.sources {
			next.Sources[id] = st
		}
		for id, st := range k.sinks {
			next.Sinks[id] = st
		}
		for id, st := range k.merges {
			next.Merge[id] = st
		}
	}
	for id := range next.Merge {
		if c.merging != nil && !c.merging[id] {
			delete(next.Merge, id)
		}
	}
	if len(next.Merge) == 0 {
		next.Merge = nil
	}
	c.committed = next
	c.seq++
	c.toSave, c.toSaveSeq = &next, c.seq
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// saveQueued saves the newest completed cut, if any. A failure is logged
// and counted; the previous checkpoint stands. Waiters for its epoch (see
// pause) are released once the save is over, and after the Committer
// stages were told: a stage that a reconfiguration stops then has its
// state in the quiescent checkpoint waiting for it.
func (c *checkpointer) saveQueued() error {
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	c.mu.Lock()
	cp, seq := c.toSave, c.toSaveSeq
	c.toSave = nil
	c.mu.Unlock()
	if cp == nil {
		return nil
	}
	defer c.settle(cp.Epoch)
	if c.store == nil {
		return nil
	}
	if c.saved == nil || !sameStates(c.saved, cp) {
		if err := c.store.Save(cp); err != nil {
			c.failures.Inc()
			c.log.Error().Err(err).Uint64("epoch", cp.Epoch).Msg("saving the checkpoint failed; the previous one stands")
			return err
		}
		c.saved = ownStates(cp)
	}
	if c.done != nil { // nil in tests that build a checkpointer by hand
		c.done.Inc()
	}
	c.mu.Lock()
	c.completed = time.Now()
	c.age.Set(0)
	var woken []*commitBox
	for b := range c.boxes {
		if b.post(seq, b.stateIn(cp)) {
			woken = append(woken, b)
		}
	}
	c.mu.Unlock()
	for _, b := range woken {
		b.wake()
	}
	return nil
}

// sameStates reports whether two checkpoints hold the same stage states
// (epoch and time aside): the one on disk already stands for the other.
func sameStates(a, b *state.Checkpoint) bool {
	eq := func(x, y json.RawMessage) bool { return bytes.Equal(x, y) }
	return maps.EqualFunc(a.Sources, b.Sources, eq) && maps.EqualFunc(a.Sinks, b.Sinks, eq) &&
		maps.EqualFunc(a.Merge, b.Merge, eq)
}

// ownStates copies the stage states of cp: what was written, kept apart
// from buffers a stage might reuse. The merge states are shared, not
// copied: merger.state makes a new buffer every time and nothing writes
// to it afterwards, and at a thousand feeds each is tens of megabytes,
// whose copy was 4% of MANYFEEDS' CPU.
func ownStates(cp *state.Checkpoint) *state.Checkpoint {
	cl := func(m map[string]json.RawMessage) map[string]json.RawMessage {
		out := make(map[string]json.RawMessage, len(m))
		for k, v := range m {
			out[k] = bytes.Clone(v)
		}
		return out
	}
	return &state.Checkpoint{Sources: cl(cp.Sources), Sinks: cl(cp.Sinks), Merge: maps.Clone(cp.Merge)}
}

// settle releases the waiters for epoch and older ones.
func (c *checkpointer) settle(epoch uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := c.reached[:0]
	for _, w := range c.reached {
		if epoch >= w.epoch {
			close(w.ch)
		} else {
			keep = append(keep, w)
		}
	}
	c.reached = keep
}

// subscribe makes a running Committer stage (kind "source" or "sink")
// receive the states that saved checkpoints hold for it from now on;
// interrupt, when set, is called when one is ready (a source's Read must
// be interrupted). A stage that is not also Stateful gets nothing.
func (c *checkpointer) subscribe(kind, id string, stage stages.Committer, interrupt func()) *commitBox {
	if _, ok := stage.(stages.Stateful); !ok {
		return nil
	}
	b := &commitBox{kind: kind, id: id, stage: stage, interrupt: interrupt, ready: make(chan struct{}, 1)}
	c.mu.Lock()
	defer c.mu.Unlock()
	// What was committed before the stage runs is not news to it: the
	// start-up checkpoint, or the state it was restored from.
	b.latest = b.stateIn(&c.committed)
	if c.boxes == nil {
		c.boxes = map[*commitBox]bool{}
	}
	c.boxes[b] = true
	return b
}

// unsubscribe ends b's notifications: its stage stopped running.
func (c *checkpointer) unsubscribe(b *commitBox) {
	if b == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.boxes, b)
}

// commitBox hands the newest committed state of one Committer stage from
// the checkpointer to the stage's own goroutine, which calls deliver
// between two Reads or Writes (see stages.Committer). A nil box is a
// stage that is no Committer.
type commitBox struct {
	kind, id  string
	stage     stages.Committer
	interrupt func()
	ready     chan struct{} // signalled when a state is pending

	mu      sync.Mutex
	seq     uint64 // of the newest state posted
	latest  []byte // the newest state posted (or known before the stage ran)
	pending []byte // the state to deliver, or nil
}

// stateIn is the stage's state in cp, or nil.
func (b *commitBox) stateIn(cp *state.Checkpoint) []byte {
	if b.kind == "source" {
		return cp.Sources[b.id]
	}
	return cp.Sinks[b.id]
}

// post offers the state of saved checkpoint number seq; it reports
// whether a new state is pending now (the caller then calls wake). An
// older checkpoint than one already posted, or one holding the same state
// as the newest posted, is skipped.
func (b *commitBox) post(seq uint64, st []byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if seq <= b.seq || st == nil {
		return false
	}
	b.seq = seq
	if bytes.Equal(st, b.latest) {
		return false
	}
	b.latest, b.pending = st, st
	return true
}

func (b *commitBox) wake() {
	select {
	case b.ready <- struct{}{}:
	default:
	}
	if b.interrupt != nil {
		b.interrupt()
	}
}

// holds reports whether st is the newest state posted (or known before
// the stage ran) and nothing waits for delivery: the stage was told that
// st is committed.
func (b *commitBox) holds(st []byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return st != nil && b.pending == nil && bytes.Equal(st, b.latest)
}

// waiting reports whether a state waits for delivery.
func (b *commitBox) waiting() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending != nil
}

// readyChan is signalled when a state waits; nil (never ready) for a
// stage that is no Committer.
func (b *commitBox) readyChan() <-chan struct{} {
	if b == nil {
		return nil
	}
	return b.ready
}

// deliver calls the stage's Committed with the pending state, if any. It
// must run on the stage's own goroutine. An error is logged and counted;
// the state is not delivered again.
func (b *commitBox) deliver(ctx context.Context, m *stageMetrics, log zerolog.Logger) {
	if b == nil {
		return
	}
	b.mu.Lock()
	st := b.pending
	b.pending = nil
	b.mu.Unlock()
	if st == nil {
		return
	}
	if err := b.stage.Committed(ctx, st); err != nil {
		m.errors.Inc()
		log.Warn().Err(err).Msg("commit notification failed; the checkpoint stands, the next one covers it")
	}
}

// freeze stops all further commits.
func (c *checkpointer) freeze() {
	c.mu.Lock()
	c.frozen = true
	c.mu.Unlock()
}

// final commits the end state of a pipeline whose stages all stopped
// cleanly: every record read was written, so the final positions of all
// sources and sinks are a consistent cut.
func (c *checkpointer) final() error {
	c.mu.Lock()
	c.complete(max(c.committed.Epoch, c.requested)+1, nil)
	c.mu.Unlock()
	return c.saveQueued()
}

type epochWaiter struct {
	epoch uint64
	ch    chan struct{}
}

// pause stops the periodic barriers and returns a new epoch for the
// caller to request, and a channel closed once that epoch is committed
// and its save is over.
func (c *checkpointer) pause() (uint64, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = true
	c.requested = max(c.requested, c.committed.Epoch) + 1
	w := epochWaiter{c.requested, make(chan struct{})}
	c.reached = append(c.reached, w)
	return w.epoch, w.ch
}

// unpause restarts the periodic barriers.
func (c *checkpointer) unpause() {
	c.mu.Lock()
	c.paused = false
	c.mu.Unlock()
}

// addSink counts a running sink: from now on it must ack every epoch.
func (c *checkpointer) addSink(id string) {
	c.mu.Lock()
	c.liveSinks[id] = true
	c.mu.Unlock()
}

// keepMerges names the sinks that merge now: merge states of others are
// orphans (see orphanMerges) and no longer committed.
func (c *checkpointer) keepMerges(ids map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.merging = ids
}

// orphanMerges returns the committed merge states of sinks that do not
// merge now.
func (c *checkpointer) orphanMerges() map[string][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string][]byte{}
	for id, st := range c.committed.Merge {
		if !c.merging[id] {
			out[id] = st
		}
	}
	return out
}

// latestMergeState is the newest known state of a sink's ordered merge.
func (c *checkpointer) latestMergeState(id string) []byte {
	return c.latest(c.mergeFinal, func(cp *state.Checkpoint) map[string]json.RawMessage { return cp.Merge }, id)
}

// latestSourceState is the newest known state of a source.
func (c *checkpointer) latestSourceState(id string) []byte {
	return c.latest(c.sourceFinal, func(cp *state.Checkpoint) map[string]json.RawMessage { return cp.Sources }, id)
}

// latest is a stage's final state when it ended, else its committed one.
func (c *checkpointer) latest(final map[string][]byte, committed func(*state.Checkpoint) map[string]json.RawMessage, id string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st, ok := final[id]; ok {
		return st
	}
	return committed(&c.committed)[id]
}

// commitNow commits, synchronously, the committed checkpoint updated with
// the given stage states, as a new epoch. It is for moments when nothing
// is in flight: a pipeline that just opened (so a crash before its first
// barrier rolls back to where it started, not to nothing), and the end of
// a reconfiguration (so new stages are part of the state at once).
//
// It keeps the current epoch number rather than taking a new one: sources
// inject every requested epoch in turn, and a number no source injected
// would make sources started now skip one that running sources still
// inject, which breaks barrier alignment.
func (c *checkpointer) commitNow(sources, sinks map[string][]byte) error {
	c.mu.Lock()
	k := &cut{sources: sources, sinks: sinks, merges: map[string][]byte{}, acked: map[string]bool{}}
	c.complete(max(c.requested, c.committed.Epoch), k)
	c.mu.Unlock()
	return c.saveQueued()
}
