package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// badLine is a line of the dead-letter test's input that must end up in
// the dead-letter sink, and what its dead-letter line must say.
type badLine struct {
	line   []byte
	stage  string // stage that rejects it
	length int64  // > 0: over max_line_bytes, cut to its first max bytes
	offset int64  // set when the input is built
}

// TestDeadLetter: bad records never stop a pipeline. Invalid JSON, a JSON
// array, an empty line, invalid UTF-8, an expression error and lines over
// max_line_bytes (5 MiB, and max+1 bytes) go to the dead-letter sink, one
// JSON object each with error, stage, source, origin "path:offset" and
// the original record (record_base64 when it is not UTF-8; cut to
// max_line_bytes, with "length", when it is too long). A line of exactly
// max_line_bytes is a good record. Every good record is written once and
// etld exits 0.
func TestDeadLetter(t *testing.T) {
	t.Parallel()
	const maxLine = 1 << 20 // the default max_line_bytes
	dir := t.TempDir()

	// padded returns a JSON object line of exactly n bytes.
	padded := func(k string, n int) []byte {
		head := `{"key":"` + k + `","amount":1.25,"pad":"`
		return []byte(head + strings.Repeat("p", n-len(head)-2) + `"}`)
	}
	bads := []*badLine{
		{line: []byte(`{"key":"bad-truncated","amount":1`), stage: "parse"},
		{line: []byte(`not json at all`), stage: "parse"},
		{line: []byte(``), stage: "parse"},
		{line: []byte(`[1,2,3]`), stage: "parse"},
		{line: []byte("{\"key\":\"bad-utf8\",\"msg\":\"caf\xe9\"}"), stage: "parse"},
		{line: []byte("\xff\xfe raw bytes \x80"), stage: "parse"},
		{line: []byte(`{"key":"bad-eval","amount":"ten"}`), stage: "parse"},
		{line: padded("huge", 5<<20), stage: "mixed", length: 5 << 20},
		{line: padded("just-over", maxLine+1), stage: "mixed", length: maxLine + 1},
		{line: bytes.Repeat([]byte{0xff}, 2*maxLine+7), stage: "mixed", length: 2*maxLine + 7},
	}
	goodMax := padded("good-max", maxLine) // exactly max_line_bytes: fine

	// Good records, with a bad line (or the max-size good line) after
	// every 150th of them.
	var in []byte
	var wantGood []string
	extra := append(slices.Clone(bads), &badLine{line: goodMax})
	for seq := 0; seq < 2000; seq++ {
		in = appendRecord(in, "good", seq)
		in = append(in, '\n')
		wantGood = append(wantGood, key("good", seq))
		if seq%150 == 149 && len(extra) > 0 {
			b := extra[0]
			extra = extra[1:]
			b.offset = int64(len(in))
			in = append(in, b.line...)
			in = append(in, '\n')
		}
	}
	if len(extra) > 0 {
		t.Fatal("test bug: not every special line was placed")
	}
	wantGood = append(wantGood, "good-max")
	inPath := writeFile(t, dir, "in/mixed.jsonl", in)

	cfg := writeConfig(t, dir, "dl.yaml", `version: 1
dead_letter: rejects
sources:
  mixed: { type: file, path: in/mixed.jsonl, follow: false }
workers:
  parse:
    inputs: [mixed]
    concurrency: 2
    steps:
      - parse_json: {}
      - eval: { cents: 'int(amount * 100)' }
sinks:
  good: { type: file, inputs: [parse], path: out/good.jsonl }
  rejects: { type: file, path: out/rejects.jsonl }
`)
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "pipeline with bad records")

	checkExactlyOnce(t, "out/good.jsonl", wantGood, outputKeys(t, filepath.Join(dir, "out", "good.jsonl")))

	byOrigin := map[string]*badLine{}
	for _, b := range bads {
		byOrigin[inPath+":"+strconv.FormatInt(b.offset, 10)] = b
	}
	seen := map[string]int{}
	lines := splitLines(t, "rejects.jsonl", readFile(t, filepath.Join(dir, "out", "rejects.jsonl")))
	for i, l := range lines {
		var dl map[string]json.RawMessage
		if err := json.Unmarshal(l, &dl); err != nil {
			t.Errorf("rejects.jsonl line %d is not a JSON object: %v: %.200q", i+1, err, l)
			continue
		}
		var origin string
		_ = json.Unmarshal(dl["origin"], &origin)
		seen[origin]++
		b := byOrigin[origin]
		if b == nil {
			t.Errorf("rejects.jsonl line %d: unexpected origin %q: %.300s", i+1, origin, l)
			continue
		}
		checkDeadLetter(t, origin, dl, b, maxLine)
	}
	for o, b := range byOrigin {
		if seen[o] != 1 {
			t.Errorf("bad line at %s (%.60q) is %d times in rejects.jsonl, want once", o, b.line, seen[o])
		}
	}
}

// checkDeadLetter checks one dead-letter object against the bad line it is
// for.
func checkDeadLetter(t *testing.T, origin string, dl map[string]json.RawMessage, b *badLine, maxLine int) {
	t.Helper()
	str := func(k string) (string, bool) {
		var s string
		raw, ok := dl[k]
		return s, ok && json.Unmarshal(raw, &s) == nil
	}
	keys := make([]string, 0, len(dl))
	for k := range dl {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	wantKeys := []string{"error", "origin", "source", "stage"}
	record := b.line
	if b.length > 0 {
		record = record[:maxLine]
		wantKeys = append(wantKeys, "length")
	}
	if utf8.Valid(record) {
		wantKeys = append(wantKeys, "record")
	} else {
		wantKeys = append(wantKeys, "record_base64")
	}
	slices.Sort(wantKeys)
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("%s: keys %v, want %v", origin, keys, wantKeys)
	}
	if e, ok := str("error"); !ok || e == "" {
		t.Errorf("%s: error = %s, want a message", origin, dl["error"])
	}
	if s, _ := str("stage"); s != b.stage {
		t.Errorf("%s: stage = %s, want %q", origin, dl["stage"], b.stage)
	}
	if s, _ := str("source"); s != "mixed" {
		t.Errorf("%s: source = %s, want %q", origin, dl["source"], "mixed")
	}
	var got []byte
	if s, ok := str("record"); ok {
		got = []byte(s)
	} else if s, ok := str("record_base64"); ok {
		var err error
		if got, err = base64.StdEncoding.DecodeString(s); err != nil {
			t.Errorf("%s: record_base64 does not decode: %v", origin, err)
		}
	}
	if !bytes.Equal(got, record) {
		t.Errorf("%s: record is %d bytes %.60q, want %d bytes %.60q", origin, len(got), got, len(record), record)
	}
	if b.length > 0 {
		var n int64
		if err := json.Unmarshal(dl["length"], &n); err != nil || n != b.length {
			t.Errorf("%s: length = %s, want %d", origin, dl["length"], b.length)
		}
	}
}
