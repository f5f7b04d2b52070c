package sources

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"testing"
)

// TestAppendPositionsIsJSONMarshal: the hand-written encoding of the
// checkpoint positions is byte for byte what json.Marshal gives, for
// paths that need no escape and for those that do (quotes, backslashes,
// HTML characters, control characters, non-ASCII, invalid UTF-8), and it
// reads back to the same positions.
func TestAppendPositionsIsJSONMarshal(t *testing.T) {
	paths := []string{"/var/log/app.log", "", `/a "quoted" \ name`, "/logs/<x>&y", "/tab\there\n", "/héllo/日本.log", "/bad\xff\xfeutf8", "/sep\u2028line"}
	var ps []FilePosition
	for i, p := range paths {
		ps = append(ps, FilePosition{Path: p, Dev: uint64(i) * 2049, Inode: math.MaxUint64 - uint64(i), FingerprintLen: i * 100, Fingerprint: uint64(i) << 60, Offset: int64(i) * 1e12})
	}
	for _, in := range [][]FilePosition{nil, {}, ps[:1], ps} {
		want, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		got := appendPositions(nil, in)
		if !bytes.Equal(got, want) {
			t.Fatalf("appendPositions:\n got %s\nwant %s", got, want)
		}
		var back []FilePosition
		if err := json.Unmarshal(got, &back); err != nil || len(back) != len(in) {
			t.Fatalf("read back %d positions of %d: %v", len(back), len(in), err)
		}
	}
}

// TestStateIsJSONOfPositions: State, which keeps each file's encoding up
// to the offset, gives json.Marshal(Positions()) byte for byte, also after
// a file's offset, name, identity or fingerprint changed, with remembered
// positions of closed files, and with none at all.
func TestStateIsJSONOfPositions(t *testing.T) {
	s := &FileSource{}
	check := func(what string) {
		t.Helper()
		got, err := s.State()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(s.Positions())
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: State\n got %s\nwant %s", what, got, want)
		}
	}
	check("no file")
	for i := range 3 {
		f := &tailedFile{path: fmt.Sprintf("/logs/f%d.log", i), id: fileID{dev: 1, ino: uint64(10 + i)}, fp: fingerprint{n: 1024, sum: uint64(i)}, parked: true}
		f.sp.reset(int64(i) * 100)
		s.files = append(s.files, f)
	}
	s.files = append(s.files, &tailedFile{path: "/logs/never-read.log"}) // no position
	check("three files")
	s.files[0].sp.reset(12345)
	check("an offset moved")
	s.files[1].path = `/logs/renamed "<1>".log`
	check("a file renamed")
	s.files[2].fp = fingerprint{n: 7, sum: 99}
	s.files[2].id = fileID{dev: 2, ino: 77}
	check("a file truncated and replaced")
	s.known = map[fileID]knownPosition{{dev: 3, ino: 4}: {FilePosition: FilePosition{Path: "/logs/old.log", Dev: 3, Inode: 4, Offset: 5}}}
	check("with a remembered position")
}

// BenchmarkFileSourceState: the checkpoint state of a source following
// 10,000 files.
func BenchmarkFileSourceState(b *testing.B) {
	s := &FileSource{}
	for i := range 10000 {
		t := &tailedFile{path: "/var/log/apps/some-service/f" + string(rune('a'+i%26)) + ".log", id: fileID{dev: 2049, ino: uint64(1e6 + i)}, fp: fingerprint{n: 1024, sum: uint64(i) * 0x9e3779b97f4a7c15}}
		t.sp.reset(int64(i) * 1000)
		t.parked = true
		s.files = append(s.files, t)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.State(); err != nil {
			b.Fatal(err)
		}
	}
}
