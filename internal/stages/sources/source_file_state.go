package sources

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/etld/etld/internal/stages"
)

var _ stages.Stateful = (*FileSource)(nil)

// State implements stages.Stateful: the positions of every file read so
// far (see Positions), as the JSON array of FilePosition that
// json.Marshal gives, byte for byte.
//
// It is written by hand: a source following 10,000 files encodes 10,000
// positions at every checkpoint (each second by default), and
// encoding/json's reflection made that a tenth of the source's CPU.
func (s *FileSource) State() ([]byte, error) {
	ps := s.Positions()
	b := make([]byte, 0, len(ps)*(len(`{"path":"","dev":,"inode":,"fingerprint_len":,"fingerprint":,"offset":}`)+96)+2)
	return appendPositions(b, ps), nil
}

// appendPositions appends ps to b as json.Marshal writes it.
func appendPositions(b []byte, ps []FilePosition) []byte {
	if ps == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i := range ps {
		p := &ps[i]
		if i > 0 {
			b = append(b, ',')
		}
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
		b = append(b, `,"offset":`...)
		b = strconv.AppendInt(b, p.Offset, 10)
		b = append(b, '}')
	}
	return append(b, ']')
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
