package rotate

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Recovery says what Recover did.
type Recovery struct {
	Removed   []string // segments written entirely after the commit
	Restored  string   // the sealed segment moved back to the active name, if any
	Truncated int64    // bytes cut from the active file
	// Missing is the number of committed bytes not found on disk: the
	// file was shortened or deleted behind etld's back, or the machine
	// crashed with fsync: never. Nothing can bring them back.
	Missing int64
}

// Recover rolls the output at c.Path back to the committed segment c,
// before Open: everything written after the commit is removed, so that
// re-reading the sources from the matching positions rewrites it exactly
// once. Segments sealed after the commit (number above c.Seq) are
// removed; when segment c.Seq itself was sealed (and maybe compressed)
// after the commit, it becomes the active file again; the active file is
// then truncated to c.Size. With noSync false, the result is fsynced.
func Recover(c Segment, noSync bool) (Recovery, error) {
	var rec Recovery
	if c.Path == "" || c.Seq == 0 {
		return rec, errors.New("rotate: recover: empty committed segment")
	}
	dir, base := filepath.Dir(c.Path), filepath.Base(c.Path)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		rec.Missing = c.Size
		return rec, nil
	}
	if err != nil {
		return rec, fmt.Errorf("recover %s: %w", c.Path, err)
	}
	var committedPlain, committedGz, sealedAfter bool
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok || e.IsDir() {
			continue
		}
		num, _ := strings.CutSuffix(strings.TrimSuffix(rest, ".tmp"), ".gz")
		if !isDigits(num) {
			continue
		}
		seq, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			continue
		}
		full := filepath.Join(dir, e.Name())
		switch {
		case seq > c.Seq:
			if err := os.Remove(full); err != nil && !errors.Is(err, os.ErrNotExist) {
				return rec, fmt.Errorf("recover %s: %w", c.Path, err)
			}
			rec.Removed = append(rec.Removed, full)
			sealedAfter = true
		case seq == c.Seq && rest == num:
			committedPlain = true
		case seq == c.Seq && rest == num+".gz":
			committedGz = true
		}
	}
	sealedName := SealedName(c.Path, c.Seq)
	switch {
	case committedPlain:
		// Sealed after the commit: the active file holds only later data.
		if err := os.Rename(sealedName, c.Path); err != nil {
			return rec, fmt.Errorf("recover %s: %w", c.Path, err)
		}
		rec.Restored = sealedName
		_ = os.Remove(sealedName + ".gz")
	case committedGz:
		if err := gunzipTo(sealedName+".gz", c.Path, c.Size, noSync); err != nil {
			return rec, fmt.Errorf("recover %s: %w", c.Path, err)
		}
		rec.Restored = sealedName + ".gz"
		if err := os.Remove(sealedName + ".gz"); err != nil {
			return rec, fmt.Errorf("recover %s: %w", c.Path, err)
		}
	}
	if !committedPlain && !committedGz && sealedAfter {
		// Segment c.Seq was sealed after the commit and then removed by
		// keep: the active file holds only later data. Empty it; the
		// committed bytes are gone with the pruned segment.
		st, err := os.Stat(c.Path)
		if err == nil && st.Size() > 0 {
			if err := os.Truncate(c.Path, 0); err != nil {
				return rec, fmt.Errorf("recover %s: %w", c.Path, err)
			}
			rec.Truncated = st.Size()
		}
		rec.Missing = c.Size
		return rec, syncPath(c.Path, dir, noSync)
	}
	st, err := os.Stat(c.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		rec.Missing = c.Size
	case err != nil:
		return rec, fmt.Errorf("recover %s: %w", c.Path, err)
	case st.Size() > c.Size:
		if err := os.Truncate(c.Path, c.Size); err != nil {
			return rec, fmt.Errorf("recover %s: %w", c.Path, err)
		}
		rec.Truncated = st.Size() - c.Size
	case st.Size() < c.Size:
		rec.Missing = c.Size - st.Size()
	}
	return rec, syncPath(c.Path, dir, noSync)
}

// syncPath fsyncs a file and its directory, unless noSync.
func syncPath(path, dir string, noSync bool) error {
	if noSync {
		return nil
	}
	if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("recover %s: fsync: %w", path, err)
		}
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("recover %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("recover %s: fsync directory: %w", path, err)
	}
	return nil
}

// gunzipTo writes the first n bytes of the gzip file src to dst, replacing
// it atomically.
func gunzipTo(src, dst string, n int64, noSync bool) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return err
	}
	tmp := dst + ".recover.tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if _, err := io.Copy(out, io.LimitReader(zr, n)); err != nil {
		out.Close()
		return err
	}
	if !noSync {
		if err := out.Sync(); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
