// Package journaltest writes real journal files for the tests of the
// journald source: entries in the journal export format, turned into a
// journal file by systemd-journal-remote (Debian package
// systemd-journal-remote), which journalctl --directory then reads.
package journaltest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Boot ids of the tests' two boots.
const (
	Boot1 = "11111111111111111111111111111111"
	Boot2 = "22222222222222222222222222222222"
)

// Unit is the _SYSTEMD_UNIT of the entries Append writes.
const Unit = "etld-test.service"

// Remote returns the path of systemd-journal-remote, or skips t when it
// is not installed.
func Remote(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("journalctl"); err != nil {
		t.Skip("journalctl is not installed (Debian package systemd)")
	}
	for _, p := range []string{"/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("systemd-journal-remote"); err == nil {
		return p
	}
	t.Skip("systemd-journal-remote is not installed (Debian package systemd-journal-remote; .ci/run installs it)")
	return ""
}

// Export returns entries seq from..from+n-1 of boot in the journal export
// format: MESSAGE "entry <seq>", a SEQ field, the test unit, and a
// realtime timestamp of now (plus seq microseconds, so they stay in order).
func Export(boot string, from, n int) []byte {
	var b bytes.Buffer
	now := time.Now().UnixMicro()
	for seq := from; seq < from+n; seq++ {
		fmt.Fprintf(&b, "__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=%s\n_HOSTNAME=etld-test\n_SYSTEMD_UNIT=%s\nPRIORITY=6\nSEQ=%d\nMESSAGE=entry %d\n\n",
			now+int64(seq), 1000+int64(seq), boot, Unit, seq, seq)
	}
	return b.Bytes()
}

// Append appends entries seq from..from+n-1 of boot (see Export) to the
// journal file at path, creating it. journalctl following the file sees
// them.
func Append(t testing.TB, remote, path, boot string, from, n int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(remote, "--split-mode=none", "--compress=no", "--output="+path, "-")
	cmd.Stdin = bytes.NewReader(Export(boot, from, n))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", remote, err, out)
	}
}

// Entry is what the tests look at in a record of the journald source.
type Entry struct {
	Boot   string `json:"_BOOT_ID"`
	Seq    string `json:"SEQ"`
	Cursor string `json:"__CURSOR"`
	Msg    string `json:"MESSAGE"`
}

// Parse decodes a record (one of journalctl's JSON objects).
func Parse(raw []byte) (Entry, error) {
	var e Entry
	err := json.Unmarshal(raw, &e)
	return e, err
}

// Key is "<boot prefix>-<seq>" for an entry: "b1-17" for SEQ 17 of Boot1.
func Key(e Entry) string {
	if len(e.Boot) > 0 {
		return "b" + e.Boot[:1] + "-" + e.Seq
	}
	return "b?-" + e.Seq
}

// Keys are the keys of entries from..from+n-1 of boot.
func Keys(boot string, from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "b" + boot[:1] + "-" + strconv.Itoa(from+i)
	}
	return out
}
