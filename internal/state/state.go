// Package state stores each pipeline's committed checkpoint: the read
// positions of its sources and the output positions of its sinks, taken
// together at one checkpoint barrier.
//
// A checkpoint is one JSON file per pipeline, <dir>/<pipeline>.json,
// replaced atomically: written to a temporary file, fsynced, renamed over
// the old one, and the directory fsynced. A crash at any point leaves
// either the old checkpoint or the new one, never a mix or a torn file.
package state

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Version is the format version of checkpoint files.
const Version = 1

// Checkpoint is one pipeline's committed state.
type Checkpoint struct {
	Version  int       `json:"version"`
	Pipeline string    `json:"pipeline"`
	Epoch    uint64    `json:"epoch"`
	Time     time.Time `json:"time"`
	// Stage state by stage id, as returned by the stage (opaque here).
	Sources map[string]json.RawMessage `json:"sources,omitempty"`
	Sinks   map[string]json.RawMessage `json:"sinks,omitempty"`
	// Merge holds per-sink ordered-merge state (newest key written).
	Merge map[string]json.RawMessage `json:"merge,omitempty"`
}

// Store reads and writes checkpoints in a directory.
type Store struct {
	Dir string

	lock *os.File // held by Lock
}

// Open creates dir if needed and returns a store for it.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	return &Store{Dir: dir}, nil
}

func (s *Store) path(pipeline string) string {
	return filepath.Join(s.Dir, pipeline+".json")
}

// RemoveLeftovers deletes the temporary files of the pipeline's saves
// that a crash interrupted. Only its owner may call it, before saving.
func (s *Store) RemoveLeftovers(pipeline string) {
	if leftovers, err := filepath.Glob(filepath.Join(s.Dir, "."+pipeline+".json.tmp-*")); err == nil {
		for _, f := range leftovers {
			_ = os.Remove(f)
		}
	}
}

// Load returns the pipeline's checkpoint, or nil when it has none.
func (s *Store) Load(pipeline string) (*Checkpoint, error) {
	b, err := os.ReadFile(s.path(pipeline))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	var c Checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("checkpoint %s is corrupt: %w", s.path(pipeline), err)
	}
	if c.Version != Version {
		return nil, fmt.Errorf("checkpoint %s has version %d, this etld reads version %d", s.path(pipeline), c.Version, Version)
	}
	return &c, nil
}

// Save replaces the pipeline's checkpoint atomically and durably.
func (s *Store) Save(c *Checkpoint) error {
	c.Version = Version
	final := s.path(c.Pipeline)
	tmp, err := os.CreateTemp(s.Dir, "."+c.Pipeline+".json.tmp-*")
	if err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	// The temporary file is removed only when the save fails before the
	// rename: after it, a deferred os.Remove cost two failing system
	// calls (unlink, then rmdir) on every save of every pipeline.
	committed := false
	defer func() {
		if !committed {
			_ = os.Remove(tmp.Name())
		}
	}()
	// Encode writes from its own buffer, with the newline: the checkpoint
	// (an ordered merge's can hold thousands of records) is not copied
	// twice more, as json.Marshal and an append did.
	if err := encode(tmp, c); err != nil {
		tmp.Close()
		if pe := (*os.PathError)(nil); errors.As(err, &pe) {
			return fmt.Errorf("write checkpoint: %w", err)
		}
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync checkpoint: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return fmt.Errorf("commit checkpoint: %w", err)
	}
	committed = true
	return syncDir(s.Dir)
}

// encode writes c as JSON and a newline. The stage and merge states are
// written as they are: encoding/json would compact each again, which
// cost as much as making them (a merge's state holds the records it held
// at the barrier, tens of megabytes for a thousand feeds; a file source's
// holds a position per file, 1.5 MB for 10,000 files, written every
// checkpoint interval). The result is the JSON encoding/json wrote, byte
// for byte when the states are compact and have no HTML characters
// (which encoding/json escaped).
//
// The states must be valid JSON: the runtime checks a stage's state as
// it takes it (the Stateful contract, also checked by the conformance
// suite), and a state read back from a checkpoint was parsed. Checking
// them all again here cost a scan of every state at every save (1.5 MB
// a second for a file source following 10,000 files).
func encode(w io.Writer, c *Checkpoint) error {
	h := *c
	h.Sources, h.Sinks, h.Merge = nil, nil, nil // omitempty: written below
	head, err := json.Marshal(&h)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	bw.Write(head[:len(head)-1]) // without its closing brace
	writeRaw(bw, "sources", c.Sources)
	writeRaw(bw, "sinks", c.Sinks)
	writeRaw(bw, "merge", c.Merge)
	bw.WriteString("}\n")
	return bw.Flush()
}

// writeRaw writes `,"name":{...}` with m's values as they are, in key
// order, or nothing when m is empty (the fields are omitempty). A nil
// value is written as null.
func writeRaw(bw *bufio.Writer, name string, m map[string]json.RawMessage) {
	if len(m) == 0 {
		return
	}
	bw.WriteString(`,"` + name + `":{`)
	for i, id := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			bw.WriteByte(',')
		}
		k, _ := json.Marshal(id)
		bw.Write(k)
		bw.WriteByte(':')
		if len(m[id]) == 0 {
			bw.WriteString("null")
		} else {
			bw.Write(m[id])
		}
	}
	bw.WriteByte('}')
}

// Rename moves a pipeline's checkpoint to another pipeline name (a renamed
// pipeline file). It does nothing when from has no checkpoint, and fails
// when to has one already.
func (s *Store) Rename(from, to string) error {
	if _, err := os.Stat(s.path(from)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(s.path(to)); err == nil {
		return fmt.Errorf("checkpoint %s exists already", s.path(to))
	}
	if err := os.Rename(s.path(from), s.path(to)); err != nil {
		return fmt.Errorf("rename checkpoint: %w", err)
	}
	return syncDir(s.Dir)
}

// Delete removes the pipeline's checkpoint (for tests and tools).
func (s *Store) Delete(pipeline string) error {
	err := os.Remove(s.path(pipeline))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync state dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync state dir: %w", err)
	}
	return nil
}
