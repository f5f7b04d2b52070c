package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Hang guards. They only bound how long a test waits for something that
// should happen; no assertion depends on how fast etld is.
const (
	exitTimeout = 60 * time.Second // a run that should end by itself or after a signal
	waitTimeout = 60 * time.Second // a condition polled with eventually
	pollEvery   = 10 * time.Millisecond
)

// ---------------------------------------------------------------------------
// Running etld

// proc is one running etld process.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdout *lockedBuffer
	stderr *lockedBuffer
	done   chan struct{} // closed once the process has exited and its output is copied
	err    error         // cmd.Wait's result; read after done
}

// runArgs are the arguments of `etld run` used by every test: one
// pipeline file, a private state dir, no admin server, JSON logs.
func runArgs(cfg, stateDir string, extra ...string) []string {
	args := []string{"run", "-c", cfg, "--state-dir", stateDir, "--admin", "off", "--log-format", "json"}
	return append(args, extra...)
}

// startEtld starts etld with args in dir. stdin may be nil (no input).
// Its stdout and stderr are captured; stderr is logged if the test fails.
// The process is killed at the end of the test if it is still running.
func startEtld(t testing.TB, dir string, stdin io.Reader, args ...string) *proc {
	t.Helper()
	return startEtldOut(t, dir, stdin, nil, args...)
}

// startEtldOut is startEtld with stdout going to the given file (nil:
// captured in p.stdout).
func startEtldOut(t testing.TB, dir string, stdin io.Reader, stdout *os.File, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(etldBin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdin = stdin
	p.cmd.Stdout = p.stdout
	if stdout != nil {
		p.cmd.Stdout = stdout
	}
	p.cmd.Stderr = p.stderr
	// ETLD_CONFIG and STATE_DIRECTORY of the developer's environment must
	// not leak in; the tests always pass -c and --state-dir.
	p.cmd.Env = append(os.Environ(), "ETLD_CONFIG=", "STATE_DIRECTORY=")
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start etld %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("etld %s\n--- stderr (last 16 KiB) ---\n%s", strings.Join(args, " "), tail(p.stderr.String(), 16<<10))
		}
	})
	return p
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit status; -1 when killed by a signal. Call after done.
func (p *proc) exitCode() int {
	if p.cmd.ProcessState == nil {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// signal sends sig to the process.
func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("send %v to etld: %v", sig, err)
	}
}

// wait waits for the process to exit by itself and returns its exit code.
func (p *proc) wait() int {
	p.t.Helper()
	return p.waitWithin(exitTimeout, "")
}

// waitWithin is wait with another hang guard; why, if not empty, says
// what a hang means.
func (p *proc) waitWithin(guard time.Duration, why string) int {
	p.t.Helper()
	t := time.NewTimer(guard)
	defer t.Stop()
	select {
	case <-p.done:
		return p.exitCode()
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("etld did not exit within %v (killed) %s", guard, why)
		return -1
	}
}

// stop sends SIGTERM and waits for the exit code.
func (p *proc) stop() int {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	return p.wait()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	<-p.done
}

// expectExit fails the test unless the process exited with code want.
func (p *proc) expectExit(got, want int, what string) {
	p.t.Helper()
	if got != want {
		p.t.Fatalf("%s: etld exited with %d, want %d (wait: %v)", what, got, want, p.err)
	}
}

// eventually polls cond until it holds, failing the test if etld exits
// first or the hang guard expires. what describes the condition; it may
// be a func() string to describe the state at the time of the failure.
func (p *proc) eventually(what any, cond func() bool) {
	p.t.Helper()
	eventually(p.t, waitTimeout, func() bool {
		if cond() {
			return true
		}
		if p.exited() {
			p.t.Fatalf("etld exited (code %d) while waiting for: %s", p.exitCode(), describe(what))
		}
		return false
	}, what)
}

// logged reports whether etld logged a message starting with msg.
func (p *proc) logged(msg string) bool {
	return strings.Contains(p.stderr.String(), `"message":"`+msg)
}

// eventually polls cond every pollEvery until it returns true, and fails
// the test with what (a string, or a func() string evaluated then) after
// timeout. Tests use it instead of sleeping.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, what any) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		if cond() {
			return
		}
		select {
		case <-deadline.C:
			if cond() {
				return
			}
			t.Fatalf("still not true after %v: %s", timeout, describe(what))
		case <-tick.C:
		}
	}
}

func describe(what any) string {
	switch w := what.(type) {
	case func() string:
		return w()
	case string:
		return w
	default:
		return fmt.Sprint(w)
	}
}

// lockedBuffer is a bytes.Buffer safe for the copying goroutine of exec
// and the test goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "...\n" + s[len(s)-n:]
}

// ---------------------------------------------------------------------------
// Files

// writeFile writes data to dir/rel, creating parent directories, and
// returns the absolute path.
func writeFile(t testing.TB, dir, rel string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeConfig writes a pipeline file into dir and returns its absolute
// path (relative paths in it resolve against its directory).
func writeConfig(t testing.TB, dir, name, yaml string) string {
	t.Helper()
	return writeFile(t, dir, name, []byte(yaml))
}

// appendFile appends data to path.
func appendFile(t testing.TB, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// readFile returns the content of path, or nil when it does not exist.
func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return b
}

// lineCounter counts the complete lines of a growing file, reading only
// what was appended since the last call.
type lineCounter struct {
	path  string
	off   int64
	lines int
	tail  []byte // the last bytes counted, to notice a rewrite
}

func (c *lineCounter) count() int {
	f, err := os.Open(c.path)
	if err != nil {
		return c.lines
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return c.lines
	}
	// Rolled back by a restart: count again. A rollback can be followed
	// by new output past the old end before the next count, so a smaller
	// size is not enough to notice it: the bytes before the offset must
	// still be the ones counted.
	if fi.Size() < c.off {
		c.off, c.lines, c.tail = 0, 0, nil
	} else if len(c.tail) > 0 {
		now := make([]byte, len(c.tail))
		if n, _ := f.ReadAt(now, c.off-int64(len(c.tail))); n != len(now) || !bytes.Equal(now, c.tail) {
			c.off, c.lines, c.tail = 0, 0, nil
		}
	}
	buf := make([]byte, 1<<20)
	for c.off < fi.Size() {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), fi.Size()-c.off)], c.off)
		c.lines += bytes.Count(buf[:n], []byte{'\n'})
		c.off += int64(n)
		if n > 0 {
			c.tail = append(c.tail, buf[:n]...)
			if len(c.tail) > 4096 {
				c.tail = append(c.tail[:0], c.tail[len(c.tail)-4096:]...)
			}
		}
		if err != nil || n == 0 {
			break
		}
	}
	return c.lines
}

// ---------------------------------------------------------------------------
// Records

// key is the unique key of record seq of feed.
func key(feed string, seq int) string { return feed + "-" + strconv.Itoa(seq) }

// isDebug reports whether record seq has level "debug" (one in ten).
func isDebug(seq int) bool { return seq%10 == 3 }

// amount is record seq's amount: exact in binary, so int(amount * 100)
// has one right answer.
func amount(seq int) float64 { return float64(seq%1000) + 0.25 }

// appendRecord appends record seq of feed as one JSON line without its
// newline. The key is the first field, so keyOf finds it fast.
func appendRecord(dst []byte, feed string, seq int) []byte {
	dst = append(dst, `{"key":"`...)
	dst = append(dst, key(feed, seq)...)
	dst = append(dst, `","feed":"`...)
	dst = append(dst, feed...)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendInt(dst, int64(seq), 10)
	dst = append(dst, `,"level":"`...)
	if isDebug(seq) {
		dst = append(dst, "debug"...)
	} else {
		dst = append(dst, "info"...)
	}
	dst = append(dst, `","amount":`...)
	dst = strconv.AppendFloat(dst, amount(seq), 'f', 2, 64)
	dst = append(dst, `,"msg":"record `...)
	dst = strconv.AppendInt(dst, int64(seq), 10)
	dst = append(dst, ` of `...)
	dst = append(dst, feed...)
	return append(dst, `"}`...)
}

// feed returns records from..from+n-1 of a feed as JSON lines, each with
// its newline, and their keys.
func feed(name string, from, n int) ([]byte, []string) {
	var b []byte
	keys := make([]string, 0, n)
	for seq := from; seq < from+n; seq++ {
		b = appendRecord(b, name, seq)
		b = append(b, '\n')
		keys = append(keys, key(name, seq))
	}
	return b, keys
}

// splitLines splits output into lines. Output must end with a newline:
// a sink never leaves a partial line behind.
func splitLines(t testing.TB, what string, data []byte) [][]byte {
	t.Helper()
	if len(data) == 0 {
		return nil
	}
	if data[len(data)-1] != '\n' {
		i := bytes.LastIndexByte(data, '\n')
		t.Errorf("%s: output ends with a partial line: %.200q", what, data[i+1:])
	}
	lines := bytes.Split(data, []byte{'\n'})
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// keysOf returns the "key" of every output line, failing the test for a
// line that is not one valid JSON object with a string key (a torn or
// interleaved line).
//
// A line that is exactly the record appendRecord makes for its key is
// accepted without a JSON parse: checking JSON is slow under -race, and
// most outputs are records passed through unchanged.
func keysOf(t testing.TB, what string, lines [][]byte) []string {
	t.Helper()
	return recordKeys(t, what, lines, "}")
}

// recordKeys is keysOf for records a worker extended the same way: the
// fast path accepts the record appendRecord makes with its closing brace
// replaced by end (`,"crash":"k9"}`; "}" for records passed through).
func recordKeys(t testing.TB, what string, lines [][]byte, end string) []string {
	t.Helper()
	keys := make([]string, 0, len(lines))
	bad := 0
	var canon []byte
	for i, l := range lines {
		if k, ok := recordKey(l, end, &canon); ok {
			keys = append(keys, k)
			continue
		}
		k, ok := keyOf(l)
		if !ok {
			if bad++; bad <= 5 {
				t.Errorf("%s: line %d is not a JSON object with a key: %.200q", what, i+1, l)
			}
			continue
		}
		keys = append(keys, k)
	}
	if bad > 5 {
		t.Errorf("%s: %d bad lines in all", what, bad)
	}
	return keys
}

// canonicalKey returns the key of line when line is byte for byte the
// record appendRecord makes for that key. buf is scratch space.
func canonicalKey(line []byte, buf *[]byte) (string, bool) { return recordKey(line, "}", buf) }

// recordKey returns the key of line when line is byte for byte the record
// appendRecord makes for that key with its closing brace replaced by end.
// buf is scratch space.
func recordKey(line []byte, end string, buf *[]byte) (string, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(`{"key":"`))
	if !ok {
		return "", false
	}
	i := bytes.IndexByte(rest, '"')
	if i < 0 {
		return "", false
	}
	k := string(rest[:i])
	feed, seq := splitKey(k)
	if key(feed, seq) != k {
		return "", false
	}
	*buf = appendRecord((*buf)[:0], feed, seq)
	*buf = append((*buf)[:len(*buf)-1], end...)
	return k, bytes.Equal(*buf, line)
}

// keyOf extracts the key of a JSON line; the line must be valid JSON.
func keyOf(line []byte) (string, bool) {
	if !json.Valid(line) {
		return "", false
	}
	var v struct {
		Key *string `json:"key"`
	}
	if err := json.Unmarshal(line, &v); err != nil || v.Key == nil {
		return "", false
	}
	return *v.Key, true
}

// outputKeys reads an output file and returns the keys of its lines.
func outputKeys(t testing.TB, path string) []string {
	t.Helper()
	return keysOf(t, filepath.Base(path), splitLines(t, filepath.Base(path), readFile(t, path)))
}

// checkExactlyOnce fails the test unless got holds every key of want
// exactly once and nothing else, listing the first few missing,
// duplicated and unexpected keys.
func checkExactlyOnce(t testing.TB, what string, want, got []string) {
	t.Helper()
	if msg := exactlyOnceDiff(want, got); msg != "" {
		t.Errorf("%s: %s", what, msg)
	}
}

// exactlyOnceDiff describes how got differs from "every key of want once";
// "" when it does not.
func exactlyOnceDiff(want, got []string) string {
	n := make(map[string]int, len(got))
	for _, k := range got {
		n[k]++
	}
	wanted := make(map[string]bool, len(want))
	var missing, dup, extra []string
	for _, k := range want {
		wanted[k] = true
		switch c := n[k]; {
		case c == 0:
			missing = append(missing, k)
		case c > 1:
			dup = append(dup, fmt.Sprintf("%s x%d", k, c))
		}
	}
	for k, c := range n {
		if !wanted[k] {
			extra = append(extra, fmt.Sprintf("%s x%d", k, c))
		}
	}
	if len(missing) == 0 && len(dup) == 0 && len(extra) == 0 {
		return ""
	}
	first := func(s []string) []string {
		slices.SortFunc(s, compareKeys)
		return s[:min(len(s), 8)]
	}
	return fmt.Sprintf("want %d records once each, got %d lines: lost %d %v, duplicated %d %v, unexpected %d %v",
		len(want), len(got), len(missing), first(missing), len(dup), first(dup), len(extra), first(extra))
}

// compareKeys orders "feed-seq" keys by feed, then numerically by seq.
func compareKeys(a, b string) int {
	fa, sa := splitKey(a)
	fb, sb := splitKey(b)
	if c := strings.Compare(fa, fb); c != 0 {
		return c
	}
	return sa - sb
}

func splitKey(k string) (string, int) {
	k, _, _ = strings.Cut(k, " ")
	i := strings.LastIndexByte(k, '-')
	if i < 0 {
		return k, 0
	}
	n, err := strconv.Atoi(k[i+1:])
	if err != nil {
		return k, 0
	}
	return k[:i], n
}

// waitForLines polls until the file at path has at least n lines; on a
// timeout it reports what is lost and duplicated against want.
func (p *proc) waitForLines(path string, n int, want []string) {
	p.t.Helper()
	c := &lineCounter{path: path}
	p.eventually(func() string {
		got := keysOf(p.t, filepath.Base(path), splitLines(p.t, filepath.Base(path), readFile(p.t, path)))
		return fmt.Sprintf("%s has %d of %d lines: %s", filepath.Base(path), c.count(), n, exactlyOnceDiff(want, got))
	}, func() bool { return c.count() >= n })
}
