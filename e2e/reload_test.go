package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestReloadUnderLoad: hot reload loses and duplicates nothing, under
// load (SPEC §3.2). A writer appends to a followed file while etld gets
// a SIGHUP with the config unchanged, then an edit of the worker's steps
// saved like an editor does (write a temporary file, rename it over the
// config). Every line is written exactly once; lines appended after the
// reload is logged carry the new field value, earlier ones the old or
// the new one.
func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	const total = 40000
	dir := t.TempDir()
	logPath := filepath.Join(dir, "logs", "app.log")
	writeFile(t, dir, "logs/app.log", nil)
	config := func(version string) string {
		return `version: 1
checkpoint_interval: 200ms
sources:
  app: { type: file, path: logs/app.log, follow: true }
workers:
  enrich:
    inputs: [app]
    concurrency: 2
    steps:
      - parse_json: {}
      - set: { version: ` + version + ` }
sinks:
  out: { type: file, inputs: [enrich], path: out/out.jsonl }
`
	}
	cfg := writeConfig(t, dir, "reload.yaml", config("v1"))
	out := filepath.Join(dir, "out", "out.jsonl")
	var want []string
	for seq := range total {
		want = append(want, key("app", seq))
	}
	reloads := func(p *proc) int { return strings.Count(p.stderr.String(), `"message":"config reloaded"`) }

	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.eventually("the pipeline has started", func() bool { return p.logged("pipeline started") })
	w := startAppLog(t, logPath, 0, total, total/2)

	// SIGHUP with the same bytes: nothing to change.
	p.eventually("the writer is a quarter through", func() bool { return w.written.Load() >= total/4 })
	p.signal(syscall.SIGHUP)
	p.eventually("the SIGHUP reload", func() bool { return reloads(p) == 1 })

	// Edit the steps while lines keep coming: the writer may go on to
	// three quarters during the reload.
	p.eventually("the writer is half through", func() bool { return w.written.Load() >= total/2 })
	w.allow(3 * total / 4)
	tmp := filepath.Join(dir, ".reload.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(config("v2")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, cfg); err != nil {
		t.Fatal(err)
	}
	p.eventually("the reload of the edited file", func() bool { return reloads(p) == 2 })
	// Lines from here on are read after the reload.
	p.eventually("the writer pauses", func() bool { return w.written.Load() >= 3*total/4 })
	after := 3 * total / 4
	w.allow(total)
	p.eventually("the writer finishes", w.exited)
	if w.err != nil {
		t.Fatalf("writer: %v", w.err)
	}
	p.waitForLines(out, total, want)
	p.expectExit(p.stop(), 0, "SIGTERM after the reloads")

	lines := splitLines(t, "out.jsonl", readFile(t, out))
	got := make([]string, 0, len(lines))
	bad := 0
	var buf []byte
	for i, l := range lines {
		k, version := versioned(l, &buf)
		if k != "" {
			got = append(got, k)
		}
		_, seq := splitKey(k)
		ok := version == "v2" || (version == "v1" && seq < after)
		if !ok {
			if bad++; bad <= 5 {
				t.Errorf("out.jsonl line %d: version %q, want v2 (or v1 before seq %d): %.300s", i+1, version, after, l)
			}
		}
	}
	if bad > 5 {
		t.Errorf("out.jsonl: %d bad lines in all", bad)
	}
	checkExactlyOnce(t, "out.jsonl across two reloads", want, got)
}

// versioned returns the key and the "version" of an output line of
// TestReloadUnderLoad: a record as written by appendRecord plus a
// version field. The usual encoding is checked without a JSON parse.
func versioned(line []byte, buf *[]byte) (string, string) {
	for _, v := range []string{"v1", "v2"} {
		suffix := []byte(`,"version":"` + v + `"}`)
		if head, ok := bytes.CutSuffix(line, suffix); ok {
			rec := append(bytes.Clone(head), '}')
			if k, ok := canonicalKey(rec, buf); ok {
				return k, v
			}
		}
	}
	var r struct {
		Key     string `json:"key"`
		Version string `json:"version"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return "", ""
	}
	return r.Key, r.Version
}
