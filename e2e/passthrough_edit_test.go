package e2e

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
)

// TestPassthroughRunsAfterEdits: a file sink writes runs of lines straight
// from the memory the source read them into, finding the runs from the
// source's word about its buffers (the lines are back to back, each
// followed by a newline) and the records' positions. Records that a step
// shortens in place (drop edits the JSON where it is), records a filter
// removes, and over-long lines the source rejects all sit inside such
// buffers; every output must still be exactly the lines the records hold.
// One source's batches go to a sink as they are, another's (the same
// file: a fan-out would give one branch copies) through parse_json, drop
// and filter. The sinks' small buffers make them write runs of 4 KiB and
// more straight from memory (smaller ones are copied record by record).
func TestPassthroughRunsAfterEdits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const n = 120000
	var in, direct, edited bytes.Buffer
	for i := range n {
		var line string
		switch {
		case i%5000 == 17:
			line = fmt.Sprintf(`{"id":%d,"pad":"%s"}`, i, bytes.Repeat([]byte("p"), 70000)) // over max_line_bytes
		case i%7 == 3:
			line = fmt.Sprintf(`{"id":%d,"secret":"s%d","n":%d}`, i, i, i%10) // drop shortens it in place
		default:
			line = fmt.Sprintf(`{"id":%d,"n":%d,"msg":"untouched line %d"}`, i, i%10, i)
		}
		in.WriteString(line)
		if i < n-1 {
			in.WriteByte('\n') // the last line has no newline
		}
		if i%5000 == 17 {
			continue
		}
		direct.WriteString(line + "\n")
		if i%10 == 9 {
			continue // filtered out
		}
		if i%7 == 3 {
			line = fmt.Sprintf(`{"id":%d,"n":%d}`, i, i%10)
		}
		edited.WriteString(line + "\n")
	}
	writeFile(t, dir, "in/feed.jsonl", in.Bytes())
	cfg := writeConfig(t, dir, "edits.yaml", `version: 1
sources:
  feed: { type: file, path: in/feed.jsonl, follow: false, max_line_bytes: 64KiB }
  again: { type: file, path: in/feed.jsonl, follow: false, max_line_bytes: 64KiB }
workers:
  edit:
    inputs: [again]
    concurrency: 2
    ordered: true
    steps:
      - parse_json: {}
      - drop: [secret]
      - filter: 'n != 9'
sinks:
  direct: { type: file, inputs: [feed], path: out/direct.jsonl, buffer_size: 16KiB }
  edited: { type: file, inputs: [edit], path: out/edited.jsonl, buffer_size: 16KiB }
`)
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "finite pipeline")
	for name, want := range map[string][]byte{"direct": direct.Bytes(), "edited": edited.Bytes()} {
		got := readFile(t, filepath.Join(dir, "out", name+".jsonl"))
		if !bytes.Equal(got, want) {
			t.Errorf("out/%s.jsonl: %s", name, firstDiff(got, want))
		}
	}
}
