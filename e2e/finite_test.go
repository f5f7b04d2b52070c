package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGenerateToStdout: a generate source with a count is finite: etld
// writes exactly count records to stdout, seq 0..count-1 once each, and
// exits 0 by itself. Logs go to stderr only.
func TestGenerateToStdout(t *testing.T) {
	t.Parallel()
	const count = 10000
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "gen.yaml", fmt.Sprintf(`version: 1
sources:
  gen:
    type: generate
    count: %d
    message: '{"key":"gen-{{seq}}","seq":{{seq}},"ts":"{{ts}}"}'
sinks:
  out: { type: stdout, inputs: [gen] }
`, count))
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "generate with a count")

	lines := splitLines(t, "stdout", p.stdout.Bytes())
	var want []string
	for seq := range count {
		want = append(want, key("gen", seq))
	}
	got := keysOf(t, "stdout", lines)
	checkExactlyOnce(t, "stdout", want, got)
	for i, l := range lines {
		var r struct {
			Seq int    `json:"seq"`
			TS  string `json:"ts"`
		}
		if err := json.Unmarshal(l, &r); err != nil || r.Seq != i || r.TS == "" {
			// One source, one sink and nothing between: order is kept.
			t.Errorf("stdout line %d: %q, want seq %d with a ts", i+1, l, i)
			break
		}
	}
}

// TestStdinToStdout: the stdin source reads until EOF and etld then exits
// 0 by itself, every line written once and in order.
func TestStdinToStdout(t *testing.T) {
	t.Parallel()
	const n = 10000
	dir := t.TempDir()
	in, want := feed("stdin", 0, n)
	cfg := writeConfig(t, dir, "stdin.yaml", `version: 1
sources:
  in: { type: stdin }
sinks:
  out: { type: stdout, inputs: [in] }
`)
	p := startEtld(t, dir, bytes.NewReader(in), runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "stdin source at EOF")

	out := p.stdout.Bytes()
	checkExactlyOnce(t, "stdout", want, keysOf(t, "stdout", splitLines(t, "stdout", out)))
	if !bytes.Equal(out, in) {
		t.Errorf("stdout is not the input, byte for byte: %s", firstDiff(out, in))
	}
}

// TestStdinThroughWorkerToFile: stdin through a parsing worker with
// several goroutines into a file sink: every line once, exit 0.
func TestStdinThroughWorkerToFile(t *testing.T) {
	t.Parallel()
	const n = 10000
	dir := t.TempDir()
	in, want := feed("stdin", 0, n)
	cfg := writeConfig(t, dir, "stdin-file.yaml", `version: 1
sources:
  in: { type: stdin }
workers:
  parse:
    inputs: [in]
    concurrency: 3
    steps:
      - parse_json: {}
sinks:
  out: { type: file, inputs: [parse], path: out/stdin.jsonl }
`)
	p := startEtld(t, dir, bytes.NewReader(in), runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "stdin source at EOF")
	checkExactlyOnce(t, "out/stdin.jsonl", want, outputKeys(t, filepath.Join(dir, "out", "stdin.jsonl")))
}

// TestDirectoryMode: a config directory holds one pipeline per file,
// named after the file; checkpoints are per pipeline. With --no-watch,
// etld exits 0 by itself once both finite pipelines are done. With
// watching on, it keeps waiting for pipeline files like a daemon, and
// SIGTERM stops it with 0.
func TestDirectoryMode(t *testing.T) {
	t.Parallel()
	for _, watch := range []bool{false, true} {
		name := "no-watch"
		if watch {
			name = "watching"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var wantA []string
			for _, f := range []string{"a1", "a2"} {
				data, keys := feed(f, 0, 3000)
				writeFile(t, dir, filepath.Join("in", f+".jsonl"), data)
				wantA = append(wantA, keys...)
			}
			data, wantB := feed("b", 0, 5000)
			writeFile(t, dir, "in/b.jsonl", data)
			// Relative paths resolve against each pipeline file's
			// directory: conf/.
			writeConfig(t, dir, "conf/alpha.yaml", `version: 1
sources:
  src: { type: file, path: ../in/a*.jsonl, follow: false }
sinks:
  out: { type: file, inputs: [src], path: ../out/alpha.jsonl }
`)
			writeConfig(t, dir, "conf/beta.yml", `version: 1
sources:
  src: { type: file, path: ../in/b.jsonl, follow: false }
workers:
  parse: { inputs: [src], steps: [ { parse_json: {} } ] }
sinks:
  out: { type: file, inputs: [parse], path: ../out/beta.jsonl }
`)
			state := filepath.Join(dir, "state")
			var extra []string
			if !watch {
				extra = append(extra, "--no-watch")
			}
			p := startEtld(t, dir, nil, runArgs(filepath.Join(dir, "conf"), state, extra...)...)
			if watch {
				p.eventually("both pipelines finish", func() bool {
					return strings.Count(p.stderr.String(), `"message":"pipeline finished"`) == 2
				})
				p.expectExit(p.stop(), 0, "SIGTERM in directory mode")
				if !p.logged("stopping gracefully") {
					t.Errorf("etld exited before SIGTERM, want it to keep waiting for pipeline files")
				}
			} else {
				p.expectExit(p.wait(), 0, "directory mode with --no-watch")
			}
			checkExactlyOnce(t, "alpha.jsonl", wantA, outputKeys(t, filepath.Join(dir, "out", "alpha.jsonl")))
			checkExactlyOnce(t, "beta.jsonl", wantB, outputKeys(t, filepath.Join(dir, "out", "beta.jsonl")))
			for _, f := range []string{"alpha.json", "beta.json"} {
				if _, err := os.Stat(filepath.Join(state, f)); err != nil {
					t.Errorf("no checkpoint for pipeline %s: %v", strings.TrimSuffix(f, ".json"), err)
				}
			}
		})
	}
}
