package steps

import (
	"strings"
	"testing"
	"time"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/timekey"
)

// tsStep builds parse_timestamp from YAML with a fixed "now".
func tsStep(t testing.TB, src string, now time.Time) *parseTimestamp {
	t.Helper()
	cfg, err := loadConfig(t, "parse_timestamp", src)
	if err != nil {
		t.Fatalf("parse_timestamp %s: %v", src, err)
	}
	return newParseTimestamp(cfg.(*ParseTimestampConfig), func() time.Time { return now })
}

func TestParseTimestamp(t *testing.T) {
	now := time.Date(2026, 12, 4, 7, 0, 0, 0, time.UTC)
	tests := []struct {
		name, cfg, in, want string // want: the record, or "error: ..." (a substring)
	}{
		{"nginx", `{field: t, format: '%d/%b/%Y:%H:%M:%S %z'}`,
			`{"t":"10/Oct/2000:13:55:36 -0700","x":1}`, `{"t":"2000-10-10T20:55:36Z","x":1}`},
		{"rfc3339 default, offset normalised to UTC", `{field: t}`,
			`{"t":"2024-05-01T12:00:00.250+02:00"}`, `{"t":"2024-05-01T10:00:00.25Z"}`},
		{"target appended", `{field: t, target: ts, to: unix_ms}`,
			`{"t":"2024-05-01T00:00:00.123456Z"}`, `{"t":"2024-05-01T00:00:00.123456Z","ts":1714521600123}`},
		{"target replaced, duplicate removed", `{field: t, target: ts, to: unix}`,
			`{"ts":0,"t":"2024-05-01T00:00:00.5Z","ts":1}`, `{"ts":1714521600.5,"t":"2024-05-01T00:00:00.5Z"}`},
		{"timezone for a local format", `{field: t, format: '%Y-%m-%d %H:%M:%S', timezone: America/New_York}`,
			`{"t":"2024-07-04 09:00:00"}`, `{"t":"2024-07-04T13:00:00Z"}`},
		{"year rule", `{field: t, format: '%b %e %H:%M:%S'}`,
			`{"t":"Dec 31 23:59:59"}`, `{"t":"2025-12-31T23:59:59Z"}`},
		{"year rule, this year", `{field: t, format: '%b %e %H:%M:%S'}`,
			`{"t":"Dec  4 06:00:01"}`, `{"t":"2026-12-04T06:00:01Z"}`},
		{"unix number", `{field: t, format: unix}`, `{"t":1700000000.25}`, `{"t":"2023-11-14T22:13:20.25Z"}`},
		{"unix string", `{field: t, format: unix}`, `{"t":"1700000000"}`, `{"t":"2023-11-14T22:13:20Z"}`},
		{"unix negative", `{field: t, format: unix, to: unix}`, `{"t":-1.5}`, `{"t":-1.5}`},
		{"unix negative below 1", `{field: t, format: unix, to: unix}`, `{"t":"-0.25"}`, `{"t":-0.25}`},
		{"unix_ms negative", `{field: t, format: unix_ms, to: unix}`, `{"t":-1500}`, `{"t":-1.5}`},
		{"unix exponent", `{field: t, format: unix}`, `{"t":1.7e9}`, `{"t":"2023-11-14T22:13:20Z"}`},
		{"unix_ms", `{field: t, format: unix_ms}`, `{"t":1700000000123}`, `{"t":"2023-11-14T22:13:20.123Z"}`},
		{"unix_us", `{field: t, format: unix_us}`, `{"t":1700000000123456}`, `{"t":"2023-11-14T22:13:20.123456Z"}`},
		{"unix_ns", `{field: t, format: unix_ns, to: unix}`, `{"t":"1700000000000000001"}`, `{"t":1700000000.000000001}`},
		{"escaped string", `{field: t}`, `{"t":"2024-01-01T00:00:00\u005a"}`, `{"t":"2024-01-01T00:00:00Z"}`},

		{"missing", `{field: t}`, `{"x":1}`, `error: parse_timestamp: field "t" is missing`},
		{"not a string", `{field: t}`, `{"t":12}`, `error: field "t" is a number, want a string`},
		{"null for unix", `{field: t, format: unix}`, `{"t":null}`, `error: field "t": expected digits at byte 0`},
		{"bad value", `{field: t, format: '%d/%b/%Y'}`, `{"t":"10/Foo/2000"}`,
			`error: field "t": expected a month name at byte 3, found "Foo/2000"`},
		{"not rfc3339", `{field: t}`, `{"t":"2024-05-01 12:00:00Z"}`, `error: expected "T" at byte 10`},
		{"year 0", `{field: t}`, `{"t":"0000-12-31T23:00:00Z"}`, `error: year 0 is outside 0001-9999`},
		{"year 10000 after offset", `{field: t}`, `{"t":"9999-12-31T23:00:00-02:00"}`, `error: outside years 0001-9999`},
		{"nonsense offset", `{field: t}`, `{"t":"2024-01-01T00:00:00+99:00"}`, `error: expected a UTC offset`},
		{"huge unix", `{field: t, format: unix_ns}`, `{"t":99999999999999999999999}`, `error: expected a number in range at byte 0`},
		{"unix beyond 9999", `{field: t, format: unix}`, `{"t":300000000000}`, `error: outside years 0001-9999`},
		{"unix garbage", `{field: t, format: unix}`, `{"t":"12x"}`, `error: expected the end of the number at byte 2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := parsed(t, tt.in)
			tsStep(t, tt.cfg, now).Process(b)
			checkOne(t, b, tt.in, tt.want)
		})
	}
}

// checkOne checks the outcome of a step on the one record in: want is
// the kept record (valid JSON, Parsed), or "error: " and a part of the
// reject's error (the rejected record must be in as it was).
func checkOne(t *testing.T, b *stages.Batch, in, want string) {
	t.Helper()
	got := ""
	switch {
	case len(b.Records) == 1:
		got = string(b.Records[0].Raw)
		decodeRecord(t, b.Records[0].Raw)
		if !b.Records[0].Parsed {
			t.Error("record not Parsed")
		}
	case len(b.Rejects) == 1:
		got = "error: " + b.Rejects[0].Err.Error()
		if string(b.Rejects[0].Record.Raw) != in {
			t.Errorf("rejected record is %q, want the input", b.Rejects[0].Record.Raw)
		}
	}
	if w, isErr := strings.CutPrefix(want, "error: "); isErr && !strings.Contains(got, w) || !isErr && got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestParseTimestampNotParsed(t *testing.T) {
	b := readBatch(t, `{"t":"2024-01-01T00:00:00Z"}`)
	newStep(t, "parse_timestamp", "{field: t}").Process(b)
	if len(b.Records) != 0 || len(b.Rejects) != 1 || !strings.Contains(b.Rejects[0].Err.Error(), "not parsed") {
		t.Fatalf("records %q, rejects %q", rawLines(b.Records), rejectErrors(b.Rejects))
	}
}

// TestParseTimestampOutputsAreMergeKeys: the ordered merge's order_by
// reads what parse_timestamp writes, rfc3339 and unix, to the same key.
func TestParseTimestampOutputsAreMergeKeys(t *testing.T) {
	for _, in := range []string{"2024-05-01T12:00:00+02:00", "1999-12-31T23:59:59.999999999Z", "1970-01-01T00:00:00.1-00:30", "1969-12-31T23:59:58.75Z", "2250-06-30T23:59:59Z"} {
		want, err := time.Parse(time.RFC3339Nano, in)
		if err != nil {
			t.Fatal(err)
		}
		for _, to := range []string{"rfc3339", "unix"} {
			b := parsed(t, `{"t":"`+in+`"}`)
			newStep(t, "parse_timestamp", "{field: t, to: "+to+"}").Process(b)
			if len(b.Records) != 1 {
				t.Fatalf("%s to %s: rejected: %v", in, to, rejectErrors(b.Rejects))
			}
			v := decodeRecord(t, b.Records[0].Raw)["t"]
			var k int64
			raw := string(b.Records[0].Raw)
			val := raw[len(`{"t":`) : len(raw)-1]
			if to == "rfc3339" {
				k, err = timekey.RFC3339([]byte(strings.Trim(val, `"`)))
			} else {
				k, err = timekey.Seconds([]byte(val))
			}
			if err != nil || k != want.UnixNano() {
				t.Errorf("%s to %s = %v: timekey %d, %v; want %d", in, to, v, k, err, want.UnixNano())
			}
		}
	}
}

func TestParseTimestampConfigErrors(t *testing.T) {
	_, err := loadConfig(t, "parse_timestamp", `{format: '%Y-%Q %Z', timezone: Mars/Base, to: iso}`)
	if err == nil {
		t.Fatal("no error")
	}
	got := err.Error()
	for _, want := range []string{
		"field: parse_timestamp: field is required",
		"format: parse_timestamp: unknown directive %Q at byte 3",
		`timezone: parse_timestamp: unknown time zone "Mars/Base"`,
		`to: parse_timestamp: "iso" is not one of rfc3339, unix, unix_ms`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("error %q lacks %q", got, want)
		}
	}
	fe := fieldErr(t, err)
	if fe.Field != "field" {
		t.Errorf("first error is at %q", fe.Field)
	}
	if _, err := loadConfig(t, "parse_timestamp", `{field: t, format: '%H %Z'}`); err == nil || !strings.Contains(err.Error(), "zone abbreviations are ambiguous") {
		t.Errorf("%%Z: %v", err)
	}
}

func BenchmarkParseTimestamp(b *testing.B) {
	for _, bc := range []struct{ name, cfg, line string }{
		{"strftime", `{field: time, format: '%d/%b/%Y:%H:%M:%S %z'}`,
			`{"remote":"203.0.113.9","time":"10/Oct/2000:13:55:36 -0700","request":"GET / HTTP/1.1","status":200}`},
		{"rfc3339", `{field: ts, target: t2}`,
			`{"ts":"2024-05-01T12:00:00.123456+02:00","level":"info","msg":"hello"}`},
		{"unix_ms", `{field: ts, format: unix_ms, to: unix}`, `{"ts":1714521600123,"level":"info","msg":"hello"}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			st := newStep(b, "parse_timestamp", bc.cfg)
			lines := make([]string, 256)
			for i := range lines {
				lines[i] = bc.line
			}
			benchRecords(b, st, parsed(b, lines...).Records)
		})
	}
}

// benchRecords runs st over copies of recs, which it must all keep, and
// reports the time per record; allocs/op are per batch of len(recs).
func benchRecords(b *testing.B, st stages.Step, recs []stages.Record) {
	own := make([]stages.Record, len(recs))
	b.ReportAllocs()
	n := 0
	for _, r := range recs {
		n += len(r.Raw)
	}
	b.SetBytes(int64(n))
	cpu0 := processCPU()
	for b.Loop() {
		copy(own, recs)
		batch := &stages.Batch{Records: own}
		st.Process(batch)
		if len(batch.Records) != len(recs) {
			b.Fatal(rejectErrors(batch.Rejects))
		}
		batch.Records = nil // own is not pooled; its buffers are
		batch.Release()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/record")
	b.ReportMetric(float64(b.N*len(recs))/b.Elapsed().Seconds(), "lines/s")
	reportCPU(b, cpu0, b.N*len(recs))
}

// reportCPU reports the process's CPU time since cpu0 per record, when
// it is measured (see processCPU).
func reportCPU(b *testing.B, cpu0 int64, records int) {
	if cpu1 := processCPU(); cpu0 > 0 && cpu1 > cpu0 {
		b.ReportMetric(float64(cpu1-cpu0)/float64(records), "cpu-ns/record")
	}
}

// TestParseTimestampRepeatedText: records whose time text repeats reuse
// the previous value; a different or bad text in between must not leak
// into the next record.
func TestParseTimestampRepeatedText(t *testing.T) {
	st := newStep(t, "parse_timestamp", `{field: t, format: '%d/%b/%Y:%H:%M:%S %z', target: ts}`)
	b := parsed(t,
		`{"t":"10/Oct/2000:13:55:36 -0700"}`,
		`{"t":"10/Oct/2000:13:55:36 -0700"}`,
		`{"t":"10/Oct/2000:13:55:37 -0700"}`,
		`{"t":"10/Oct/2000:13:55:36 -0700"}`,
		`{"t":"99/Oct/2000:13:55:36 -0700"}`,
		`{"t":"10/Oct/2000:13:55:36 -0700"}`,
		`{"t":"10/Oct/2000:13:55:36 +0000"}`,
		`{"t":"10/Oct/2000:13:55:36 +0000"}`,
	)
	st.Process(b)
	want := []string{"2000-10-10T20:55:36Z", "2000-10-10T20:55:36Z", "2000-10-10T20:55:37Z", "2000-10-10T20:55:36Z",
		"2000-10-10T20:55:36Z", "2000-10-10T13:55:36Z", "2000-10-10T13:55:36Z"}
	if len(b.Records) != len(want) || len(b.Rejects) != 1 {
		t.Fatalf("kept %d, rejected %d: %v", len(b.Records), len(b.Rejects), rejectErrors(b.Rejects))
	}
	for i, w := range want {
		if got := decodeRecord(t, b.Records[i].Raw)["ts"]; got != w {
			t.Errorf("record %d: ts %v, want %s", i, got, w)
		}
	}
}

// BenchmarkParseTimestampDistinct is BenchmarkParseTimestamp/strftime
// with a different second on every line, so that no time is reused from
// the line before (see parseTimestamp.value).
func BenchmarkParseTimestampDistinct(b *testing.B) {
	st := newStep(b, "parse_timestamp", `{field: time, format: '%d/%b/%Y:%H:%M:%S %z'}`)
	lines := make([]string, 256)
	t0 := time.Date(2000, 10, 10, 13, 55, 36, 0, time.FixedZone("", -7*3600))
	for i := range lines {
		lines[i] = `{"remote":"203.0.113.9","time":"` + t0.Add(time.Duration(i)*time.Second).Format("02/Jan/2006:15:04:05 -0700") +
			`","request":"GET / HTTP/1.1","status":200}`
	}
	benchRecords(b, st, parsed(b, lines...).Records)
}
