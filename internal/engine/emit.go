package engine

import (
	"context"
	"encoding/base64"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
	"github.com/rs/zerolog"
)

// emitter is the output side of a source or worker: it sends good records
// to every downstream edge, turns rejects into dead-letter lines (or counts
// them as dropped), and forwards barriers. Safe for concurrent use by a
// worker's goroutines.
type emitter struct {
	stage string
	// outs and dl change only while the pipeline is quiescent (see
	// reconfigure); mu makes that visible to the emitting goroutines.
	mu   sync.RWMutex
	outs []chan msg
	// sels is parallel to outs: the route bits (see steps.Router) of the
	// records that edge takes, 0 for every record. nil when no edge
	// reads a route.
	sels   []uint64
	dl     chan msg // the dead-letter sink's edge, or nil
	hard   context.Context
	m      *stageMetrics
	badLog zerolog.Logger // sampled: bad records are logged rate-limited
	// tp is where taps see the stage's output (see tap.go); nil in
	// tests that build an emitter by hand.
	tp *tapPoint
}

// emit sends m's batch downstream; it reports false when the hard stop
// came first. m must not be used after.
func (e *emitter) emit(m msg) bool {
	b := m.b
	outs, sels, dl := e.routedEdges()
	if len(b.Rejects) > 0 {
		if !e.reject(dl, b.Rejects) {
			return false
		}
		b.Rejects = nil
	}
	n := b.Len()
	if n == 0 {
		m.release() // nothing left to send: its buffers can be reused
		return true
	}
	if len(outs) > 1 || m.routes != nil {
		b.SplitRuns() // copies are made of Records (cloneMsg)
	}
	if e.tp != nil {
		if ts := e.tp.out.Load(); ts != nil { // one atomic load when untapped
			b.SplitRuns()
			offerAll(ts, b.Records, m.routes)
		}
	}
	if len(outs) == 0 {
		e.m.noOutput.Add(float64(n))
		m.release()
		return true
	}
	if m.routes != nil && sels != nil {
		return e.emitRouted(m, outs, sels)
	}
	e.m.out.Add(float64(n))
	for i, out := range outs {
		mm := m
		if i < len(outs)-1 {
			mm = cloneMsg(m) // every downstream owns its batch
		}
		if !send(e.hard, out, mm) {
			return false
		}
	}
	return true
}

// emitRouted sends each output the records of m whose route bits it
// selects: the whole batch (m itself to the last such output, copies to
// the others) or a copy of the selected records. A record no output takes
// is counted as dropped for want of an output.
func (e *emitter) emitRouted(m msg, outs []chan msg, sels []uint64) bool {
	routes := m.routes
	m.routes = nil
	var any uint64 // the union of the selections; all ones when one takes every record
	for _, sel := range sels {
		if sel == 0 {
			sel = ^uint64(0)
		}
		any |= sel
	}
	sent := 0
	for _, r := range routes {
		if r&any != 0 {
			sent++
		}
	}
	e.m.out.Add(float64(sent))
	if miss := len(routes) - sent; miss > 0 {
		e.m.noOutput.Add(float64(miss))
	}
	// own is the last output taking every record: it gets m itself.
	own := -1
	for i, sel := range sels {
		if sel == 0 || selected(routes, sel, nil) == len(routes) {
			own = i
		}
	}
	var idx []int // reused across outputs
	for i, out := range outs {
		var mm msg
		switch {
		case i == own:
			continue // sent last, after the copies were made from it
		case sels[i] == 0:
			mm = cloneMsg(m)
		default:
			idx = idx[:0]
			if selected(routes, sels[i], &idx) == 0 {
				continue
			}
			if len(idx) == len(routes) {
				mm = cloneMsg(m)
			} else {
				mm = selectMsg(m, idx)
			}
		}
		if !send(e.hard, out, mm) {
			m.release()
			return false
		}
	}
	if own < 0 {
		m.release()
		return true
	}
	return send(e.hard, outs[own], m)
}

// selected counts the records whose route bits meet sel, appending their
// indexes to *idx when idx is not nil.
func selected(routes []uint64, sel uint64, idx *[]int) int {
	n := 0
	for j, r := range routes {
		if r&sel != 0 {
			n++
			if idx != nil {
				*idx = append(*idx, j)
			}
		}
	}
	return n
}

// barrier forwards checkpoint barrier epoch to every downstream edge,
// the dead-letter edge included.
func (e *emitter) barrier(epoch uint64) bool {
	outs, dl := e.edges()
	for _, out := range outs {
		if !send(e.hard, out, msg{epoch: epoch}) {
			return false
		}
	}
	if dl != nil {
		return send(e.hard, dl, msg{epoch: epoch})
	}
	return true
}

// close closes the stage's outgoing edges: the end of its stream.
func (e *emitter) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, out := range e.outs {
		close(out)
	}
	if e.dl != nil {
		close(e.dl)
	}
	e.outs, e.sels, e.dl = nil, nil, nil
}

func (e *emitter) edges() ([]chan msg, chan msg) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.outs, e.dl
}

func (e *emitter) routedEdges() ([]chan msg, []uint64, chan msg) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.outs, e.sels, e.dl
}

// addOut adds an outgoing edge taking the records of route bits sel (0:
// every record). Only while the pipeline is quiescent.
func (e *emitter) addOut(ch chan msg, sel uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.outs = append(slices.Clip(e.outs), ch)
	if sel != 0 && e.sels == nil {
		e.sels = make([]uint64, len(e.outs)-1)
	}
	if e.sels != nil {
		e.sels = append(slices.Clip(e.sels), sel)
	}
}

// setDL sets the dead-letter edge, closing the one it replaces (an
// emitter has one). Only while the pipeline is quiescent.
func (e *emitter) setDL(ch chan msg) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dl != nil && e.dl != ch {
		close(e.dl)
	}
	e.dl = ch
}

// removeOut removes and closes an outgoing edge (the dead-letter edge
// included). Only while the pipeline is quiescent.
func (e *emitter) removeOut(ch chan msg) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.dl == ch {
		e.dl = nil
		close(ch)
		return
	}
	if i := slices.Index(e.outs, ch); i >= 0 {
		e.outs = slices.Delete(slices.Clone(e.outs), i, i+1)
		if e.sels != nil {
			e.sels = slices.Delete(slices.Clone(e.sels), i, i+1)
		}
		close(ch)
	}
}

func (e *emitter) reject(dl chan msg, rs []stages.Reject) bool {
	n := float64(len(rs))
	e.m.errors.Add(n)
	for i := range rs {
		e.badLog.Warn().Str("origin", rs[i].Record.OriginString()).Err(rs[i].Err).Msg("bad record")
	}
	if dl == nil {
		e.m.badRecord.Add(n)
		return true
	}
	return e.deadLetter(dl, rs)
}

// deadLetter sends records to the dead-letter sink as dead-letter lines,
// counting them; the lines are copies, so rs may be reused after.
func (e *emitter) deadLetter(dl chan msg, rs []stages.Reject) bool {
	if dl == nil {
		e.m.badRecord.Add(float64(len(rs)))
		return true
	}
	e.m.deadLettered.Add(float64(len(rs)))
	for i := range rs {
		if rs[i].Stage == "" {
			rs[i].Stage = e.stage
		}
	}
	var buf []byte
	ends := make([]int, len(rs))
	for i := range rs {
		buf = appendDeadLetter(buf, &rs[i])
		ends[i] = len(buf)
	}
	recs := make([]stages.Record, len(rs))
	start := 0
	for i := range rs {
		recs[i] = stages.Record{Raw: buf[start:ends[i]:ends[i]], Parsed: true, Origin: rs[i].Record.Origin, Offset: rs[i].Record.Offset}
		start = ends[i]
	}
	if e.tp != nil {
		if ts := e.tp.dl.Load(); ts != nil {
			offerAll(ts, recs, nil)
		}
	}
	return send(e.hard, dl, msg{b: &stages.Batch{Records: recs}})
}

// appendDeadLetter renders a reject as the dead-letter line of SPEC §2:
// {"error","stage","source","origin","record"|"record_base64"[,"length"]}.
func appendDeadLetter(dst []byte, r *stages.Reject) []byte {
	dst = append(dst, `{"error":`...)
	msg := "bad record"
	if r.Err != nil {
		msg = r.Err.Error()
	}
	dst = jsonrec.AppendString(dst, msg)
	dst = append(dst, `,"stage":`...)
	dst = jsonrec.AppendString(dst, r.Stage)
	src := ""
	if r.Record.Origin != nil {
		src = r.Record.Origin.Source
	}
	dst = append(dst, `,"source":`...)
	dst = jsonrec.AppendString(dst, src)
	dst = append(dst, `,"origin":`...)
	dst = jsonrec.AppendString(dst, r.Record.OriginString())
	// The original line, also of a record rejected after a parser
	// rewrote Raw: it is what a user can find in the input and replay.
	line := r.Record.Original()
	if utf8.Valid(line) {
		dst = append(dst, `,"record":`...)
		dst = jsonrec.AppendString(dst, string(line))
	} else {
		dst = append(dst, `,"record_base64":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, line)
		dst = append(dst, '"')
	}
	if r.Length > 0 {
		dst = append(dst, `,"length":`...)
		dst = strconv.AppendInt(dst, r.Length, 10)
	}
	return append(dst, '}')
}

// cloneMsg copies a batch for a second downstream (see cloneBatch), with
// its merge keys; the copy holds a share of the batch's ticket.
func cloneMsg(m msg) msg {
	c := msg{b: cloneBatch(m.b), t: m.t.share(), keysOf: m.keysOf}
	if m.keysOf != "" {
		c.keys = slices.Clone(m.keys)
	}
	return c
}

// selectMsg copies the records idx of m's batch (and their merge keys)
// for one downstream; the copy holds a share of the batch's ticket.
func selectMsg(m msg, idx []int) msg {
	out := msg{b: copyRecords(m.b.Records, idx), t: m.t.share(), keysOf: m.keysOf}
	if m.keysOf != "" {
		out.keys = make([]int64, len(idx))
		for k, j := range idx {
			out.keys[k] = m.keys[j]
		}
	}
	return out
}

// cloneBatch copies a batch: records and their bytes (Raw, and the
// original Line of a parsed record), so that steps editing one copy cannot
// affect the other, and neither copy points into the other's buffers,
// which are reused once it is written.
func cloneBatch(b *stages.Batch) *stages.Batch { return copyRecords(b.Records, nil) }

// copyRecords copies the records idx of recs (all of them when idx is
// nil), with their bytes, into a new batch that owns one buffer.
func copyRecords(recs []stages.Record, idx []int) *stages.Batch {
	n := len(recs)
	if idx != nil {
		n = len(idx)
	}
	at := func(k int) *stages.Record {
		if idx != nil {
			return &recs[idx[k]]
		}
		return &recs[k]
	}
	size := 0
	for k := range n {
		size += len(at(k).Raw) + len(at(k).Line)
	}
	c := &stages.Batch{Records: stages.NewRecords(n)}
	buf := stages.NewBuffer(size)
	c.Own(buf)
	for k := range n {
		r := *at(k)
		start := len(buf)
		buf = append(buf, r.Raw...)
		r.Raw = buf[start:len(buf):len(buf)]
		if r.Line != nil {
			start = len(buf)
			buf = append(buf, r.Line...)
			r.Line = buf[start:len(buf):len(buf)]
		}
		c.Records = append(c.Records, r)
	}
	return c
}
