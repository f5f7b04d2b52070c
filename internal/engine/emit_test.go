package engine

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/stages"
)

// TestDeadLetterLine pins the dead-letter line of SPEC §2.
func TestDeadLetterLine(t *testing.T) {
	o := &stages.Origin{Source: "orders", Path: "/data/orders.jsonl"}
	got := string(appendDeadLetter(nil, &stages.Reject{
		Record: rec(o, 42, `{"a":`), Stage: "parse", Err: errors.New("unexpected end of JSON input"),
	}))
	want := `{"error":"unexpected end of JSON input","stage":"parse","source":"orders","origin":"/data/orders.jsonl:42","record":"{\"a\":"}`
	if got != want {
		t.Errorf("dead-letter line:\ngot  %s\nwant %s", got, want)
	}
}

func TestDeadLetterLineFields(t *testing.T) {
	o := &stages.Origin{Source: "app", Path: "/var/log/app.log"}
	invalid := []byte{'o', 'k', 0xff, 0xfe, '\n'}
	cases := []struct {
		name   string
		reject stages.Reject
		want   map[string]any
	}{
		{
			name:   "valid UTF-8 with characters to escape",
			reject: stages.Reject{Record: rec(o, 0, "tab\there \"quoted\" \\ \u2028 \x01 é"), Stage: "f", Err: errors.New("bad")},
			want: map[string]any{"error": "bad", "stage": "f", "source": "app", "origin": "/var/log/app.log:0",
				"record": "tab\there \"quoted\" \\ \u2028 \x01 é"},
		},
		{
			name:   "invalid UTF-8 becomes record_base64",
			reject: stages.Reject{Record: stages.Record{Raw: invalid, Origin: o, Offset: 7}, Stage: "p", Err: errors.New("invalid UTF-8")},
			want: map[string]any{"error": "invalid UTF-8", "stage": "p", "source": "app", "origin": "/var/log/app.log:7",
				"record_base64": base64.StdEncoding.EncodeToString(invalid)},
		},
		{
			name:   "over-long line keeps its length",
			reject: stages.Reject{Record: rec(o, 1024, "xxxx"), Stage: "app", Err: errors.New("line too long"), Length: 5000000},
			want: map[string]any{"error": "line too long", "stage": "app", "source": "app", "origin": "/var/log/app.log:1024",
				"record": "xxxx", "length": float64(5000000)},
		},
		{
			name:   "no error, no origin, unknown offset",
			reject: stages.Reject{Record: stages.Record{Raw: []byte("r")}, Stage: "s"},
			want:   map[string]any{"error": "bad record", "stage": "s", "source": "", "origin": "", "record": "r"},
		},
		{
			name:   "path only when the offset is unknown",
			reject: stages.Reject{Record: stages.Record{Raw: []byte("r"), Origin: o, Offset: -1}, Stage: "s", Err: errors.New("e")},
			want:   map[string]any{"error": "e", "stage": "s", "source": "app", "origin": "/var/log/app.log", "record": "r"},
		},
		{
			name:   "error text with invalid UTF-8 and newlines",
			reject: stages.Reject{Record: rec(o, 3, "r"), Stage: "s", Err: errors.New("near \xff\nhere")},
			want:   map[string]any{"error": "near \ufffd\nhere", "stage": "s", "source": "app", "origin": "/var/log/app.log:3", "record": "r"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			line := appendDeadLetter([]byte("prefix"), &c.reject)
			if !strings.HasPrefix(string(line), "prefix{") {
				t.Fatalf("appendDeadLetter did not append: %q", line)
			}
			line = line[len("prefix"):]
			if strings.ContainsAny(string(line), "\n\r") {
				t.Errorf("line %q contains a raw line break", line)
			}
			var got map[string]any
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("%s is not JSON: %v", line, err)
			}
			if len(got) != len(c.want) {
				t.Errorf("line %s has keys %v, want %v", line, keys(got), keys(c.want))
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("%s = %#v, want %#v (line %s)", k, got[k], v, line)
				}
			}
		})
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestEmitter checks the routing of a batch: records to every output,
// each its own copy; rejects to the dead-letter edge with their stage
// filled in; counters.
func TestEmitter(t *testing.T) {
	mx := NewMetrics()
	hard, cancel := context.WithCancel(context.Background())
	defer cancel()
	o1, o2, dl := newEdge(), newEdge(), newEdge()
	e := &emitter{stage: "w", outs: []chan msg{o1, o2}, dl: dl, hard: hard, m: mx.stage("p", "w"), badLog: zerolog.Nop()}
	o := &stages.Origin{Source: "src", Path: "/in"}
	b := &stages.Batch{
		Records: []stages.Record{rec(o, 0, "one"), rec(o, 4, "two")},
		Rejects: []stages.Reject{{Record: rec(o, 8, "bad"), Err: errors.New("boom")}, {Record: rec(o, 12, "worse"), Stage: "earlier", Err: errors.New("bang")}},
	}
	if !e.emit(msg{b: b}) {
		t.Fatal("emit reported a hard stop")
	}
	if !e.barrier(3) {
		t.Fatal("barrier reported a hard stop")
	}
	m1, m2, d := <-o1, <-o2, <-dl
	if m1.b == m2.b {
		t.Fatal("both outputs got the same *Batch; every downstream must own its batch")
	}
	m1.b.Records[0].Raw[0] = 'X'
	if got := flatten([]msg{m1, m2}); strings.Join(got, ",") != "Xne,two,one,two" {
		t.Errorf("outputs got %v: a copy must not share bytes with the other", got)
	}
	if len(m2.b.Rejects) != 0 {
		t.Errorf("rejects went downstream: %v", m2.b.Rejects)
	}
	lines := flatten([]msg{d})
	if len(lines) != 2 || !strings.Contains(lines[0], `"stage":"w"`) || !strings.Contains(lines[1], `"stage":"earlier"`) ||
		!strings.Contains(lines[0], `"origin":"/in:8"`) || !strings.Contains(lines[1], `"error":"bang"`) {
		t.Errorf("dead-letter lines: %v", lines)
	}
	for _, ch := range []chan msg{o1, o2, dl} {
		if m := <-ch; m.b != nil || m.epoch != 3 {
			t.Errorf("want barrier 3 on every edge, got %+v", m)
		}
	}
	checkCounter(t, "out", mx.recordsOut.WithLabelValues("p", "w"), 2)
	checkCounter(t, "dead-lettered", mx.deadLettered.WithLabelValues("p", "w"), 2)
	checkCounter(t, "errors", mx.errors.WithLabelValues("p", "w"), 2)

	// Without a dead-letter sink rejects are dropped and counted; without
	// outputs records are.
	e2 := &emitter{stage: "s", hard: hard, m: mx.stage("p", "s"), badLog: zerolog.Nop()}
	e2.emit(msg{b: &stages.Batch{Records: []stages.Record{rec(o, 0, "a")}, Rejects: []stages.Reject{{Record: rec(o, 2, "b")}}}})
	checkCounter(t, "bad_record drops", mx.dropped.WithLabelValues("p", "s", reasonBadRecord), 1)
	checkCounter(t, "no_output drops", mx.dropped.WithLabelValues("p", "s", reasonNoOutput), 1)

	// Once the hard stop has come, emit into full edges reports it
	// instead of blocking.
	for _, ch := range []chan msg{o1, o2} {
		for len(ch) < cap(ch) {
			ch <- msg{}
		}
	}
	cancel()
	if e.emit(msg{b: &stages.Batch{Records: []stages.Record{rec(o, 0, "x")}}}) {
		t.Error("emit into full edges after the hard stop reported success")
	}
}

// TestDeadLetterLineOfParsedRecord: a record rejected after a parser
// rewrote Raw (here by a later step) is dead-lettered with its original
// line, as SPEC §2 says, not with its fields.
func TestDeadLetterLineOfParsedRecord(t *testing.T) {
	o := &stages.Origin{Source: "app", Path: "/var/log/app.log"}
	r := rec(o, 7, "level=info ts=yesterday")
	r.SetParsed([]byte(`{"level":"info","ts":"yesterday"}`))
	got := string(appendDeadLetter(nil, &stages.Reject{Record: r, Stage: "w", Err: errors.New("parse_timestamp: bad")}))
	want := `{"error":"parse_timestamp: bad","stage":"w","source":"app","origin":"/var/log/app.log:7","record":"level=info ts=yesterday"}`
	if got != want {
		t.Errorf("dead-letter line:\ngot  %s\nwant %s", got, want)
	}
}

// TestCloneBatchCopiesLine: a second downstream's copy of a batch has its
// own copy of every record's original line too, since the original's
// buffers are reused once it is written.
func TestCloneBatchCopiesLine(t *testing.T) {
	b := &stages.Batch{Records: []stages.Record{rec(nil, 0, "a=1"), rec(nil, 1, `{"raw":true}`)}}
	b.Records[0].SetParsed([]byte(`{"a":"1"}`))
	c := cloneBatch(b)
	for i := range b.Records {
		copy(b.Records[i].Raw, "XXXXXXXXXXXX")
		copy(b.Records[i].Line, "XXXXXXXXXXXX")
	}
	if got := string(c.Records[0].Raw) + " " + string(c.Records[0].Line); got != `{"a":"1"} a=1` {
		t.Errorf("parsed clone: %q", got)
	}
	if c.Records[1].Line != nil || string(c.Records[1].Original()) != `{"raw":true}` {
		t.Errorf("unparsed clone: Line %q, Original %q", c.Records[1].Line, c.Records[1].Original())
	}
	c.Release()
}
