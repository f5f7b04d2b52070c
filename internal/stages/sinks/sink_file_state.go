package sinks

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/etld/etld/internal/rotate"
	"github.com/etld/etld/internal/stages"
)

// fileSinkState is the file sink's checkpoint: its active segment.
type fileSinkState struct {
	Path string `json:"path"`
	Seq  uint64 `json:"seq"`
	Size int64  `json:"size"`
}

var _ stages.Stateful = (*FileSink)(nil)

// State implements stages.Stateful: the active segment and its size after
// the last flush. Call it right after a successful Flush, or after Close.
func (s *FileSink) State() ([]byte, error) {
	a := s.Active()
	if a.Seq == 0 {
		return nil, errors.New("file sink: no state before open")
	}
	return json.Marshal(fileSinkState{Path: a.Path, Seq: a.Seq, Size: a.Size})
}

// Restore implements stages.Stateful: before Open, it rolls the output
// back to the committed segment (see rotate.Recover), so that what the
// sources re-read after the checkpoint is written exactly once. A state
// for another path (the sink's path was changed) is ignored.
func (s *FileSink) Restore(state []byte) error {
	if s.file != nil {
		return errors.New("file sink: restore after open")
	}
	var st fileSinkState
	if err := json.Unmarshal(state, &st); err != nil {
		return fmt.Errorf("file sink: bad checkpoint state: %w", err)
	}
	if st.Path != s.cfg.Path {
		s.log.Warn().Str("checkpoint_path", st.Path).Msg("checkpoint is for another output path; starting without it")
		return nil
	}
	rec, err := rotate.Recover(rotate.Segment{Path: st.Path, Seq: st.Seq, Size: st.Size}, s.cfg.Fsync == FsyncNever)
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	ev := s.log.Info()
	if rec.Missing > 0 {
		ev = s.log.Warn().Int64("missing_bytes", rec.Missing)
	}
	if rec.Truncated > 0 || rec.Restored != "" || len(rec.Removed) > 0 || rec.Missing > 0 {
		ev.Int64("truncated_bytes", rec.Truncated).Str("restored", rec.Restored).
			Strs("removed", rec.Removed).Msg("output rolled back to the last checkpoint")
	}
	return nil
}
