package engine

import (
	"strings"
	"testing"
)

// rawState is a Stateful stage whose State is given.
type rawState struct{ st []byte }

func (s rawState) State() ([]byte, error) { return s.st, nil }
func (rawState) Restore([]byte) error     { return nil }

// validRawState is rawState declaring its state valid by construction.
type validRawState struct{ rawState }

func (validRawState) ValidJSONState() {}

// TestStateOfChecksJSON: a stage state that is not valid JSON is an
// error (the checkpoint fails instead of being written unreadable);
// valid states and nil pass; a stages.ValidJSONState is not scanned.
func TestStateOfChecksJSON(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stage   any
		wantErr bool
	}{
		{"not stateful", struct{}{}, false},
		{"valid", rawState{[]byte(`{"n":1}`)}, false},
		{"nil", rawState{nil}, false},
		{"not JSON", rawState{[]byte(`{"n":`)}, true},
		{"declared valid: not scanned", validRawState{rawState{[]byte(`{"n":`)}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := stateOf(tc.stage)
			if (err != nil) != tc.wantErr || (err != nil && !strings.Contains(err.Error(), "not valid JSON")) {
				t.Fatalf("stateOf: %v, want an error: %v", err, tc.wantErr)
			}
		})
	}
}
