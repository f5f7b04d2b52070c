package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/etld/etld/internal/engine"
	"github.com/etld/etld/internal/jsonrec"
)

// Tapper is the optional side of a Runtime that serves /api/tap;
// *engine.Runtime implements it.
type Tapper interface {
	Tap(engine.TapRequest) (*engine.Tap, error)
}

// tap streams, as NDJSON, the records leaving a stage (or one of its
// routes, or its dead letters) until the client goes, the limit is
// reached or the server shuts down:
//
//	GET /api/tap?pipeline=P&stage=S[&route=R][&dead_letter=1][&filter=EXPR][&limit=N]
//
// A record that is one JSON value is written as is, any other line as a
// JSON string; {"_tap_missed":N} says that N records went by while the
// reader was too slow to take them.
func (s *Server) tap(w http.ResponseWriter, r *http.Request) {
	tapper, ok := s.opts.Runtime.(Tapper)
	if !ok {
		text(w, http.StatusNotFound, "tap: not available")
		return
	}
	q := r.URL.Query()
	req := engine.TapRequest{Pipeline: q.Get("pipeline"), Stage: q.Get("stage"), Route: q.Get("route"), Filter: q.Get("filter")}
	if v := q.Get("dead_letter"); v != "" {
		dl, err := strconv.ParseBool(v)
		if err != nil {
			text(w, http.StatusBadRequest, "tap: dead_letter: want true or false")
			return
		}
		req.DeadLetter = dl
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			text(w, http.StatusBadRequest, "tap: limit: want a number of records, 0 for no limit")
			return
		}
		limit = n
	}
	if req.Pipeline == "" || (req.Stage == "" && !req.DeadLetter) {
		text(w, http.StatusBadRequest, "tap: want pipeline and stage (or dead_letter)")
		return
	}
	t, err := tapper.Tap(req)
	switch {
	case errors.Is(err, engine.ErrTooManyTaps):
		text(w, http.StatusTooManyRequests, "tap: "+err.Error())
		return
	case errors.Is(err, engine.ErrNoTapTarget):
		text(w, http.StatusNotFound, "tap: "+err.Error())
		return
	case err != nil:
		text(w, http.StatusBadRequest, "tap: "+err.Error())
		return
	}
	defer t.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	var line []byte
	for n := 0; limit == 0 || n < limit; {
		rec, missed, ok := t.Next(r.Context())
		if !ok {
			return
		}
		line = line[:0]
		if missed > 0 {
			line = append(line, `{"_tap_missed":`...)
			line = strconv.AppendUint(line, missed, 10)
			line = append(line, '}')
		} else {
			line = appendTapRecord(line, rec)
			n++
		}
		line = append(line, '\n')
		if _, err := w.Write(line); err != nil {
			return
		}
		if !t.Buffered() { // flush when caught up: a burst goes out in few writes
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
	rc.Flush()
}

// appendTapRecord appends rec as one NDJSON value: itself when it is
// valid JSON, else as a JSON string.
func appendTapRecord(dst, rec []byte) []byte {
	if json.Valid(rec) {
		return append(dst, rec...)
	}
	return jsonrec.AppendString(dst, string(rec))
}
