package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestW2FieldIndex: parse_json indexes the members it validates and
// filter and set read that index. Over lines that make a lookup easy to
// get wrong (a key written with an escape before the plain one, a
// duplicate key, an escaped value, a field set replaces, whitespace
// around the object) and invalid lines, the binary keeps exactly the
// records whose first "level" is not "debug", each once, with pipeline
// set once to "w2", and sends each invalid line to the dead letter once.
func TestW2FieldIndex(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const n = 8000
	var in []byte
	var wantKept, wantRejected []string
	for i := range n {
		id := fmt.Sprintf("r%d", i)
		var line string
		keep := true
		switch i % 8 {
		case 0:
			line = `{"id":"` + id + `","level":"info","msg":"a"}`
		case 1:
			line, keep = `{"id":"`+id+`","level":"debug","msg":"b"}`, false
		case 2: // the first level, written with an escape, counts
			line, keep = `{"id":"`+id+`","lev\u0065l":"debug","level":"info"}`, false
		case 3:
			line = `{"id":"` + id + `","level":"info","level":"debug"}`
		case 4:
			line, keep = `{"id":"`+id+`","level":"de\u0062ug"}`, false
		case 5: // set replaces the first pipeline and removes the second
			line = `{"pipeline":"old","id":"` + id + `","level":"warn","pipeline":2}`
		case 6:
			line, keep = `{"id":"`+id+`","level":"info"`, false
			wantRejected = append(wantRejected, id)
		case 7:
			line = " \t{\"id\":\"" + id + "\" , \"level\" : \"error\"} "
		}
		if keep {
			wantKept = append(wantKept, id)
		}
		in = append(append(in, line...), '\n')
	}
	writeFile(t, dir, "in/mixed.jsonl", in)
	cfg := writeConfig(t, dir, "w2.yaml", `version: 1
dead_letter: rejects
sources:
  mixed: { type: file, path: in/mixed.jsonl, follow: false }
workers:
  w2:
    inputs: [mixed]
    concurrency: 2
    steps:
      - parse_json: {}
      - filter: 'level != "debug"'
      - set: { pipeline: w2 }
sinks:
  out: { type: file, inputs: [w2], path: out/out.jsonl }
  rejects: { type: file, path: out/rejects.jsonl }
`)
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "W2 over mixed lines")

	var got []string
	for i, l := range splitLines(t, "out.jsonl", readFile(t, filepath.Join(dir, "out", "out.jsonl"))) {
		var rec map[string]any
		if err := json.Unmarshal(l, &rec); err != nil {
			t.Errorf("out.jsonl line %d is not JSON: %v: %s", i+1, err, l)
			continue
		}
		if rec["pipeline"] != "w2" || bytes.Count(l, []byte(`"pipeline"`)) != 1 {
			t.Errorf("out.jsonl line %d: want pipeline w2 once: %s", i+1, l)
		}
		id, _ := rec["id"].(string)
		got = append(got, id)
	}
	checkExactlyOnce(t, "out.jsonl", wantKept, got)

	var rejected []string
	for i, l := range splitLines(t, "rejects.jsonl", readFile(t, filepath.Join(dir, "out", "rejects.jsonl"))) {
		var dl struct {
			Record string `json:"record"`
			Error  string `json:"error"`
		}
		if err := json.Unmarshal(l, &dl); err != nil {
			t.Errorf("rejects.jsonl line %d is not JSON: %v: %s", i+1, err, l)
			continue
		}
		id, ok := strings.CutPrefix(dl.Record, `{"id":"`)
		id, _, found := strings.Cut(id, `"`)
		if !ok || !found || !strings.Contains(dl.Error, "invalid JSON") {
			t.Errorf("rejects.jsonl line %d: want an invalid JSON line: %s", i+1, l)
			continue
		}
		rejected = append(rejected, id)
	}
	checkExactlyOnce(t, "rejects.jsonl", wantRejected, rejected)
}
