package sources

import (
	"encoding/json"
	"fmt"

	"github.com/etld/etld/internal/stages"
)

var _ stages.Stateful = (*FileSource)(nil)

// State implements stages.Stateful: the positions of every file read so
// far (see Positions).
func (s *FileSource) State() ([]byte, error) {
	return json.Marshal(s.Positions())
}

// Restore implements stages.Stateful (see SetPositions).
func (s *FileSource) Restore(state []byte) error {
	var ps []FilePosition
	if err := json.Unmarshal(state, &ps); err != nil {
		return fmt.Errorf("file source: bad checkpoint state: %w", err)
	}
	s.SetPositions(ps)
	return nil
}
