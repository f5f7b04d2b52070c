package state

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "st"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.Load("p"); err != nil || c != nil {
		t.Fatalf("Load of a missing checkpoint = %v, %v; want nil, nil", c, err)
	}
	in := &Checkpoint{Pipeline: "p", Epoch: 7,
		Sources: map[string]json.RawMessage{"src": json.RawMessage(`[{"path":"a","offset":12}]`)},
		Sinks:   map[string]json.RawMessage{"out": json.RawMessage(`{"seq":1,"size":99}`)}}
	if err := s.Save(in); err != nil {
		t.Fatal(err)
	}
	in.Epoch = 8
	if err := s.Save(in); err != nil {
		t.Fatal(err)
	}
	out, err := s.Load("p")
	if err != nil {
		t.Fatal(err)
	}
	if out.Epoch != 8 || string(out.Sources["src"]) != `[{"path":"a","offset":12}]` || string(out.Sinks["out"]) != `{"seq":1,"size":99}` {
		t.Fatalf("loaded %+v", out)
	}
	ents, _ := os.ReadDir(s.Dir)
	if len(ents) != 1 {
		t.Fatalf("state dir holds %d entries, want only p.json (no temp files left)", len(ents))
	}
}

func TestLoadRejectsCorruptAndFutureVersions(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.Dir, "bad.json"), []byte(`{"version":1,`), 0o600)
	if _, err := s.Load("bad"); err == nil {
		t.Fatal("Load of a torn file succeeded")
	}
	os.WriteFile(filepath.Join(s.Dir, "new.json"), []byte(`{"version":99}`), 0o600)
	if _, err := s.Load("new"); err == nil {
		t.Fatal("Load of a future version succeeded")
	}
}

func TestLockExcludesASecondOwner(t *testing.T) {
	dir := t.TempDir()
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Lock(); err != nil {
		t.Fatal(err)
	}
	b, _ := Open(dir)
	err = b.Lock()
	if err == nil || !strings.Contains(err.Error(), "in use by another etld (pid ") {
		t.Fatalf("second Lock = %v, want an error naming the owner's pid", err)
	}
	a.Unlock()
	if err := b.Lock(); err != nil {
		t.Fatalf("Lock after Unlock = %v", err)
	}
	b.Unlock()
}

// TestSaveMergeAsIs: merge states are written as they are, beside the
// other fields, and read back the same (what encoding/json would have
// written, but for compaction).
func TestSaveMergeAsIs(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := &Checkpoint{Pipeline: "p", Epoch: 3,
		Sources: map[string]json.RawMessage{"in": json.RawMessage(`{"offset":5}`)},
		Merge: map[string]json.RawMessage{
			"b":     json.RawMessage(`{"order_by":"ts","feeds":[{"source":"in","records":[{"json":{"ts":1,"m":"a b"},"offset":0}]}]}`),
			"a\"x":  json.RawMessage(`{"order_by":"ts"}`),
			"empty": nil,
		}}
	if err := s.Save(c); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load("p")
	if err != nil {
		t.Fatal(err)
	}
	if got.Epoch != 3 || string(got.Sources["in"]) != `{"offset":5}` {
		t.Errorf("loaded %+v", got)
	}
	for id, want := range c.Merge {
		if w := string(want); w == "" {
			want = json.RawMessage("null")
		}
		if string(got.Merge[id]) != string(want) {
			t.Errorf("merge %q: loaded %s, want %s", id, got.Merge[id], want)
		}
	}
	if len(c.Merge) != 3 {
		t.Error("Save changed the checkpoint's merge map")
	}
}

// TestEncodeAsEncodingJSON: with compact states, the checkpoint written
// as it is reads exactly as encoding/json would have written it, empty
// maps left out and nil states written as null.
func TestEncodeAsEncodingJSON(t *testing.T) {
	ts := time.Date(2026, 12, 4, 16, 30, 0, 123456789, time.UTC)
	for name, c := range map[string]*Checkpoint{
		"empty": {Version: Version, Pipeline: "p", Time: ts},
		"all": {Version: Version, Pipeline: `a "quoted" <pipe>`, Epoch: 1 << 40, Time: ts,
			Sources: map[string]json.RawMessage{"b": json.RawMessage(`[{"path":"x","offset":12}]`), "a": nil, "é\n": json.RawMessage(`7`)},
			Sinks:   map[string]json.RawMessage{"out": json.RawMessage(`{"seq":1,"size":99}`)},
			Merge:   map[string]json.RawMessage{"out": json.RawMessage(`{"order_by":"ts"}`)}},
		"sinks only": {Version: Version, Pipeline: "p", Epoch: 2, Time: ts,
			Sources: map[string]json.RawMessage{},
			Sinks:   map[string]json.RawMessage{"out": json.RawMessage(`null`)}},
	} {
		var got bytes.Buffer
		if err := encode(&got, c); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != string(want)+"\n" {
			t.Errorf("%s:\n got %s\nwant %s", name, got.String(), want)
		}
	}
}

// A save whose rename fails (the checkpoint's name is taken by a
// non-empty directory) removes its temporary file; a save that succeeds
// leaves only the checkpoint.
func TestSaveRemovesTempOnlyWhenRenameFails(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cp := &Checkpoint{Pipeline: "p", Epoch: 1, Sources: map[string]json.RawMessage{"in": json.RawMessage(`{"offset":5}`)}}
	blocker := filepath.Join(s.Dir, "p.json")
	if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(cp); err == nil || !strings.Contains(err.Error(), "commit checkpoint") {
		t.Fatalf("Save over a directory = %v, want a commit checkpoint error", err)
	}
	if left, _ := filepath.Glob(filepath.Join(s.Dir, ".p.json.tmp-*")); len(left) != 0 {
		t.Errorf("a failed rename left %v", left)
	}
	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(cp); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got, err := s.Load("p"); err != nil || got.Epoch != 1 {
		t.Fatalf("Load = %+v, %v; want epoch 1", got, err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, ".p.json.tmp-") {
			t.Errorf("a successful save left %s (dir: %v)", n, names)
		}
	}
}
