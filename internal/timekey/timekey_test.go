package timekey

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestParse: RFC3339 and Seconds read valid values exactly and reject
// the others with an error that says why.
func TestParse(t *testing.T) {
	for _, tt := range []struct {
		parse func([]byte) (int64, error)
		in    string
		want  int64
		err   string
	}{
		{RFC3339, "1970-01-01T00:00:01Z", 1e9, ""},
		{RFC3339, "1970-01-01T00:00:01.5+00:00", 1.5e9, ""},
		{RFC3339, "1970-01-01T01:00:00+01:00", 0, ""},
		{RFC3339, "2026-11-27T10:00:00.123456789Z", time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC).UnixNano(), ""},
		{RFC3339, "1969-12-31T23:59:59Z", -1e9, ""},
		{RFC3339, "yesterday", 0, "not an RFC 3339 time"},
		{RFC3339, "2026-11-27", 0, "not an RFC 3339 time"},
		{RFC3339, "", 0, "not an RFC 3339 time"},
		{RFC3339, "3000-01-01T00:00:00Z", 0, "out of range"},
		{RFC3339, "1600-01-01T00:00:00Z", 0, "out of range"},
		{Seconds, "1", 1e9, ""},
		{Seconds, "0", 0, ""},
		{Seconds, "1764237600.123456789", 1764237600123456789, ""},
		{Seconds, "1.5", 1.5e9, ""},
		{Seconds, "1.1234567891", 1123456789, ""}, // beyond ns: truncated
		{Seconds, "-1.5", -1.5e9, ""},
		{Seconds, "1.5e3", 1500e9, ""},
		{Seconds, "99999999999", 0, "in range"},
		{Seconds, "1e12", 0, "in range"},
		{Seconds, "1.x", 0, "in range"},
		{Seconds, "abc", 0, "in range"},
	} {
		got, err := tt.parse([]byte(tt.in))
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%q: %v", tt.in, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%q: error %v, want one with %q", tt.in, err, tt.err)
		case tt.err == "" && got != tt.want:
			t.Errorf("%q: %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestFastUTCAgreesWithTimeParse: the fast path gives time.Parse's
// result exactly, or leaves the input to it.
func TestFastUTCAgreesWithTimeParse(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	var inputs []string
	for range 20000 {
		ts := time.Unix(rnd.Int64N(2*365*86400*300)-365*86400*290, rnd.Int64N(1e9)).UTC()
		inputs = append(inputs, ts.Format(time.RFC3339Nano), ts.Format(time.RFC3339), ts.Format("2006-01-02T15:04:05.000000Z"))
	}
	inputs = append(inputs, "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2000-02-29T23:59:59.999999999Z",
		"1900-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-00-10T00:00:00Z", "2024-01-32T00:00:00Z",
		"2024-01-01T24:00:00Z", "2024-01-01T23:60:00Z", "2024-01-01T23:59:60Z", "2024-01-01T00:00:00.Z",
		"2024-01-01T00:00:00.1234567891Z", "2024-01-01t00:00:00Z", "2024-01-01T00:00:00+00:00",
		"1677-12-31T23:59:59Z", "1678-01-01T00:00:00Z", "2262-01-01T00:00:00Z", "2261-12-31T23:59:59.5Z",
		"１２３４-01-01T00:00:00Z", "2024-01-01T00:00:0xZ", "0000-01-01T00:00:00Z")
	for _, in := range inputs {
		fast, ok := fastUTC([]byte(in))
		if !ok {
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, in)
		if err != nil {
			t.Errorf("%s: fast path accepts it (%d), time.Parse does not: %v", in, fast, err)
			continue
		}
		if ts.UnixNano() != fast {
			t.Errorf("%s: fast %d, time.Parse %d", in, fast, ts.UnixNano())
		}
	}
	if _, ok := fastUTC([]byte("2026-11-27T10:00:00.123456Z")); !ok {
		t.Error("the common layout misses the fast path")
	}
}

var sink int64

func BenchmarkRFC3339(b *testing.B) {
	for _, bm := range []struct{ name, in string }{
		{"fast", "2026-11-27T10:00:00.123456Z"},
		{"offset", "2026-11-27T10:00:00.123456+01:00"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			in := []byte(bm.in)
			b.ReportAllocs()
			for b.Loop() {
				k, err := RFC3339(in)
				if err != nil {
					b.Fatal(err)
				}
				sink += k
			}
		})
	}
}

func BenchmarkSeconds(b *testing.B) {
	in := []byte("1764237600.123456789")
	b.ReportAllocs()
	for b.Loop() {
		k, err := Seconds(in)
		if err != nil {
			b.Fatal(err)
		}
		sink += k
	}
}
