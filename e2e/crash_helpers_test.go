package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Helpers of the crash tests (crash_*_test.go). Every name starts with
// "crash" so that it cannot collide with the other e2e files.

// crashPollEvery is how often the crash tests look at the output when
// they wait for a moment to kill etld: finer than pollEvery.
const crashPollEvery = time.Millisecond

// crashSeed returns the seed of a test's pseudo-random choices and logs
// it: $ETLD_E2E_SEED when set (to replay a failure), else the clock.
func crashSeed(t testing.TB) int64 {
	t.Helper()
	seed := time.Now().UnixNano()
	if s := os.Getenv("ETLD_E2E_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("ETLD_E2E_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("seed %d (replay with ETLD_E2E_SEED=%d)", seed, seed)
	return seed
}

// crashPoll polls cond every `every` until it holds (and returns false),
// or until etld has exited without it holding (and returns true: a
// finite pipeline that finished first). The hang guard waitTimeout fails
// the test. It is eventually with a finer tick, so that a kill lands
// close to the moment chosen (for example while a segment is being
// compressed).
func crashPoll(p *proc, what any, every time.Duration, cond func() bool) (exited bool) {
	p.t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if cond() {
			return false
		}
		if p.exited() {
			return !cond()
		}
		select {
		case <-deadline.C:
			p.t.Fatalf("still not true after %v: %s", waitTimeout, describe(what))
		case <-tick.C:
		}
	}
}

// crashSegment is one file of a rotating file sink's output.
type crashSegment struct {
	name string // file name in the output directory
	seq  uint64 // 0 for the active file
	gz   bool
	size int64 // on disk
}

// crashLayout lists the output of a file sink writing path: the active
// file, sealed segments (path.NNNNNN and path.NNNNNN.gz) and temporary
// files (path.NNNNNN.gz.tmp, path.recover.tmp, ...), by name.
type crashLayout struct {
	active *crashSegment
	sealed []crashSegment // by seq, then plain before gz
	tmp    []string
}

// crashScan lists the output of path. Files may come and go while etld
// writes: one that vanishes between the listing and its stat is left out.
func crashScan(path string) crashLayout {
	var l crashLayout
	dir, base := filepath.Dir(path), filepath.Base(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return l
	}
	for _, e := range entries {
		name := e.Name()
		if name != base && !strings.HasPrefix(name, base+".") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if name == base {
			l.active = &crashSegment{name: name, size: fi.Size()}
			continue
		}
		rest := strings.TrimPrefix(name, base+".")
		num, gz := strings.CutSuffix(rest, ".gz")
		seq, err := strconv.ParseUint(num, 10, 64)
		if err != nil || len(num) < 6 {
			l.tmp = append(l.tmp, name)
			continue
		}
		l.sealed = append(l.sealed, crashSegment{name: name, seq: seq, gz: gz, size: fi.Size()})
	}
	slices.SortFunc(l.sealed, func(a, b crashSegment) int {
		if a.seq != b.seq {
			if a.seq < b.seq {
				return -1
			}
			return 1
		}
		if a.gz == b.gz {
			return 0
		}
		if b.gz {
			return -1
		}
		return 1
	})
	return l
}

// crashProgress estimates how many bytes the sink has written to path:
// the active file, plus every sealed segment once, a compressed one
// counted as maxSize (a sealed segment never exceeds it). It is cheap
// (one directory listing) and grows with the output; a rollback at a
// restart shrinks it.
func crashProgress(path string, maxSize int64) int64 {
	l := crashScan(path)
	var n int64
	if l.active != nil {
		n = l.active.size
	}
	seen := map[uint64]bool{}
	for _, s := range l.sealed {
		if seen[s.seq] {
			continue
		}
		seen[s.seq] = true
		if s.gz {
			n += maxSize
		} else {
			n += s.size
		}
	}
	return n
}

// crashReadOutput returns the lines of every output file of path: the
// sealed segments in sequence order (gzip ones decompressed), then the
// active file. It reads every file a user would read, so a segment
// present both plain and compressed is read twice (and shows up as
// duplicates). It fails the test if the layout is not clean: sealed
// numbers not 1..N, a segment both plain and compressed, temporary files
// left behind.
func crashReadOutput(t testing.TB, path string) [][]byte {
	t.Helper()
	return crashReadSegments(t, path, true)
}

// crashReadSegments is crashReadOutput; with contiguous false, sealed
// numbers need not start at 1 (rotate.keep removes the oldest).
func crashReadSegments(t testing.TB, path string, contiguous bool) [][]byte {
	t.Helper()
	l := crashScan(path)
	if len(l.tmp) > 0 {
		t.Errorf("output directory holds leftovers after a clean stop: %v", l.tmp)
	}
	var lines [][]byte
	for i, s := range l.sealed {
		if i > 0 && l.sealed[i-1].seq == s.seq {
			t.Errorf("segment %d exists both plain and compressed: %s and %s", s.seq, l.sealed[i-1].name, s.name)
		}
		data := crashReadSegment(t, filepath.Join(filepath.Dir(path), s.name))
		lines = append(lines, splitLines(t, s.name, data)...)
	}
	seqs := map[uint64]bool{}
	for _, s := range l.sealed {
		seqs[s.seq] = true
	}
	for seq := uint64(1); contiguous && seq <= uint64(len(seqs)); seq++ {
		if !seqs[seq] {
			t.Errorf("sealed segments are not numbered 1..%d: %d is missing (%d sealed files)", len(seqs), seq, len(l.sealed))
			break
		}
	}
	if l.active != nil {
		lines = append(lines, splitLines(t, l.active.name, readFile(t, path))...)
	}
	return lines
}

// crashReadSegment returns the content of a sealed segment, decompressed
// when it ends in .gz.
func crashReadSegment(t testing.TB, name string) []byte {
	t.Helper()
	data := readFile(t, name)
	if !strings.HasSuffix(name, ".gz") {
		return data
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(name), err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(name), err)
	}
	return out
}

// crashSuffix is what the crash tests' worker appends to every record
// (set: { crash: k9 }).
const crashSuffix = `,"crash":"k9"}`

// crashKeys returns the key of every line (see keysOf), accepting a line
// that is exactly the record appendRecord made plus crashSuffix without a
// JSON parse (slow under -race).
func crashKeys(t testing.TB, what string, lines [][]byte) []string {
	t.Helper()
	return recordKeys(t, what, lines, crashSuffix)
}

// crashCheckpoint is the part of a checkpoint file the tests look at.
type crashCheckpoint struct {
	Version int                        `json:"version"`
	Epoch   uint64                     `json:"epoch"`
	Sources map[string]json.RawMessage `json:"sources"`
	Sinks   map[string]json.RawMessage `json:"sinks"`
}

// crashSinkState is a file sink's committed state.
type crashSinkState struct {
	Path string `json:"path"`
	Seq  uint64 `json:"seq"`
	Size int64  `json:"size"`
}

// crashSourcePos is one file position of a file source's committed state.
type crashSourcePos struct {
	Path   string `json:"path"`
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
}

// crashLoadCheckpoint reads and decodes a checkpoint file. ok is false
// when it does not exist; a file that exists but does not decode is an
// error.
func crashLoadCheckpoint(path string) (cp crashCheckpoint, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, err
	}
	if err := json.Unmarshal(b, &cp); err != nil {
		return cp, true, fmt.Errorf("%s does not decode (%d bytes): %w", filepath.Base(path), len(b), err)
	}
	return cp, true, nil
}

// committedPositions is the committed state of file source src in the
// checkpoint ckpt: nil when there is none or it cannot be read right now.
func committedPositions(ckpt, src string) []crashSourcePos {
	cp, ok, err := crashLoadCheckpoint(ckpt)
	if err != nil || !ok {
		return nil
	}
	var ps []crashSourcePos
	if json.Unmarshal(cp.Sources[src], &ps) != nil {
		return nil
	}
	return ps
}

// crashEpoch is the epoch of the checkpoint at path, 0 when there is none
// or it cannot be read right now.
func crashEpoch(path string) uint64 {
	cp, _, err := crashLoadCheckpoint(path)
	if err != nil {
		return 0
	}
	return cp.Epoch
}

// crashCheckFinalState checks the checkpoint left by a clean stop: every
// file of every source is committed at its end, and the sink's state is
// the active file with its size, numbered after the last sealed segment.
func crashCheckFinalState(t testing.TB, ckpt, sink, out string) {
	t.Helper()
	cp, ok, err := crashLoadCheckpoint(ckpt)
	if err != nil || !ok {
		t.Errorf("final checkpoint: exists %v, %v", ok, err)
		return
	}
	for id, raw := range cp.Sources {
		var ps []crashSourcePos
		if err := json.Unmarshal(raw, &ps); err != nil {
			t.Errorf("final checkpoint, source %s: %v", id, err)
			continue
		}
		for _, p := range ps {
			if fi, err := os.Stat(p.Path); err == nil && fi.Size() != p.Offset {
				t.Errorf("final checkpoint, source %s: %s committed at offset %d, the file has %d bytes", id, filepath.Base(p.Path), p.Offset, fi.Size())
			}
		}
	}
	var st crashSinkState
	if err := json.Unmarshal(cp.Sinks[sink], &st); err != nil {
		t.Errorf("final checkpoint, sink %s: %v (%s)", sink, err, cp.Sinks[sink])
		return
	}
	l := crashScan(out)
	var size int64
	if l.active != nil {
		size = l.active.size
	}
	var last uint64
	if n := len(l.sealed); n > 0 {
		last = l.sealed[n-1].seq
	}
	if st.Path != out || st.Size != size || st.Seq != last+1 {
		t.Errorf("final checkpoint, sink %s: %+v; on disk the active file has %d bytes after %d sealed segments", sink, st, size, last)
	}
}
