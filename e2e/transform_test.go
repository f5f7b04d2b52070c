package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
)

// TestFourFeedsTransform: four finite feeds fan out to one worker with
// four goroutines (parse_json, filter, set, eval) and fan back into one
// file sink. etld exits 0 by itself; every record that passes the filter
// is written exactly once, as one valid JSON line with the set and eval
// fields; the filtered ones are absent.
func TestFourFeedsTransform(t *testing.T) {
	t.Parallel()
	const perFeed = 20000
	dir := t.TempDir()
	feeds := []string{"orders", "payments", "shipments", "refunds"}
	var want []string
	filtered := map[string]bool{}
	for _, f := range feeds {
		data, keys := feed(f, 0, perFeed)
		writeFile(t, dir, filepath.Join("in", f+".jsonl"), data)
		for seq, k := range keys {
			if isDebug(seq) {
				filtered[k] = true
			} else {
				want = append(want, k)
			}
		}
	}
	cfg := writeConfig(t, dir, "four-feeds.yaml", `version: 1
sources:
  orders:    { type: file, path: in/orders.jsonl, follow: false }
  payments:  { type: file, path: in/payments.jsonl, follow: false }
  shipments: { type: file, path: in/shipments.jsonl, follow: false }
  refunds:   { type: file, path: in/refunds.jsonl, follow: false }
workers:
  enrich:
    inputs: [orders, payments, shipments, refunds]
    concurrency: 4
    steps:
      - parse_json: {}
      - filter: 'level != "debug"'
      - set: { pipeline: e2e, stage_no: 7 }
      - eval: { cents: 'int(amount * 100)', tag: 'feed + "#" + msg' }
sinks:
  merged:
    type: file
    inputs: [enrich]
    path: out/merged.jsonl
`)
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 0, "finite pipeline")

	out := filepath.Join(dir, "out", "merged.jsonl")
	lines := splitLines(t, "merged.jsonl", readFile(t, out))
	got := make([]string, 0, len(lines))
	bad := 0
	var buf []byte
	for i, l := range lines {
		k, problems := checkEnriched(l, &buf)
		if k != "" {
			got = append(got, k)
		}
		if filtered[k] {
			problems = append(problems, "filtered record written")
		}
		if len(problems) > 0 {
			if bad++; bad <= 5 {
				t.Errorf("merged.jsonl line %d: %v: %.300s", i+1, problems, l)
			}
		}
	}
	if bad > 5 {
		t.Errorf("merged.jsonl: %d bad lines in all", bad)
	}
	checkExactlyOnce(t, "merged.jsonl", want, got)
}

// enriched appends the line the worker of TestFourFeedsTransform makes of
// record seq of feed, in etld's current encoding: the record as read,
// then the set fields, then the eval fields.
func enriched(dst []byte, feed string, seq int) []byte {
	start := len(dst)
	dst = appendRecord(dst, feed, seq)
	msg := fmt.Sprintf("record %d of %s", seq, feed)
	dst = dst[:len(dst)-1] // the closing brace
	return fmt.Appendf(dst, `,"pipeline":"e2e","stage_no":7,"cents":%d,"tag":%q}`, int(amount(seq)*100), feed+"#"+msg)[start:]
}

// checkEnriched returns the key of an output line of
// TestFourFeedsTransform and what is wrong with it. A line in the
// expected encoding is accepted at once (decoding JSON is slow under
// -race); any other line is decoded and checked field by field, so that
// another valid encoding (field order, number format) passes too. The
// set and eval fields must come from the line's own record: a record
// mixed up with another would not match.
func checkEnriched(line []byte, buf *[]byte) (string, []string) {
	if rest, ok := bytes.CutPrefix(line, []byte(`{"key":"`)); ok {
		if i := bytes.IndexByte(rest, '"'); i >= 0 {
			k := string(rest[:i])
			feed, seq := splitKey(k)
			*buf = enriched((*buf)[:0], feed, seq)
			if bytes.Equal(*buf, line) {
				return k, nil
			}
		}
	}
	var r struct {
		Key      string   `json:"key"`
		Feed     string   `json:"feed"`
		Seq      int      `json:"seq"`
		Level    string   `json:"level"`
		Amount   float64  `json:"amount"`
		Msg      string   `json:"msg"`
		Pipeline *string  `json:"pipeline"`
		StageNo  *int     `json:"stage_no"`
		Cents    *float64 `json:"cents"`
		Tag      *string  `json:"tag"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return "", []string{"not a JSON object: " + err.Error()}
	}
	var problems []string
	if r.Key == "" || r.Key != key(r.Feed, r.Seq) || r.Msg != fmt.Sprintf("record %d of %s", r.Seq, r.Feed) || r.Amount != amount(r.Seq) {
		problems = append(problems, "original fields changed")
	}
	if r.Level == "debug" {
		problems = append(problems, "debug record not filtered")
	}
	if r.Pipeline == nil || *r.Pipeline != "e2e" || r.StageNo == nil || *r.StageNo != 7 {
		problems = append(problems, "set fields wrong")
	}
	if r.Cents == nil || *r.Cents != float64(int(amount(r.Seq)*100)) {
		problems = append(problems, fmt.Sprintf("cents wrong, want %d", int(amount(r.Seq)*100)))
	}
	if r.Tag == nil || *r.Tag != r.Feed+"#"+r.Msg {
		problems = append(problems, "tag wrong")
	}
	return r.Key, problems
}
