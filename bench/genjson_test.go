package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestGenJSONFeeds checks what the workloads rely on: the same seed gives
// the same bytes, every line is a JSON object with the workload's fields,
// ts strictly increases and seq counts up within a feed, and about one
// record in ten is a debug record.
func TestGenJSONFeeds(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	const feeds, lines = 3, 5000
	for _, dir := range []string{a, b} {
		if err := genJSONFeeds(dir, feeds, lines, 1); err != nil {
			t.Fatal(err)
		}
	}
	debug := 0
	for k := 1; k <= feeds; k++ {
		name := filepath.Join("feed-" + string(rune('0'+k)) + ".jsonl")
		x, err := os.ReadFile(filepath.Join(a, name))
		if err != nil {
			t.Fatal(err)
		}
		y, _ := os.ReadFile(filepath.Join(b, name))
		if !bytes.Equal(x, y) {
			t.Fatalf("%s differs between two runs with one seed", name)
		}
		var prev time.Time
		ls := bytes.Split(bytes.TrimSuffix(x, []byte("\n")), []byte("\n"))
		if len(ls) != lines {
			t.Fatalf("%s: %d lines, want %d", name, len(ls), lines)
		}
		for i, l := range ls {
			var r struct {
				TS     time.Time `json:"ts"`
				Feed   string    `json:"feed"`
				Seq    int       `json:"seq"`
				Level  string    `json:"level"`
				User   string    `json:"user"`
				Amount float64   `json:"amount"`
				Msg    string    `json:"msg"`
			}
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatalf("%s:%d: %v: %s", name, i+1, err, l)
			}
			if r.Seq != i || r.Feed+".jsonl" != name || !r.TS.After(prev) || r.User == "" || r.Msg == "" {
				t.Fatalf("%s:%d: bad record %s", name, i+1, l)
			}
			if n := len(l); n < 100 || n > 220 {
				t.Fatalf("%s:%d: %d bytes, want about 130-200", name, i+1, n)
			}
			prev = r.TS
			if r.Level == "debug" {
				debug++
			}
		}
	}
	if total := feeds * lines; debug < total/12 || debug > total/8 {
		t.Errorf("%d debug records of %d, want about 10%%", debug, total)
	}
}
