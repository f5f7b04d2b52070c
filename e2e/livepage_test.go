package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// chromiumBin finds a headless-capable Chromium, or skips the test.
func chromiumBin(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("the live page test needs Chromium: install the Debian package chromium (apt-get install -y chromium)")
	return ""
}

// chromium runs a headless Chromium on url with args (--dump-dom,
// --screenshot=...) and returns its stdout. The page runs its scripts
// for a few seconds of virtual time first.
func chromium(t *testing.T, bin, url string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), exitTimeout)
	defer cancel()
	all := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=4000", "--window-size=1280,560",
	}, args...)
	// Headless Chromium sometimes dies of a signal on a loaded machine
	// (a segmentation fault while taking a screenshot): that is the
	// browser's crash, not the page's, so it gets two more tries.
	for attempt := 1; ; attempt++ {
		cmd := exec.CommandContext(ctx, bin, append(all, url)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if err == nil {
			return stdout.Bytes()
		}
		crashed := cmd.ProcessState != nil && !cmd.ProcessState.Exited() && ctx.Err() == nil
		if !crashed || attempt == 3 {
			t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, tail(stderr.String(), 4096))
		}
		t.Logf("chromium %s crashed (%v), trying again", strings.Join(args, " "), err)
	}
}

// liveNode returns the attributes the page set on a stage's node: the
// opening tag of <g class="node ..." data-stage="ID" ...>, or "".
func liveNode(dom []byte, stage string) string {
	re := regexp.MustCompile(`<g [^>]*data-stage="` + regexp.QuoteMeta(stage) + `"[^>]*>`)
	return string(re.Find(dom))
}

// liveAttr returns a numeric data attribute of a node tag, -1 if absent.
func liveAttr(tag, name string) int {
	m := regexp.MustCompile(` ` + name + `="(\d+)"`).FindStringSubmatch(tag)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestLivePage loads the admin page in headless Chromium while records
// flow: the graph of the pipeline is drawn (every stage, the routed and
// dead-letter edges) and its counters are filled in, and they grow from
// one load to the next. It saves a screenshot (ETLD_E2E_SCREENSHOT=FILE
// copies it there, e.g. docs/live-page.png).
func TestLivePage(t *testing.T) {
	bin := chromiumBin(t)
	d := startTapDaemon(t, 300, 25)
	url := "http://" + d.addr + "/"

	out := &lineCounter{path: filepath.Join(d.dir, "out.jsonl")}
	d.p.eventually("records written", func() bool { return out.count() > 0 })
	dom := chromium(t, bin, url, "--dump-dom")
	for _, want := range []string{`class="graph" data-pipeline="tap"`, `class="edge-label"`, `>debug<`, `class="edge dead-letter"`, `dead letter`} {
		if !bytes.Contains(dom, []byte(want)) {
			t.Errorf("the page has no %s", want)
		}
	}
	first := map[string]int{}
	for _, id := range []string{"app", "enrich", "out", "dbg", "rejects"} {
		tag := liveNode(dom, id)
		if tag == "" {
			t.Fatalf("no node for stage %s in the page:\n%s", id, tail(string(dom), 8192))
		}
		first[id] = liveAttr(tag, "data-out")
		if first[id] < 0 {
			t.Fatalf("the counters of stage %s were not filled in: %s", id, tag)
		}
	}
	if !regexp.MustCompile(`<text class="stat"[^>]*>in \d`).Match(dom) {
		t.Error("no stage shows its input rate")
	}
	if first["enrich"] == 0 {
		t.Errorf("worker enrich shows 0 records out after %d were written", out.count())
	}

	// Counters move while records flow: a later load shows more.
	d.p.eventually("the page's counters grow", func() bool {
		later := chromium(t, bin, url, "--dump-dom")
		enrich, dl := liveNode(later, "enrich"), liveNode(later, "rejects")
		return liveAttr(enrich, "data-out") > first["enrich"] && liveAttr(dl, "data-out") > first["rejects"] &&
			liveAttr(enrich, "data-dead-lettered") > 0
	})

	shot := filepath.Join(t.TempDir(), "live.png")
	chromium(t, bin, url, "--screenshot="+shot)
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s: %v (%d bytes)", shot, err, len(png))
	}
	t.Logf("screenshot: %s", shot)
	if dst := os.Getenv("ETLD_E2E_SCREENSHOT"); dst != "" {
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d.w.halt()
	d.p.expectExit(d.p.stop(), 0, "etld after SIGTERM")
}
