package e2e

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// encodingRecord is what the encoding tests read back: the fields of an
// input record as text.
type encodingRecord struct {
	Key, Seq, Level, Amount, Msg string
}

// encodingInput returns n feed records plus records whose msg holds what
// the encodings must quote or escape, as JSON lines, and the records.
func encodingInput(t *testing.T, n int) ([]byte, []encodingRecord) {
	t.Helper()
	data, _ := feed("enc", 0, n)
	odd := []string{`say "hi", then go`, "two\nlines\r\nand a tab\t", " leading space", "", "héllo 😀 =x"}
	for i, msg := range odd {
		line, err := json.Marshal(map[string]any{"key": key("odd", i), "seq": i, "level": "warn", "amount": 0.5, "msg": msg})
		if err != nil {
			t.Fatal(err)
		}
		data = append(append(data, line...), '\n')
	}
	var recs []encodingRecord
	for _, line := range bytes.Split(bytes.TrimSuffix(data, []byte{'\n'}), []byte{'\n'}) {
		var r struct {
			Key    string          `json:"key"`
			Seq    json.Number     `json:"seq"`
			Level  string          `json:"level"`
			Amount json.RawMessage `json:"amount"`
			Msg    string          `json:"msg"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, encodingRecord{r.Key, r.Seq.String(), r.Level, string(r.Amount), r.Msg})
	}
	return data, recs
}

// TestEncodingsReadBack: the text and CSV output of a finite pipeline,
// parsed back (the text by its template, the CSV with encoding/csv), give
// the input records' fields, in order, once each, and a line break in a
// value never splits a text line.
func TestEncodingsReadBack(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	data, want := encodingInput(t, 2000)
	writeFile(t, dir, "in/in.jsonl", data)
	cfg := writeConfig(t, dir, "enc.yaml", `version: 1
sources:
  in: { type: file, path: in/in.jsonl, follow: false }
workers:
  parse:
    inputs: [in]
    ordered: true
    steps:
      - parse_json: {}
sinks:
  text:
    type: file
    inputs: [parse]
    path: out/out.txt
    encoding: text
    template: '{{key}}|{{seq}}|{{level}}|{{amount}}|{{msg}}'
  table:
    type: file
    inputs: [parse]
    path: out/out.csv
    encoding: csv
    columns: [key, seq, level, amount, msg]
    header: true
`)
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "finite pipeline with text and csv sinks")

	var text []encodingRecord
	for _, line := range splitLines(t, "out.txt", readFile(t, filepath.Join(dir, "out", "out.txt"))) {
		f := strings.SplitN(string(line), "|", 5)
		if len(f) != 5 {
			t.Fatalf("out.txt: line %q does not follow the template", line)
		}
		msg := strings.NewReplacer(`\n`, "\n", `\r`, "\r").Replace(f[4])
		text = append(text, encodingRecord{f[0], f[1], f[2], f[3], msg})
	}
	compareRecords(t, "out.txt", want, text)

	rows, err := csv.NewReader(bytes.NewReader(readFile(t, filepath.Join(dir, "out", "out.csv")))).ReadAll()
	if err != nil {
		t.Fatalf("out.csv: %v", err)
	}
	if len(rows) == 0 || !slices.Equal(rows[0], []string{"key", "seq", "level", "amount", "msg"}) {
		t.Fatalf("out.csv does not start with the header: %q", rows[:min(1, len(rows))])
	}
	var table []encodingRecord
	for _, r := range rows[1:] {
		table = append(table, encodingRecord{r[0], r[1], r[2], r[3], r[4]})
	}
	for i := range want { // encoding/csv reads a quoted \r\n as \n
		want[i].Msg = strings.ReplaceAll(want[i].Msg, "\r\n", "\n")
	}
	compareRecords(t, "out.csv", want, table)
}

func compareRecords(t *testing.T, what string, want, got []encodingRecord) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d records, want %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Errorf("%s: record %d = %q, want %q", what, i, got[i], want[i])
			return
		}
	}
}

// TestCSVHeaderAcrossKills: a CSV sink with header: true and rotation,
// following a growing file, is killed with -9 twice. Each restart rolls
// the output back to the last checkpoint; in the end every segment starts
// with the header, holds it only once, and the rows hold every input
// record exactly once.
func TestCSVHeaderAcrossKills(t *testing.T) {
	t.Parallel()
	const perRound = 40000
	dir := t.TempDir()
	data, want := feed("csv", 0, perRound)
	in := writeFile(t, dir, "in/in.jsonl", data)
	cfg := writeConfig(t, dir, "csvkill.yaml", `version: 1
checkpoint_interval: 100ms
sources:
  in: { type: file, path: in/in.jsonl, follow: true }
workers:
  parse:
    inputs: [in]
    steps:
      - parse_json: {}
sinks:
  out:
    type: file
    inputs: [parse]
    path: out/out.csv
    encoding: csv
    columns: [key, seq, msg]
    header: true
    rotate: { max_size: 256KiB }
`)
	state := filepath.Join(dir, "state")
	out := filepath.Join(dir, "out", "out.csv")
	ckpt := filepath.Join(state, "csvkill.json")

	next := perRound
	for round := range 2 {
		p := startEtld(t, dir, nil, runArgs(cfg, state)...)
		before := fileMTime(ckpt)
		base := outputSize(t, out)
		// The active file stays under max_size: progress is the size of
		// all segments, which a rollback only shrinks.
		p.eventually("a new checkpoint and more output", func() bool {
			return fileMTime(ckpt) != before && outputSize(t, out) > base
		})
		p.kill()
		t.Logf("round %d: killed", round)
		data, keys := feed("csv", next, 1000)
		appendFile(t, in, data)
		want = append(want, keys...)
		next += 1000
	}

	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	p.eventually(fmt.Sprintf("%d rows in the output", len(want)), func() bool {
		keys, _ := csvKeys(out)
		return len(keys) >= len(want)
	})
	p.expectExit(p.stop(), 0, "SIGTERM after catching up")
	keys, err := csvKeys(out)
	if err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, "out.csv after two kills", want, keys)
}

// outputSize is the size of path and its sealed segments.
func outputSize(t *testing.T, path string) int64 {
	names, err := filepath.Glob(path + "*")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, name := range names {
		if fi, err := os.Stat(name); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// csvKeys reads the sealed segments of a CSV output, then the active
// file, and returns the key column of every row. Each file must start
// with the header and hold it once.
func csvKeys(path string) ([]string, error) {
	sealed, err := filepath.Glob(path + ".*")
	if err != nil {
		return nil, err
	}
	slices.Sort(sealed) // zero-padded numbers
	var keys []string
	for _, name := range append(sealed, path) {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, err
		}
		rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(rows) == 0 {
			continue
		}
		for i, r := range rows {
			header := slices.Equal(r, []string{"key", "seq", "msg"})
			if header != (i == 0) {
				return nil, fmt.Errorf("%s: row %d is %q: want the header first and only there", name, i, r)
			}
			if i > 0 {
				if _, err := strconv.Atoi(r[1]); err != nil {
					return nil, fmt.Errorf("%s: row %d: seq %q", name, i, r[1])
				}
				keys = append(keys, r[0])
			}
		}
	}
	return keys, nil
}
