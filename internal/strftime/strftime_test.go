package strftime

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 4, 7, 0, 0, 0, time.UTC)
	tests := []struct {
		format, in string
		loc        *time.Location
		want       string // RFC 3339 in UTC, or "error: ..." (a substring)
	}{
		{"%d/%b/%Y:%H:%M:%S %z", "10/Oct/2000:13:55:36 -0700", time.UTC, "2000-10-10T20:55:36Z"},
		{"%d/%b/%Y:%H:%M:%S %z", "10/oct/2000:13:55:36 +05:30", time.UTC, "2000-10-10T08:25:36Z"},
		{"%Y-%m-%d %H:%M:%S.%f", "2024-03-01 12:00:00.5", berlin, "2024-03-01T11:00:00.5Z"},
		{"%Y-%m-%d %H:%M:%S,%f", "2024-07-01 12:00:00,123456789123", berlin, "2024-07-01T10:00:00.123456789Z"},
		{"%F %T", "2024-02-29 23:59:60", time.UTC, "2024-03-01T00:00:00Z"},
		{"%b %e %T", "Dec  4 06:00:01", time.UTC, "2026-12-04T06:00:01Z"},
		{"%b %e %T", "Dec 31 23:00:00", time.UTC, "2025-12-31T23:00:00Z"}, // year rule
		{"%b %e %T", "Dec  5 06:00:00", time.UTC, "2026-12-05T06:00:00Z"}, // within a day ahead
		{"%a, %d %B %Y %I:%M %p", "Thursday, 04 December 2026 07:30 pm", time.UTC, "2026-12-04T19:30:00Z"},
		{"%I:%M%p %D", "12:05AM 12/04/26", time.UTC, "2026-12-04T00:05:00Z"},
		{"%Y %j", "2024 366", time.UTC, "2024-12-31T00:00:00Z"},
		{"%s", "1700000000", time.UTC, "2023-11-14T22:13:20Z"},
		{"%s.%f", "1700000000.25", time.UTC, "2023-11-14T22:13:20.25Z"},
		{"%%%Y%n%R", "%2024\t10:20", time.UTC, "2024-01-01T10:20:00Z"},
		{"%Y-%m-%dT%H:%M:%S%z", "0001-01-01T00:30:00+01:00", time.UTC, "error: outside years 0001-9999"},
		{"%Y-%m-%dT%H:%M:%S%z", "9999-12-31T23:30:00-01:00", time.UTC, "error: outside years 0001-9999"},
		{"%Y-%m-%d", "0000-01-01", time.UTC, "error: year 0 is outside 0001-9999"},
		{"%Y-%m-%d", "2023-02-29", time.UTC, "error: February has no day 29 in 2023"},
		{"%Y %j", "2023 366", time.UTC, "error: day 366 of 2023"},
		{"%Y-%m-%d", "2023-13-01", time.UTC, "error: expected a month 01-12 at byte 5"},
		{"%Y-%m-%d", "2023-12-01x", time.UTC, "error: expected the end of the value at byte 10"},
		{"%Y-%m-%d", "2023/12/01", time.UTC, `error: expected "-" at byte 4, found "/12/01"`},
		{"%H:%M %z", "10:00 +25:00", time.UTC, "error: expected a UTC offset (Z, +hh, +hhmm or +hh:mm) at byte 6"},
		{"%H:%M %z", "10:00 +01:99", time.UTC, "error: expected a UTC offset"},
		{"%H:%M %z", "10:00 ", time.UTC, "error: expected a UTC offset (Z, +hh, +hhmm or +hh:mm) at byte 6, found the end"},
		{"%b", "Foo", time.UTC, "error: expected a month name at byte 0"},
		{"%s", "99999999999999999999", time.UTC, "error: expected Unix seconds in range at byte 0"},
		{"%s", "253402300800", time.UTC, "error: outside years 0001-9999"},
		{"%I %p", "13 PM", time.UTC, "error: expected an hour 01-12"},
		{"%d", "\xff", time.UTC, `error: expected a day of the month 01-31 at byte 0, found "\xff"`},
		{"%Y", "", time.UTC, "error: expected a year at byte 0, found the end"},
	}
	for _, tt := range tests {
		t.Run(tt.format+"|"+tt.in, func(t *testing.T) {
			l, err := Compile(tt.format)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parse(l, tt.in, tt.loc, now)
			if err != nil {
				got = "error: " + err.Error()
			}
			if want, isErr := strings.CutPrefix(tt.want, "error: "); isErr && !strings.Contains(got, want) || !isErr && got != want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func parse(l *Layout, in string, loc *time.Location, now time.Time) (string, error) {
	f, err := l.Parse([]byte(in))
	if err != nil {
		return "", err
	}
	year := 0
	if !l.HasYear {
		year = f.GuessYear(now, loc)
	}
	tm, err := f.Time(loc, year)
	if err != nil {
		return "", err
	}
	return tm.Format(time.RFC3339Nano), nil
}

// TestGuessYear: the year rule around New Year and February 29.
func TestGuessYear(t *testing.T) {
	l, err := Compile("%b %e %T")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ now, in, want string }{
		{"2027-01-01T00:30:00Z", "Dec 31 23:59:59", "2026-12-31T23:59:59Z"},
		// The rule never picks the next year: a line from a clock ahead of
		// ours across New Year gets this year's date.
		{"2026-12-31T23:00:00Z", "Jan  1 00:30:00", "2026-01-01T00:30:00Z"},
		{"2026-12-04T07:00:00Z", "Dec  5 06:59:59", "2026-12-05T06:59:59Z"}, // within a day ahead
		{"2026-12-04T07:00:00Z", "Dec  5 07:00:01", "2025-12-05T07:00:01Z"}, // over a day ahead
		{"2025-03-01T00:00:00Z", "Feb 29 12:00:00", "2024-02-29T12:00:00Z"},
		{"2024-02-29T13:00:00Z", "Feb 29 12:00:00", "2024-02-29T12:00:00Z"},
	} {
		now, _ := time.Parse(time.RFC3339, tt.now)
		got, err := parse(l, tt.in, time.UTC, now)
		if err != nil || got != tt.want {
			t.Errorf("now %s, %s: got %s, %v; want %s", tt.now, tt.in, got, err, tt.want)
		}
	}
}

func TestRFC3339(t *testing.T) {
	for in, want := range map[string]string{
		"2024-01-02T03:04:05Z":                "2024-01-02T03:04:05Z",
		"2024-01-02t03:04:05.123z":            "2024-01-02T03:04:05.123Z",
		"2024-01-02T03:04:05.999999999+02:00": "2024-01-02T01:04:05.999999999Z",
		"2024-01-02T03:04:05":                 "error",
		"2024-01-02 03:04:05Z":                "error",
	} {
		got, err := parse(RFC3339, in, time.UTC, time.Now())
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("%s: got %s, want %s", in, got, want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for format, want := range map[string]string{
		"":          "empty format",
		"%Y-%Q":     "unknown directive %Q at byte 3",
		"%H:%M %Z":  "%Z at byte 6: zone abbreviations are ambiguous",
		"%Y%":       "format ends with a lone % at byte 2",
		"%d/%b/%Y%": "lone % at byte 8",
	} {
		_, err := Compile(format)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Compile(%q) = %v, want %q", format, err, want)
		}
	}
}

func TestParseAllocs(t *testing.T) {
	l, err := Compile("%d/%b/%Y:%H:%M:%S %z")
	if err != nil {
		t.Fatal(err)
	}
	in := []byte("10/Oct/2000:13:55:36 -0700")
	n := testing.AllocsPerRun(100, func() {
		f, err := l.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Time(time.UTC, 0); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("%v allocations per Parse", n)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("%d/%b/%Y:%H:%M:%S %z", "10/Oct/2000:13:55:36 -0700")
	f.Add("%s.%f", "-99999999999.5")
	f.Add("%b %e %T", "Feb 29 00:00:00")
	f.Add("%Y %j %I %p", "9999 366 12 AM")
	f.Fuzz(func(t *testing.T, format, in string) {
		l, err := Compile(format)
		if err != nil {
			return
		}
		fl, err := l.Parse([]byte(in))
		if err != nil {
			return
		}
		loc := time.UTC
		if tm, err := fl.Time(loc, fl.GuessYear(time.Now(), loc)); err == nil {
			if y := tm.Year(); y < 1 || y > 9999 {
				t.Fatalf("year %d accepted", y)
			}
		}
	})
}
