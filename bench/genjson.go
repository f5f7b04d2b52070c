package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The JSON feeds of W1, W2, WM (and the broker workloads): -feeds files
// named feed-1.jsonl .. feed-N.jsonl of -lines lines each, every line
// one JSON object of about 130-200 bytes,
//
//	{"ts":"2026-11-26T10:00:00.001171Z","feed":"feed-2","seq":0,"level":"info","user":"u7578","amount":426.01,"msg":"queue retry alpha"}
//
// ts strictly increases within a feed (1 µs to 2 ms apart, feeds offset
// so that they interleave when merged by ts), seq counts 0, 1, 2, ...,
// level is "debug" for about one record in ten (what W2 drops), "warn"
// and "error" for a few, "info" otherwise. A seed gives the same bytes
// every time.

// msgWords are the words of the msg field.
var msgWords = [...]string{
	"order", "payment", "refund", "shipped", "cart", "login", "logout",
	"timeout", "retry", "cache", "miss", "hit", "request", "response",
	"upstream", "latency", "queue", "worker", "batch", "commit", "rollback",
	"alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "sierra",
	"tango", "victor", "zulu", "disk", "socket", "handshake", "session",
}

// genJSONFeeds writes the feeds into dir (created if missing).
func genJSONFeeds(dir string, feeds, lines int, seed uint64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	start := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for k := 1; k <= feeds; k++ {
		if err := genJSONFeed(dir, k, lines, seed, start); err != nil {
			return err
		}
	}
	return nil
}

func genJSONFeed(dir string, k, lines int, seed uint64, start time.Time) error {
	return genJSONFeedSized(dir, k, lines, seed, start, 0)
}

// genJSONFeedSized is genJSONFeed with msg padded by more words until
// each line is about size bytes (0: as they come, 130-200 bytes).
func genJSONFeedSized(dir string, k, lines int, seed uint64, start time.Time, size int) error {
	name := "feed-" + strconv.Itoa(k)
	f, err := os.Create(filepath.Join(dir, name+".jsonl"))
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(seed, uint64(k)))
	ts := start.Add(time.Duration(k) * 113 * time.Microsecond)
	line := make([]byte, 0, max(256, size+16))
	for seq := range lines {
		ts = ts.Add(time.Duration(1+rng.IntN(2000)) * time.Microsecond)
		line = append(line[:0], `{"ts":"`...)
		line = ts.AppendFormat(line, "2006-01-02T15:04:05.000000Z")
		line = append(line, `","feed":"`...)
		line = append(line, name...)
		line = append(line, `","seq":`...)
		line = strconv.AppendInt(line, int64(seq), 10)
		line = append(line, `,"level":"`...)
		line = append(line, pickLevel(rng.IntN(100))...)
		line = append(line, `","user":"u`...)
		line = strconv.AppendInt(line, int64(rng.IntN(10000)), 10)
		line = append(line, `","amount":`...)
		cents := rng.IntN(100000)
		line = strconv.AppendInt(line, int64(cents/100), 10)
		line = append(line, '.', byte('0'+cents/10%10), byte('0'+cents%10))
		line = append(line, `,"msg":"`...)
		for i := range 3 + rng.IntN(8) {
			if i > 0 {
				line = append(line, ' ')
			}
			line = append(line, msgWords[rng.IntN(len(msgWords))]...)
		}
		for len(line)+12 < size {
			line = append(append(line, ' '), msgWords[rng.IntN(len(msgWords))]...)
		}
		line = append(line, "\"}\n"...)
		if _, err := w.Write(line); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	return f.Close()
}

// pickLevel maps a percentile to a level: 10% debug, 7% warn, 3% error.
func pickLevel(p int) string {
	switch {
	case p < 10:
		return "debug"
	case p < 17:
		return "warn"
	case p < 20:
		return "error"
	}
	return "info"
}
