package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// tapPipeline parses, marks (set) and routes the records of one followed
// file; one worker goroutine keeps the file's order, so that a tap sees
// the records in sequence.
const tapPipeline = `version: 1
dead_letter: rejects
sources:
  app: { type: file, path: in.jsonl, follow: true }
workers:
  enrich:
    inputs: [app]
    concurrency: 1
    steps:
      - parse_json: {}
      - set: { tapped: true }
    routes:
      debug: 'level == "debug"'
sinks:
  out: { type: file, inputs: [enrich], path: out.jsonl }
  dbg: { type: file, inputs: [enrich.debug], path: debug.jsonl }
  rejects: { type: file, path: rejects.jsonl }
`

// tapDaemon is etld running tapPipeline (named "tap"), fed by a writer.
type tapDaemon struct {
	dir  string
	p    *proc
	addr string // where to reach the admin server
	w    *rlWriter
}

// startTapDaemon runs etld with extra run flags; the writer appends rate
// records a second, every badEvery-th a bad one (0: none).
func startTapDaemon(t *testing.T, rate, badEvery int, extra ...string) *tapDaemon {
	t.Helper()
	d := &tapDaemon{dir: t.TempDir()}
	cfg := writeConfig(t, d.dir, "tap.yaml", tapPipeline)
	writeFile(t, d.dir, "in.jsonl", nil)
	args := runArgs(cfg, filepath.Join(d.dir, "state"), append([]string{"--admin", "127.0.0.1:0"}, extra...)...)
	d.p = startEtld(t, d.dir, nil, args...)
	d.addr = rlAdminAddr(d.p)
	if _, port, err := net.SplitHostPort(d.addr); err == nil {
		d.addr = net.JoinHostPort("127.0.0.1", port) // also when it listens on every address
	}
	// The admin server listens before the pipelines start: wait for them.
	d.p.eventually("/readyz: ready", func() bool {
		resp, err := http.Get("http://" + d.addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	d.w = rlStartWriterOpts(t, filepath.Join(d.dir, "in.jsonl"), "f", rate, rlWriterOpts{badEvery: badEvery})
	return d
}

// tapCLI runs `etld tap --admin ADDR args...` to its end and returns its
// stdout lines, stderr and exit code.
func tapCLI(t *testing.T, addr string, args ...string) ([]string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), exitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, etldBin, append([]string{"tap", "--admin", addr}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("etld tap %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("etld tap %s did not end within %v", strings.Join(args, " "), exitTimeout)
	}
	var lines []string
	for l := range strings.Lines(stdout.String()) {
		lines = append(lines, strings.TrimSuffix(l, "\n"))
	}
	return lines, stderr.String(), code
}

// tapRecords decodes tapped lines; a {"_tap_missed":N} line is counted
// apart.
func tapRecords(t *testing.T, lines []string) (recs []map[string]any, missed int) {
	t.Helper()
	for _, l := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("tap line %q is not a JSON object: %v", l, err)
		}
		if n, ok := v["_tap_missed"].(float64); ok {
			missed += int(n)
			continue
		}
		recs = append(recs, v)
	}
	return recs, missed
}

// TestTapWorkerRouteDeadLetters taps a running pipeline's worker (the
// records carry the field its set step adds), one of its routes, its
// dead letters, and the worker through a filter; meanwhile the pipeline
// writes every record exactly once.
func TestTapWorkerRouteDeadLetters(t *testing.T) {
	d := startTapDaemon(t, 2000, 25)

	lines, stderr, code := tapCLI(t, d.addr, "tap", "enrich", "--limit", "20")
	if code != 0 {
		t.Fatalf("tap enrich: exit %d: %s", code, stderr)
	}
	recs, missed := tapRecords(t, lines)
	if len(recs) != 20 {
		t.Fatalf("tap enrich --limit 20: %d records (%d missed): %q", len(recs), missed, lines)
	}
	prev := -1.0
	for _, r := range recs {
		if r["tapped"] != true {
			t.Errorf("a tapped record lacks the set step's field: %v", r)
		}
		seq, _ := r["seq"].(float64)
		if seq <= prev {
			t.Errorf("records out of order: seq %v after %v", seq, prev)
		}
		prev = seq
	}

	lines, stderr, code = tapCLI(t, d.addr, "tap", "enrich.debug", "--limit", "5")
	recs, _ = tapRecords(t, lines)
	if code != 0 || len(recs) != 5 {
		t.Fatalf("tap enrich.debug: exit %d, %d records: %s", code, len(recs), stderr)
	}
	for _, r := range recs {
		if r["level"] != "debug" {
			t.Errorf("the debug route's tap has a record of level %v: %v", r["level"], r)
		}
	}

	lines, stderr, code = tapCLI(t, d.addr, "tap", "--dead-letter", "--limit", "3")
	recs, _ = tapRecords(t, lines)
	if code != 0 || len(recs) != 3 {
		t.Fatalf("tap --dead-letter: exit %d, %d records: %s", code, len(recs), stderr)
	}
	for _, r := range recs {
		rec, _ := r["record"].(string)
		if r["stage"] != "enrich" || r["error"] == nil || !strings.HasPrefix(rec, "not json f-") {
			t.Errorf("dead letter: %v", r)
		}
	}

	lines, stderr, code = tapCLI(t, d.addr, "tap", "enrich", "--limit", "4", "--filter", `seq % 7 == 0 && level == "info"`)
	recs, _ = tapRecords(t, lines)
	if code != 0 || len(recs) != 4 {
		t.Fatalf("tap --filter: exit %d, %d records: %s", code, len(recs), stderr)
	}
	for _, r := range recs {
		if seq, _ := r["seq"].(float64); int(seq)%7 != 0 || r["level"] != "info" {
			t.Errorf("the filter let through %v", r)
		}
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"tap", "nope"}, `pipeline "tap" has no stage "nope"`},
		{[]string{"tap", "enrich.nope"}, `stage "enrich" has no route "nope"`},
		{[]string{"nope", "enrich"}, `no pipeline "nope"`},
		{[]string{"tap", "enrich", "--filter", "seq =="}, `filter:`},
		{[]string{"tap", "out"}, `is a sink`},
	} {
		_, stderr, code := tapCLI(t, d.addr, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("etld tap %s: exit %d, stderr %q; want 2 and %q", strings.Join(c.args, " "), code, stderr, c.want)
		}
	}

	// The taps took nothing from the pipeline: every good record once.
	n := d.w.halt()
	var want []string
	for seq := range n {
		if !d.w.bad(seq) {
			want = append(want, key("f", seq))
		}
	}
	out := filepath.Join(d.dir, "out.jsonl")
	c := &lineCounter{path: out}
	d.p.eventually(fmt.Sprintf("%d records in out.jsonl", len(want)), func() bool { return c.count() >= len(want) })
	checkExactlyOnce(t, "out.jsonl", want, outputKeys(t, out))
	d.p.expectExit(d.p.stop(), 0, "etld after SIGTERM")
}

// tapClient is an HTTP client whose connections have a small receive
// buffer: a reader that stops reading soon holds up the server's writes.
func tapClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			if err != nil {
				return err
			}
			return serr
		},
	}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// openTap starts GET /api/tap with query q; the caller closes the body.
func openTap(t *testing.T, c *http.Client, addr string, q url.Values, token string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/api/tap?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestTapSlowReader: a reader that stops reading gets, once it reads
// again, {"_tap_missed":N} where records went by, and N is exact: between
// two records read, the gap in their sequence numbers is the count
// reported between them. The pipeline meanwhile writes every record.
func TestTapSlowReader(t *testing.T) {
	d := startTapDaemon(t, 10000, 0)
	resp := openTap(t, tapClient(t), d.addr, url.Values{"pipeline": {"tap"}, "stage": {"enrich"}}, "")
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/tap: %s", resp.Status)
	}
	// Not reading while the pipeline writes ~8 MB: more than the tap's
	// buffer and the sockets' buffers (4 MiB at most here) hold.
	const behind = 60000
	out := &lineCounter{path: filepath.Join(d.dir, "out.jsonl")}
	d.p.eventually(fmt.Sprintf("%d records written while the tap is not read", behind), func() bool { return out.count() >= behind })

	sc := bufio.NewScanner(resp.Body)
	prev, gap, gaps, read := -1, 0, 0, 0
	for sc.Scan() {
		var v struct {
			Seq    *int `json:"seq"`
			Missed *int `json:"_tap_missed"`
		}
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("tap line %q: %v", sc.Text(), err)
		}
		switch {
		case v.Missed != nil:
			gap += *v.Missed
			if prev >= 0 {
				gaps++
			}
		case v.Seq != nil:
			if prev >= 0 && *v.Seq != prev+1+gap {
				t.Fatalf("record %d after record %d and %d missed: the count is not exact", *v.Seq, prev, gap)
			}
			prev, gap = *v.Seq, 0
			read++
		}
		if gaps > 0 && read >= 1000 && gap == 0 {
			break // a gap was checked, with records on both sides
		}
	}
	if gaps == 0 {
		t.Fatalf("a reader %d records behind was not told it missed any (%d read)", behind, read)
	}
	resp.Body.Close()

	n := d.w.halt()
	c := &lineCounter{path: filepath.Join(d.dir, "out.jsonl")}
	d.p.eventually(fmt.Sprintf("%d records in out.jsonl", n), func() bool { return c.count() >= n })
	checkExactlyOnce(t, "out.jsonl", d.w.keys(n), outputKeys(t, filepath.Join(d.dir, "out.jsonl")))
	d.p.expectExit(d.p.stop(), 0, "etld after SIGTERM")
}

// TestTapLimitConcurrent: at most 8 taps at once; the 9th gets 429 until
// one ends.
func TestTapLimitConcurrent(t *testing.T) {
	d := startTapDaemon(t, 200, 0)
	c := tapClient(t)
	q := url.Values{"pipeline": {"tap"}, "stage": {"enrich"}}
	var open []*http.Response
	for i := range 8 {
		resp := openTap(t, c, d.addr, q, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("tap %d: %s", i+1, resp.Status)
		}
		open = append(open, resp)
	}
	resp := openTap(t, c, d.addr, q, "")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("tap 9: %s %q, want 429", resp.Status, body)
	}
	open[0].Body.Close()
	d.p.eventually("a tap freed when its reader went", func() bool {
		resp := openTap(t, c, d.addr, q, "")
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	for _, r := range open[1:] {
		r.Body.Close()
	}
	d.p.expectExit(d.p.stop(), 0, "etld after SIGTERM")
}

// TestTapGuard: on an address other hosts can reach, the tap is disabled
// without --admin-token-file and needs the bearer token with it; the
// metrics and health endpoints stay open.
func TestTapGuard(t *testing.T) {
	c := tapClient(t)
	q := url.Values{"pipeline": {"tap"}, "stage": {"enrich"}, "limit": {"1"}}
	get := func(addr, path, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	t.Run("no token: disabled", func(t *testing.T) {
		d := startTapDaemon(t, 200, 0, "--admin", "0.0.0.0:0")
		if code, body := get(d.addr, "/api/tap?"+q.Encode(), ""); code != http.StatusForbidden || !strings.Contains(body, "--admin-token-file") {
			t.Errorf("/api/tap: %d %q, want 403 naming --admin-token-file", code, body)
		}
		_, stderr, code := tapCLI(t, d.addr, "tap", "enrich")
		if code != 1 || !strings.Contains(stderr, "disabled") {
			t.Errorf("etld tap: exit %d, %q; want 1 and disabled", code, stderr)
		}
		for _, path := range []string{"/metrics", "/healthz", "/api/pipelines", "/"} {
			if code, _ := get(d.addr, path, ""); code != http.StatusOK {
				t.Errorf("%s: %d, want 200", path, code)
			}
		}
		d.p.expectExit(d.p.stop(), 0, "etld after SIGTERM")
	})

	t.Run("token", func(t *testing.T) {
		tokenFile := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		d := startTapDaemon(t, 200, 0, "--admin", "0.0.0.0:0", "--admin-token-file", tokenFile)
		for _, tok := range []string{"", "wrong", "s3cret-token-and-more"} {
			if code, _ := get(d.addr, "/api/tap?"+q.Encode(), tok); code != http.StatusUnauthorized {
				t.Errorf("token %q: %d, want 401", tok, code)
			}
		}
		if code, body := get(d.addr, "/api/tap?"+q.Encode(), "s3cret-token"); code != http.StatusOK || !strings.Contains(body, `"tapped":true`) {
			t.Errorf("right token: %d %q, want 200 and a record", code, body)
		}
		bad := filepath.Join(t.TempDir(), "bad")
		if err := os.WriteFile(bad, []byte("nope"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, stderr, code := tapCLI(t, d.addr, "--admin-token-file", bad, "tap", "enrich"); code != 1 || !strings.Contains(stderr, "401") {
			t.Errorf("etld tap with a wrong token: exit %d, %q; want 1 and 401", code, stderr)
		}
		lines, stderr, code := tapCLI(t, d.addr, "--admin-token-file", tokenFile, "tap", "enrich", "--limit", "2")
		if recs, _ := tapRecords(t, lines); code != 0 || len(recs) != 2 {
			t.Errorf("etld tap with the token: exit %d, %d records, %q", code, len(recs), stderr)
		}
		d.p.expectExit(d.p.stop(), 0, "etld after SIGTERM")
	})
}
