package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDiskFullOutput: the output directory is a 1 MiB tmpfs, almost
// filled by another file, so the file sink gets ENOSPC (SPEC §3.4). etld
// must keep running and retry with backoff, holding the input back:
// the failure is logged once, etld_sink_retries_total keeps growing,
// /readyz says which sink fails. It is then killed with -9 and restarted
// while the disk is still full (the restart rolls the output back and
// fails the same way). Once the filler file is deleted, output resumes
// and the run finishes by itself (exit 0): every record is in the output
// (rotated and gzipped segments included) exactly once.
//
// It needs root (to mount the tmpfs) and skips otherwise.
func TestDiskFullOutput(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a 1 MiB tmpfs as the output directory (a real ENOSPC); the sink's unit tests inject ENOSPC instead")
	}
	dir := t.TempDir()
	outDir := filepath.Join(dir, "out")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", outDir, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		t.Skipf("cannot mount a 1 MiB tmpfs on %s (%v): no real ENOSPC here; the sink's unit tests inject it", outDir, err)
	}
	// Cleanups run last-registered first: etld (started below) is killed
	// before the unmount, which comes before t.TempDir's removal.
	t.Cleanup(func() {
		if err := syscall.Unmount(outDir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", outDir, err)
		}
	})
	// Leave 96 KiB free: less than the output, compressed or not.
	var st syscall.Statfs_t
	if err := syscall.Statfs(outDir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	filler := filepath.Join(outDir, "filler")
	writeFile(t, outDir, "filler", make([]byte, free-96<<10))

	const perFeed = 8000
	feeds := []string{"alpha", "beta", "gamma", "delta"}
	var want []string
	for _, f := range feeds {
		data, keys := feed(f, 0, perFeed)
		writeFile(t, dir, filepath.Join("in", f+".jsonl"), data)
		want = append(want, keys...)
	}
	var cfgText strings.Builder
	cfgText.WriteString("version: 1\ncheckpoint_interval: 100ms\nsources:\n")
	for _, f := range feeds {
		fmt.Fprintf(&cfgText, "  %s: { type: file, path: in/%s.jsonl, follow: false }\n", f, f)
	}
	fmt.Fprintf(&cfgText, `workers:
  parse:
    inputs: [%s]
    concurrency: 4
    steps:
      - parse_json: {}
      - set: { crash: k9 }
sinks:
  out:
    type: file
    inputs: [parse]
    path: out/data/out.jsonl
    rotate: { max_size: 64KiB, gzip: true }
`, strings.Join(feeds, ", "))
	cfg := writeConfig(t, dir, "full.yaml", cfgText.String())
	state := filepath.Join(dir, "state")
	out := filepath.Join(outDir, "data", "out.jsonl")
	args := runArgs(cfg, state, "--admin", "127.0.0.1:0")
	failing := func(p *proc) int {
		return strings.Count(p.stderr.String(), `failed; retrying with backoff`)
	}

	for round := 1; round <= 2; round++ {
		p := startEtld(t, dir, nil, args...)
		p.eventually("the sink reports a failed write or flush (log \"sink ... failed; retrying\")", func() bool { return failing(p) > 0 })
		if s := p.stderr.String(); !strings.Contains(s, "no space left on device") {
			t.Errorf("run %d: the log does not say \"no space left on device\":\n%s", round, tail(s, 4096))
		}
		addr := crashAdminAddr(t, p)
		p.eventually("etld_sink_retries_total reaches 3 (etld keeps retrying)", func() bool {
			return crashMetric(addr, "etld_sink_retries_total", `stage="out"`) >= 3
		})
		p.eventually(`/readyz answers 503 naming sink "out"`, func() bool {
			code, body := crashGet(addr, "/readyz")
			return code == http.StatusServiceUnavailable && strings.Contains(body, `"out"`)
		})
		if n := failing(p); n != 1 {
			t.Errorf("run %d: the fault was logged %d times while it lasted, want once", round, n)
		}
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(line, `"message":"output rolled back`) {
				t.Logf("run %d: %s", round, line)
			}
		}
		if round == 1 {
			p.kill()
			t.Logf("killed with -9 while the disk is full: %s", crashDescribeOutput(out))
			continue
		}
		// Free the space: output resumes and the run finishes.
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		p.expectExit(p.wait(), 0, "the run after the disk has room again")
		if n, ok := failing(p), strings.Count(p.stderr.String(), "works again; resuming"); ok != n {
			t.Errorf("the fault was logged %d times and its end %d times: want each episode logged once when it starts and once when it ends", n, ok)
		}
	}
	checkExactlyOnce(t, "output after ENOSPC", want, crashKeys(t, "output", crashReadOutput(t, out)))
	crashCheckFinalState(t, filepath.Join(state, "full.json"), "out", out)
}

// crashAdminAddr waits for etld to log its admin address and returns it.
func crashAdminAddr(t testing.TB, p *proc) string {
	t.Helper()
	var addr string
	p.eventually("the admin server listens (log \"admin HTTP listening\")", func() bool {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			if !strings.Contains(line, `"message":"admin HTTP listening"`) {
				continue
			}
			var v struct {
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &v) == nil && v.Addr != "" {
				addr = v.Addr
				return true
			}
		}
		return false
	})
	return addr
}

// crashHTTP talks to etld's admin server. It keeps no idle connection
// (and so no goroutine) after a request: TestMain checks for leaks.
var crashHTTP = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// crashGet returns the status code and body of GET http://addr+path, or
// 0 on a connection error.
func crashGet(addr, path string) (int, string) {
	resp, err := crashHTTP.Get("http://" + addr + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// crashMetric returns the value of the first sample of metric whose
// labels contain label, or -1.
func crashMetric(addr, metric, label string) float64 {
	code, body := crashGet(addr, "/metrics")
	if code != http.StatusOK {
		return -1
	}
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, metric+"{") || !strings.Contains(line, label) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return -1
		}
		return v
	}
	return -1
}

// crashDescribeOutput lists the output files of path with their sizes.
func crashDescribeOutput(path string) string {
	l := crashScan(path)
	var b strings.Builder
	if l.active != nil {
		fmt.Fprintf(&b, "%s %d bytes", l.active.name, l.active.size)
	}
	fmt.Fprintf(&b, ", %d sealed segments", len(l.sealed))
	if len(l.tmp) > 0 {
		fmt.Fprintf(&b, ", other files %v", l.tmp)
	}
	return b.String()
}

// TestDiskFullAtRestart: etld is killed with -9 right after it sealed
// and compressed the segment that its last checkpoint names as the
// active one, and the disk is then filled up completely. Rolling back at
// the restart means decompressing that segment back into the active
// file, which needs space. Whatever etld does then (retry until there is
// room, or refuse to start with exit 1 and the ENOSPC in its error), it
// must not lose or duplicate a committed line: once the space is freed,
// a run finishes (exit 0) with every line in the output exactly once.
// The test logs which of the two it saw.
func TestDiskFullAtRestart(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a 1 MiB tmpfs as the output directory (a real ENOSPC)")
	}
	dir := t.TempDir()
	outDir := filepath.Join(dir, "out")
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", outDir, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		t.Skipf("cannot mount a 1 MiB tmpfs on %s: %v", outDir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(outDir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", outDir, err)
		}
	})
	in := filepath.Join(dir, "in", "a.jsonl")
	data, want := feed("a", 0, 1000) // about 110 KB: less than a segment
	writeFile(t, dir, "in/a.jsonl", data)
	cfg := writeConfig(t, dir, "restart-full.yaml", `version: 1
checkpoint_interval: 1h
sources:
  a: { type: file, path: in/a.jsonl, follow: false }
sinks:
  out:
    type: file
    inputs: [a]
    path: out/out.jsonl
    rotate: { max_size: 256KiB, gzip: true }
`)
	state := filepath.Join(dir, "state")
	out := filepath.Join(outDir, "out.jsonl")

	// Run 1 commits segment 1 with some 110 KB in it.
	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.expectExit(p.wait(), 0, "the first run")

	// Run 2 (no periodic checkpoint) seals and compresses segment 1 and
	// is killed at once.
	more, keys := feed("a", 1000, 20000)
	appendFile(t, in, more)
	want = append(want, keys...)
	p = startEtld(t, dir, nil, runArgs(cfg, state)...)
	gz := out + ".000001.gz"
	if crashPoll(p, "segment 1 is compressed", crashPollEvery, func() bool { return fileMTime(gz) != 0 }) {
		t.Fatalf("run 2 finished (exit %d) before it sealed segment 1", p.exitCode())
	}
	p.kill()
	t.Logf("killed after sealing segment 1: %s", crashDescribeOutput(out))

	// Fill the disk up.
	filler := filepath.Join(outDir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !strings.Contains(err.Error(), "no space left") {
				t.Fatal(err)
			}
			break
		}
	}
	f.Close()

	p = startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.eventually("etld fails on the full disk (exits, or logs \"sink ... failed; retrying\")", func() bool {
		return p.exited() || strings.Contains(p.stderr.String(), "failed; retrying with backoff")
	})
	exited := p.exited()
	if exited {
		p.expectExit(p.exitCode(), 1, "a start with a full disk")
		if s := p.stderr.String(); !strings.Contains(s, "no space left on device") {
			t.Errorf("the start failed without naming ENOSPC:\n%s", tail(s, 4096))
		}
		t.Logf("etld refused to start (exit 1) while the rollback could not decompress segment 1: %s", crashLastError(p.stderr.String()))
	} else {
		t.Logf("etld keeps running and retries while the disk is full")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if exited {
		p = startEtld(t, dir, nil, runArgs(cfg, state)...)
	}
	p.expectExit(p.wait(), 0, "the run once the disk has room")
	checkExactlyOnce(t, "output after a restart on a full disk", want, keysOf(t, "output", crashReadOutput(t, out)))
}

// crashLastError returns the "error" of the last error-level log line.
func crashLastError(stderr string) string {
	var last string
	for _, line := range strings.Split(stderr, "\n") {
		var v struct {
			Level string `json:"level"`
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(line), &v) == nil && v.Level == "error" {
			last = v.Error
		}
	}
	return last
}

// TestStateDirUnwritable: the state dir exists but no checkpoint can be
// saved in it (a read-only filesystem, as a full disk or wrong
// permissions would do), and there is no earlier checkpoint. Whatever
// etld does with that (refuse to start, or run on), a later run with a
// writable state dir must not write a line a second time: without any
// commit, nothing that was written can be rolled back, so output
// written by a run that could not save a single checkpoint is output the
// next run duplicates.
func TestStateDirUnwritable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	var writable func() // makes the state dir writable again
	if os.Geteuid() == 0 {
		if err := syscall.Mount("tmpfs", state, "tmpfs", syscall.MS_RDONLY, "size=64k"); err != nil {
			t.Skipf("cannot mount a read-only tmpfs on the state dir: %v", err)
		}
		writable = func() {
			if err := syscall.Unmount(state, syscall.MNT_DETACH); err != nil {
				t.Fatal(err)
			}
		}
	} else {
		if err := os.Chmod(state, 0o555); err != nil {
			t.Fatal(err)
		}
		writable = func() {
			if err := os.Chmod(state, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	data, want := feed("s", 0, 5000)
	writeFile(t, dir, "in/s.jsonl", data)
	cfg := writeConfig(t, dir, "nostate.yaml", `version: 1
sources:
  s: { type: file, path: in/s.jsonl, follow: false }
sinks:
  out: { type: file, inputs: [s], path: out/out.jsonl }
`)
	out := filepath.Join(dir, "out", "out.jsonl")

	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	code := p.wait()
	writable()
	t.Logf("with an unwritable state dir etld exited %d, %d lines out; its errors: %s", code, (&lineCounter{path: out}).count(), crashLastError(p.stderr.String()))

	p = startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.expectExit(p.wait(), 0, "the run with a writable state dir")
	checkExactlyOnce(t, "output after a run that could not save a checkpoint, then a normal one", want, outputKeys(t, out))
}
