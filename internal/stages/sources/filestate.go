package sources

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/etld/etld/internal/stages"
)

// fingerprintBytes is how much of a file's beginning identifies it, with
// its device and inode.
const fingerprintBytes = 1024

// fileID is a file's device and inode (path only where the platform has no
// inode numbers).
type fileID struct {
	dev, ino uint64
	path     string
}

// fingerprint is an FNV-1a hash of a file's first n bytes (n <= 1 KiB; a
// shorter file is hashed as far as it goes and the hash is extended as the
// file grows). It tells a rotated or truncated-and-rewritten file, or a
// reused inode, from the file that was read.
type fingerprint struct {
	n   int
	sum uint64
}

// readFingerprint hashes the first n bytes of f, or fewer when f is shorter.
func readFingerprint(f *os.File, n int) (fingerprint, error) {
	var buf [fingerprintBytes]byte
	m, err := preadAt(f, buf[:min(n, fingerprintBytes)], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fingerprint{}, fmt.Errorf("read fingerprint of %s: %w", f.Name(), err)
	}
	return fingerprint{n: m, sum: fnv1a(buf[:m])}, nil
}

// extendFingerprint rehashes up to fingerprintBytes of a file whose
// fingerprint covers fewer bytes, once the file has grown. It keeps the old
// fingerprint when the bytes it covered changed: checkTruncated sees that.
func (t *tailedFile) extendFingerprint() {
	var buf [fingerprintBytes]byte
	m, err := preadAt(t.f, buf[:], 0)
	if (err != nil && !errors.Is(err, io.EOF)) || m <= t.fp.n || fnv1a(buf[:t.fp.n]) != t.fp.sum {
		return
	}
	t.fp = fingerprint{n: m, sum: fnv1a(buf[:m])}
}

// fnv1a is the 64-bit FNV-1a hash of b.
func fnv1a(b []byte) uint64 {
	const offset64, prime64 = 14695981039346656037, 1099511628211
	h := uint64(offset64)
	for _, c := range b {
		h ^= uint64(c)
		h *= prime64
	}
	return h
}

// FilePosition is the resumable state of one file read by a file source:
// which file (device, inode and a fingerprint of its first bytes) and the
// offset just past the last line delivered by Read. It is plain data so a
// checkpoint can store it (JSON tags included) and give it back to
// FileSource.SetPositions after a restart.
type FilePosition struct {
	Path           string `json:"path"`            // name under which the file was last seen
	Dev            uint64 `json:"dev"`             // device number
	Inode          uint64 `json:"inode"`           // inode number
	FingerprintLen int    `json:"fingerprint_len"` // bytes hashed, at most 1024
	Fingerprint    uint64 `json:"fingerprint"`     // FNV-1a of the first FingerprintLen bytes
	Offset         int64  `json:"offset"`          // next byte to read: just past the last delivered line
}

// tailedFile is the state of one open input file. Everything needed to
// resume it is in position().
type tailedFile struct {
	path   string         // current name (updated on rename)
	origin *stages.Origin // shared by every record of this file; Path is the name at discovery
	f      *os.File       // nil before open and after close
	id     fileID
	fp     fingerprint
	sp     lineSplitter // sp.resume() is the resumable offset

	gone      bool          // no longer found under a name matching the glob: drain, then close
	goneTicks int           // poll ticks since gone was set
	lastErr   string        // last read error logged, to log a persistent error once
	finished  bool          // read to its end (finite, gated reading)
	atEOF     bool          // the last read reached the end of the file (follow)
	lastData  time.Time     // when a read last got data (follow, multiline timeout)
	queued    bool          // follow: in FileSource.queue, read by the next pass
	lru       *list.Element // follow, open: its place in FileSource.lru
	parked    bool          // follow: closed for max_open_files; opened again when it changes

	// The encoding of the position up to its offset (see State), and
	// the name, identity and fingerprint it was made for.
	enc     []byte
	encPath string
	encID   fileID
	encFP   fingerprint
}

// readPos is the file offset of the next byte to read.
func (t *tailedFile) readPos() int64 { return t.sp.pos + int64(t.sp.buffered()) }

// hasPosition reports whether the file's position is worth keeping: it is
// open, parked, or was read or identified.
func (t *tailedFile) hasPosition() bool {
	return t.f != nil || t.parked || t.sp.done > 0 || t.fp.n > 0
}

// position returns the file's resumable state.
func (t *tailedFile) position() FilePosition {
	return FilePosition{
		Path: t.path, Dev: t.id.dev, Inode: t.id.ino,
		FingerprintLen: t.fp.n, Fingerprint: t.fp.sum,
		Offset: t.sp.resume(),
	}
}

// close closes the file descriptor, if open.
func (t *tailedFile) close() error {
	if t.f == nil {
		return nil
	}
	err := t.f.Close()
	t.f = nil
	return err
}
