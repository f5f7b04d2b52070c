package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMergeThroughFieldIndex: the steps of a worker hand the positions of
// the fields they write to the steps after them and to the merge key
// (the field index). Two logfmt feeds take paths that use it and paths
// that must not: a `set` between the parser and parse_timestamp rewrites
// every record (a field in the middle gets longer) without indexing it,
// so parse_timestamp must not use the parser's positions; lines with a
// repeated key are left
// unindexed by the parser, values hold quotes and backslashes, half of
// one feed's times are already normalised (parse_timestamp keeps those
// records as they are), and the other feed's key is renamed, then read
// as Unix seconds. The merged output must hold every record exactly once,
// each with the fields computed here from its input line, in the merge
// order (time, then feed a before b, then input order) computed here.
func TestMergeThroughFieldIndex(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewSource(crashSeed(t)))
	dir := t.TempDir()
	type rec struct {
		id     string
		at     time.Time
		feed   int
		seq    int
		fields map[string]any
	}
	var all []rec
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var a, b bytes.Buffer
	at := [2]time.Time{base, base}
	for seq := range 4000 {
		for f := range 2 {
			at[f] = at[f].Add(time.Duration(rng.Intn(4)) * time.Millisecond) // ties within and across feeds
			r := rec{id: fmt.Sprintf("%c-%d", 'a'+f, seq), at: at[f], feed: f, seq: seq}
			ts := at[f].Format(time.RFC3339Nano)
			if f == 0 {
				t0 := ts
				if seq%2 == 1 { // not normalised: parse_timestamp rewrites it
					t0 = at[f].In(time.FixedZone("", 2*3600)).Format("2006-01-02T15:04:05.000-07:00")
				}
				line := fmt.Sprintf(`t=%s id=%s lvl=info msg="say \"hi\" \\ %d"`, t0, r.id, seq)
				if seq%50 == 7 {
					line += " lvl=warn" // a repeated key: the parser leaves the record unindexed
				}
				fmt.Fprintln(&a, line)
				r.fields = map[string]any{"t": t0, "id": r.id, "msg": fmt.Sprintf(`say "hi" \ %d`, seq),
					"lvl": `level "set" \ longer`, "note": `x "y" \z`, "ts": ts}
			} else {
				when := fmt.Sprintf("%d.%03d", at[f].Unix(), at[f].Nanosecond()/1e6)
				fmt.Fprintf(&b, "when=%s id=%s user=\"b\\\\ob\"\n", when, r.id)
				r.fields = map[string]any{"ts_raw": when, "id": r.id, "user": `b\ob`, "ts": ts}
			}
			all = append(all, r)
		}
	}
	writeFile(t, dir, "in/a.logfmt", a.Bytes())
	writeFile(t, dir, "in/b.logfmt", b.Bytes())
	cfg := writeConfig(t, dir, "idx.yaml", `version: 1
sources:
  a: { type: file, path: in/a.logfmt, follow: false }
  b: { type: file, path: in/b.logfmt, follow: false }
workers:
  wa:
    inputs: [a]
    ordered: true
    concurrency: 2
    steps:
      - parse_logfmt: {}
      - set: { lvl: 'level "set" \ longer', note: 'x "y" \z' }
      - parse_timestamp: { field: t, target: ts }
  wb:
    inputs: [b]
    ordered: true
    concurrency: 2
    steps:
      - parse_logfmt: {}
      - rename: { when: ts_raw }
      - parse_timestamp: { field: ts_raw, format: unix, target: ts }
sinks:
  out: { type: file, inputs: [wa, wb], path: out/merged.jsonl, merge: { order_by: ts } }
`)
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "merge through the field index")

	slices.SortStableFunc(all, func(x, y rec) int {
		if c := x.at.Compare(y.at); c != 0 {
			return c
		}
		if x.feed != y.feed {
			return x.feed - y.feed
		}
		return x.seq - y.seq
	})
	lines := splitLines(t, "merged output", readFile(t, filepath.Join(dir, "out", "merged.jsonl")))
	if len(lines) != len(all) {
		t.Fatalf("output has %d records, want %d", len(lines), len(all))
	}
	for i, line := range lines {
		var got map[string]any
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("output line %d %s: %v", i+1, line, err)
		}
		if want := all[i].fields; !reflect.DeepEqual(got, want) {
			t.Fatalf("output line %d:\n got %s\nwant %v (record %s)", i+1, line, want, all[i].id)
		}
	}
	if strings.Count(string(readFile(t, filepath.Join(dir, "out", "merged.jsonl"))), "\n") != len(all) {
		t.Fatal("output does not end with a newline per record")
	}
}
