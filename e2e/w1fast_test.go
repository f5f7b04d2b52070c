package e2e

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// The passthrough path (W1): a file source straight into a json file
// sink, no steps. Its batches keep their lines in the buffer the source
// read them into, and the sink writes them from there
// (etld_sink_direct_bytes_total counts those bytes); the guarantees are
// the same as on the buffered path.

// w1Feeds writes n feeds of lines records each under dir/in, the first
// with the odd lines of rawInput in the middle (long lines that span
// read buffers, empty lines, invalid UTF-8) and the last without a
// final newline. It returns what a sink reading them in path order
// writes: every file, each ending with a newline.
func w1Feeds(t testing.TB, dir string, n, lines int) []byte {
	t.Helper()
	var want []byte
	for i := range n {
		name := fmt.Sprintf("feed-%d", i)
		b, _ := feed(name, 0, lines)
		if i == 0 {
			b = append(b, rawInput(20000)...)
			b = append(b, '\n')
			more, _ := feed(name, lines, lines)
			b = append(b, more...)
		}
		if i == n-1 {
			b = b[:len(b)-1]
		}
		writeFile(t, dir, filepath.Join("in", name+".jsonl"), b)
		want = append(want, b...)
		if i == n-1 {
			want = append(want, '\n')
		}
	}
	return want
}

// TestW1PassthroughInPlace runs the same four feeds through two
// pipelines, one taking the in-place path and one the buffered path (a
// rotate.max_size far above the output keeps one file but makes the sink
// copy every line): both outputs are the input byte for byte, the
// counters agree, and only the first wrote in place. A third pipeline
// follows an empty file, so that etld stays up to be asked.
func TestW1PassthroughInPlace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want := w1Feeds(t, dir, 4, 30000)
	lines := bytes.Count(want, []byte{'\n'})
	writeFile(t, dir, "idle/empty.log", nil)
	writeConfig(t, dir, "pipelines/fast.yaml", `version: 1
sources:
  feeds: { type: file, path: ../in/feed-*.jsonl, follow: false }
sinks:
  out: { type: file, inputs: [feeds], path: ../out/fast.jsonl }
`)
	writeConfig(t, dir, "pipelines/buffered.yaml", `version: 1
sources:
  feeds: { type: file, path: ../in/feed-*.jsonl, follow: false }
sinks:
  out: { type: file, inputs: [feeds], path: ../out/buffered.jsonl, rotate: { max_size: 1GiB } }
`)
	writeConfig(t, dir, "pipelines/idle.yaml", `version: 1
sources:
  idle: { type: file, path: ../idle/empty.log }
sinks:
  out: { type: file, inputs: [idle], path: ../out/idle.jsonl }
`)
	p := startEtld(t, dir, nil, "run", "-c", "pipelines", "--state-dir", "state", "--admin", "127.0.0.1:0", "--no-watch", "--log-format", "json")
	addr := rlAdminAddr(p)
	for _, name := range []string{"fast", "buffered"} {
		p.eventually(name+" wrote every line", func() bool {
			return rlMetric(addr, "etld_stage_records_out_total", `pipeline="`+name+`"`, `stage="out"`) == float64(lines)
		})
		if got := rlMetric(addr, "etld_sink_bytes_written_total", `pipeline="`+name+`"`, `stage="out"`); got != float64(len(want)) {
			t.Errorf("%s: etld_sink_bytes_written_total = %v, want %d", name, got, len(want))
		}
	}
	direct := rlMetric(addr, "etld_sink_direct_bytes_total", `pipeline="fast"`, `stage="out"`)
	if direct < float64(len(want))/2 {
		t.Errorf("the passthrough sink wrote %v of %d bytes in place; want most", direct, len(want))
	}
	if got := rlMetric(addr, "etld_sink_direct_bytes_total", `pipeline="buffered"`, `stage="out"`); got > 0 {
		t.Errorf("the sink with rotate.max_size wrote %v bytes in place; want none", got)
	}
	p.signal(syscall.SIGTERM)
	p.expectExit(p.wait(), 0, "SIGTERM")
	for _, name := range []string{"fast", "buffered"} {
		got := readFile(t, filepath.Join(dir, "out", name+".jsonl"))
		if !bytes.Equal(got, want) {
			t.Errorf("out/%s.jsonl differs from the input: %s", name, firstDiff(got, want))
		}
	}
	t.Logf("%d lines, %d bytes, %v written in place", lines, len(want), direct)
}

// TestW1KillNineInPlace: the W1 pipeline (one glob source of four feeds,
// a json file sink, no steps) is killed with -9 at pseudo-random moments
// (a few checkpoints later, the output past a random size) and
// restarted with the same state dir; the last run ends by itself. The
// output is then the input byte for byte, every line once and in order,
// and the final checkpoint matches the file.
func TestW1KillNineInPlace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	want := w1Feeds(t, dir, 4, 100000)
	cfg := writeConfig(t, dir, "w1.yaml", `version: 1
checkpoint_interval: 2ms
sources:
  feeds: { type: file, path: in/feed-*.jsonl, follow: false }
sinks:
  out: { type: file, inputs: [feeds], path: out/w1.jsonl }
`)
	ckpt := filepath.Join(dir, "state", "w1.json")
	out := filepath.Join(dir, "out", "w1.jsonl")
	w1KillNine(t, dir, cfg, int64(len(want)), 8)
	got := readFile(t, out)
	if !bytes.Equal(got, want) {
		gotLines, wantLines := splitLines(t, "output", got), splitLines(t, "input", want)
		t.Errorf("output (%d lines) differs from the input (%d lines): %s", len(gotLines), len(wantLines), firstDiff(got, want))
		if slices.EqualFunc(gotLines, wantLines, bytes.Equal) {
			t.Errorf("(the lines are equal)")
		}
	}
	crashCheckFinalState(t, ckpt, "out", out)
}
