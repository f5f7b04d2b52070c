package sources

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/etld/etld/internal/stages"
)

var _ stages.ValidJSONState = (*FileSource)(nil)

// ValidJSONState implements stages.ValidJSONState: State writes what
// json.Marshal would (TestStateIsJSONOfPositions and
// TestAppendPositionsIsJSONMarshal compare them).
func (*FileSource) ValidJSONState() {}

// State implements stages.Stateful: the positions of every file read so
// far (see Positions), as the JSON array of FilePosition that
// json.Marshal gives, byte for byte.
//
// It is written by hand: a source following 10,000 files encodes 10,000
// positions at every checkpoint (each second by default), and
// encoding/json's reflection made that a tenth of the source's CPU.
//
// Each file keeps the encoding of its position up to the offset, redone
// only when its name, identity or fingerprint changed: a checkpoint
// appends that and the offset.
func (s *FileSource) State() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := make([]byte, 0, s.stateSize+256)
	b = append(b, '[')
	for _, t := range s.files {
		if !t.hasPosition() {
			continue
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = t.appendPosition(b)
	}
	for _, k := range s.known {
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = appendPosition(b, &k.FilePosition)
	}
	b = append(b, ']')
	s.stateSize = len(b)
	return b, nil
}

// appendPosition appends t's position as json.Marshal writes it (see
// State).
func (t *tailedFile) appendPosition(b []byte) []byte {
	if t.enc == nil || t.encPath != t.path || t.encID != t.id || t.encFP != t.fp {
		p := t.position()
		t.enc = appendPositionHead(t.enc[:0], &p)
		t.encPath, t.encID, t.encFP = t.path, t.id, t.fp
	}
	b = append(b, t.enc...)
	b = strconv.AppendInt(b, t.sp.resume(), 10)
	return append(b, '}')
}

// appendPositions appends ps to b as json.Marshal writes it.
func appendPositions(b []byte, ps []FilePosition) []byte {
	if ps == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i := range ps {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendPosition(b, &ps[i])
	}
	return append(b, ']')
}

// appendPosition appends p as json.Marshal writes it.
func appendPosition(b []byte, p *FilePosition) []byte {
	b = appendPositionHead(b, p)
	b = strconv.AppendInt(b, p.Offset, 10)
	return append(b, '}')
}

// appendPositionHead appends p as json.Marshal writes it, up to its
// offset's value.
func appendPositionHead(b []byte, p *FilePosition) []byte {
	b = append(b, `{"path":`...)
	b = appendJSONString(b, p.Path)
	b = append(b, `,"dev":`...)
	b = strconv.AppendUint(b, p.Dev, 10)
	b = append(b, `,"inode":`...)
	b = strconv.AppendUint(b, p.Inode, 10)
	b = append(b, `,"fingerprint_len":`...)
	b = strconv.AppendInt(b, int64(p.FingerprintLen), 10)
	b = append(b, `,"fingerprint":`...)
	b = strconv.AppendUint(b, p.Fingerprint, 10)
	return append(b, `,"offset":`...)
}

// appendJSONString appends s quoted as json.Marshal quotes it: a path of
// printable ASCII without ", \, <, > or & is copied as it is; any other
// is left to encoding/json (its escapes of HTML characters, control
// characters and invalid UTF-8 included).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
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
