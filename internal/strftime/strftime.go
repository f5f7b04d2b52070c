// Package strftime parses times written in a strftime-style format such as
// `%d/%b/%Y:%H:%M:%S %z`. A format is compiled once (Compile) into a slice
// of directives; Parse then reads a value without allocating for a good
// one.
//
// Directives: %Y (year), %y (two-digit year: 69-99 are 19xx, 00-68 20xx),
// %m, %d, %e (day, space-padded), %j (day of the year), %H, %I (12-hour
// clock, with %p for AM/PM), %M, %S (0-60), %f (1 to 9 fraction digits;
// more are read and dropped), %z (Z, +hh, +hhmm or +hh:mm), %b/%h and %B
// (month name, abbreviated or full; either is accepted by both), %a and %A
// (day name, read and ignored), %s (Unix seconds), %T (%H:%M:%S), %F
// (%Y-%m-%d), %D (%m/%d/%y), %R (%H:%M), %n and %t (white space) and %%.
// Names are matched without regard to case. A space in the format matches
// any run of white space, none included, as strptime does. %Z (a zone
// abbreviation such as CET) is refused: abbreviations are ambiguous, so
// give the offset with %z or a time zone name to the caller.
//
// A value must match the whole format. Errors say what was expected at
// which byte of the value.
package strftime

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

type kind uint8

const (
	kLit       kind = iota // lit, byte for byte
	kSpace                 // any run of white space
	kYear                  // %Y
	kYear2                 // %y
	kMonth                 // %m
	kDay                   // %d
	kDaySpace              // %e
	kYearDay               // %j
	kHour                  // %H
	kHour12                // %I
	kMinute                // %M
	kSecond                // %S
	kFrac                  // %f
	kFracOpt               // an optional .fraction (rfc3339)
	kZone                  // %z
	kMonthName             // %b %B %h
	kDayName               // %a %A
	kAMPM                  // %p
	kUnix                  // %s
)

type item struct {
	kind kind
	lit  string
}

// Layout is a compiled format. It is read-only and safe for concurrent use.
type Layout struct {
	items []item
	// HasYear: the format gives the year (%Y, %y or %s); without it the
	// caller picks one (see GuessYear).
	HasYear bool
	// HasZone: the format gives the offset (%z or %s); without it the
	// caller's time zone applies.
	HasZone bool
}

// RFC3339 is the layout of RFC 3339 times (fraction optional), with a
// lower-case t or z accepted as the RFC allows.
var RFC3339 = &Layout{items: []item{
	{kind: kYear}, {kind: kLit, lit: "-"}, {kind: kMonth}, {kind: kLit, lit: "-"}, {kind: kDay},
	{kind: kLit, lit: "T"}, {kind: kHour}, {kind: kLit, lit: ":"}, {kind: kMinute}, {kind: kLit, lit: ":"},
	{kind: kSecond}, {kind: kFracOpt}, {kind: kZone},
}, HasYear: true, HasZone: true}

// Compile checks format and compiles it. Its error names the first bad
// directive and its byte offset in format.
func Compile(format string) (*Layout, error) {
	if format == "" {
		return nil, errors.New("empty format")
	}
	l := &Layout{}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			l.items = append(l.items, item{kind: kLit, lit: lit.String()})
			lit.Reset()
		}
	}
	add := func(ks ...kind) {
		flush()
		for _, k := range ks {
			if k == kLit {
				continue
			}
			l.items = append(l.items, item{kind: k})
		}
	}
	addLit := func(s string) { flush(); l.items = append(l.items, item{kind: kLit, lit: s}) }
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c == ' ' || c == '\t' || c == '\n' {
			add(kSpace)
			for i+1 < len(format) && (format[i+1] == ' ' || format[i+1] == '\t' || format[i+1] == '\n') {
				i++
			}
			continue
		}
		if c != '%' {
			lit.WriteByte(c)
			continue
		}
		if i+1 == len(format) {
			return nil, fmt.Errorf("format ends with a lone %% at byte %d (write %%%% for a literal %%)", i)
		}
		i++
		switch format[i] {
		case 'Y':
			add(kYear)
			l.HasYear = true
		case 'y':
			add(kYear2)
			l.HasYear = true
		case 'm':
			add(kMonth)
		case 'd':
			add(kDay)
		case 'e':
			add(kDaySpace)
		case 'j':
			add(kYearDay)
		case 'H':
			add(kHour)
		case 'I':
			add(kHour12)
		case 'M':
			add(kMinute)
		case 'S':
			add(kSecond)
		case 'f':
			add(kFrac)
		case 'z':
			add(kZone)
			l.HasZone = true
		case 'b', 'B', 'h':
			add(kMonthName)
		case 'a', 'A':
			add(kDayName)
		case 'p':
			add(kAMPM)
		case 's':
			add(kUnix)
			l.HasYear, l.HasZone = true, true
		case 'T':
			add(kHour)
			addLit(":")
			add(kMinute)
			addLit(":")
			add(kSecond)
		case 'R':
			add(kHour)
			addLit(":")
			add(kMinute)
		case 'F':
			add(kYear)
			addLit("-")
			add(kMonth)
			addLit("-")
			add(kDay)
			l.HasYear = true
		case 'D':
			add(kMonth)
			addLit("/")
			add(kDay)
			addLit("/")
			add(kYear2)
			l.HasYear = true
		case 'n', 't':
			add(kSpace)
		case '%':
			lit.WriteByte('%')
		case 'Z':
			return nil, fmt.Errorf("%%Z at byte %d: zone abbreviations are ambiguous; use %%z, or the timezone option for times without an offset", i-1)
		default:
			return nil, fmt.Errorf("unknown directive %%%c at byte %d", format[i], i-1)
		}
	}
	flush()
	return l, nil
}

// Fields is what Parse read. Month, Day, Hour... are as written (Month
// 1-12); fields the format lacks are zero, except Month and Day (1).
type Fields struct {
	Year, Month, Day, YearDay int
	Hour, Minute, Second      int
	Nanosecond                int
	// Offset is the zone offset in seconds east of UTC, when HasOffset.
	Offset    int
	HasOffset bool
	// Unix is set by %s: the time is UnixSec (UTC), and wins.
	Unix    bool
	UnixSec int64
}

var months = [...]string{"january", "february", "march", "april", "may", "june", "july",
	"august", "september", "october", "november", "december"}

var days = [...]string{"sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"}

// maxOffset bounds %z: real offsets lie within ±14h; ±18h is the bound
// other parsers use.
const maxOffset = 18 * 3600

// Parse reads s, which must match the layout entirely. It does not
// allocate unless it fails.
func (l *Layout) Parse(s []byte) (Fields, error) {
	f := Fields{Month: 1, Day: 1}
	i := 0
	pm, hasPM := false, false
	hour12 := -1
	for _, it := range l.items {
		var ok bool
		start := i
		switch it.kind {
		case kLit:
			if len(s)-i < len(it.lit) || !equalFold(s[i:i+len(it.lit)], it.lit) {
				return f, expected(fmt.Sprintf("%q", it.lit), s, i)
			}
			i += len(it.lit)
			continue
		case kSpace:
			for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
				i++
			}
			continue
		case kYear:
			f.Year, i, ok = num(s, i, 1, 4)
			if !ok {
				return f, expected("a year", s, start)
			}
		case kYear2:
			f.Year, i, ok = num(s, i, 2, 2)
			if !ok {
				return f, expected("a two-digit year", s, start)
			}
			if f.Year < 69 {
				f.Year += 2000
			} else {
				f.Year += 1900
			}
		case kMonth:
			if f.Month, i, ok = num(s, i, 1, 2); !ok || f.Month < 1 || f.Month > 12 {
				return f, expected("a month 01-12", s, start)
			}
		case kDay, kDaySpace:
			if it.kind == kDaySpace && i < len(s) && s[i] == ' ' {
				i++
			}
			start = i
			if f.Day, i, ok = num(s, i, 1, 2); !ok || f.Day < 1 || f.Day > 31 {
				return f, expected("a day of the month 01-31", s, start)
			}
		case kYearDay:
			if f.YearDay, i, ok = num(s, i, 1, 3); !ok || f.YearDay < 1 || f.YearDay > 366 {
				return f, expected("a day of the year 001-366", s, start)
			}
		case kHour:
			if f.Hour, i, ok = num(s, i, 1, 2); !ok || f.Hour > 23 {
				return f, expected("an hour 00-23", s, start)
			}
		case kHour12:
			if hour12, i, ok = num(s, i, 1, 2); !ok || hour12 < 1 || hour12 > 12 {
				return f, expected("an hour 01-12", s, start)
			}
		case kMinute:
			if f.Minute, i, ok = num(s, i, 1, 2); !ok || f.Minute > 59 {
				return f, expected("a minute 00-59", s, start)
			}
		case kSecond:
			if f.Second, i, ok = num(s, i, 1, 2); !ok || f.Second > 60 {
				return f, expected("a second 00-60", s, start)
			}
		case kFrac:
			if f.Nanosecond, i, ok = frac(s, i); !ok {
				return f, expected("fraction digits", s, i)
			}
		case kFracOpt:
			if i < len(s) && (s[i] == '.' || s[i] == ',') {
				if f.Nanosecond, i, ok = frac(s, i+1); !ok {
					return f, expected("fraction digits", s, i+1)
				}
			}
		case kZone:
			if f.Offset, i, ok = zone(s, i); !ok {
				return f, expected("a UTC offset (Z, +hh, +hhmm or +hh:mm)", s, start)
			}
			f.HasOffset = true
		case kMonthName:
			m, n := name(s[i:], months[:])
			if n == 0 {
				return f, expected("a month name", s, i)
			}
			f.Month, i = m+1, i+n
		case kDayName:
			_, n := name(s[i:], days[:])
			if n == 0 {
				return f, expected("a day name", s, i)
			}
			i += n
		case kAMPM:
			if len(s)-i < 2 || !equalFold(s[i+1:i+2], "m") || (s[i]|0x20 != 'a' && s[i]|0x20 != 'p') {
				return f, expected("AM or PM", s, i)
			}
			pm, hasPM = s[i]|0x20 == 'p', true
			i += 2
		case kUnix:
			neg := i < len(s) && s[i] == '-'
			if neg {
				i++
			}
			var sec int64
			j := i
			for ; j < len(s) && s[j] >= '0' && s[j] <= '9'; j++ {
				if j-i >= 12 { // beyond year 9999 anyway
					return f, expected("Unix seconds in range", s, start)
				}
				sec = sec*10 + int64(s[j]-'0')
			}
			if j == i {
				return f, expected("Unix seconds", s, start)
			}
			i = j
			if neg {
				sec = -sec
			}
			f.Unix, f.UnixSec = true, sec
		}
	}
	if i != len(s) {
		return f, expected("the end of the value", s, i)
	}
	if hour12 >= 0 {
		f.Hour = hour12 % 12
		if pm {
			f.Hour += 12
		}
	} else if hasPM && pm && f.Hour < 12 {
		f.Hour += 12
	}
	return f, nil
}

// Time turns fields into a time: a format without an offset is read in
// loc; a format without a year takes it from year (see GuessYear). The result
// must lie within years 0001-9999 (in UTC too).
func (f *Fields) Time(loc *time.Location, year int) (time.Time, error) {
	if f.Unix {
		t := time.Unix(f.UnixSec, int64(f.Nanosecond)).UTC()
		return t, checkYear(t)
	}
	y := f.Year
	if y == 0 && year != 0 {
		y = year
	}
	if y < 1 || y > 9999 {
		return time.Time{}, fmt.Errorf("year %d is outside 0001-9999", y)
	}
	month, day := time.Month(f.Month), f.Day
	if f.YearDay > 0 {
		if f.YearDay == 366 && !isLeap(y) {
			return time.Time{}, fmt.Errorf("day 366 of %04d, which has 365", y)
		}
		month, day = time.January, f.YearDay
	} else if day > daysIn(y, month) {
		return time.Time{}, fmt.Errorf("%s has no day %d in %04d", month, day, y)
	}
	var t time.Time
	if f.HasOffset {
		t = time.Date(y, month, day, f.Hour, f.Minute, f.Second, f.Nanosecond, time.UTC).Add(-time.Duration(f.Offset) * time.Second)
	} else {
		t = time.Date(y, month, day, f.Hour, f.Minute, f.Second, f.Nanosecond, loc).UTC()
	}
	return t, checkYear(t)
}

// GuessYear is the year rule for times written without one (RFC 3164 syslog,
// `%b %e %H:%M:%S`): the year of now in loc, or the one before when
// that would put the time more than a day after now.
func (f *Fields) GuessYear(now time.Time, loc *time.Location) int {
	y := now.In(loc).Year()
	g := *f
	g.Year = y
	if t, err := g.Time(loc, y); err == nil && t.After(now.Add(24*time.Hour)) {
		return y - 1
	}
	if g.Month == 2 && g.Day == 29 && !isLeap(y) && isLeap(y-1) {
		return y - 1 // Feb 29 of this year does not exist: the last one that did
	}
	return y
}

func checkYear(t time.Time) error {
	if y := t.Year(); y < 1 || y > 9999 {
		return fmt.Errorf("time is outside years 0001-9999 in UTC (year %d)", y)
	}
	return nil
}

func isLeap(y int) bool { return y%4 == 0 && (y%100 != 0 || y%400 == 0) }

func daysIn(y int, m time.Month) int {
	switch m {
	case time.February:
		if isLeap(y) {
			return 29
		}
		return 28
	case time.April, time.June, time.September, time.November:
		return 30
	}
	return 31
}

// SyntaxError is a value that does not match its format.
type SyntaxError struct {
	Want string // what was expected
	Byte int    // at which byte of the value
	Got  string // what is there (quoted), or "the end"
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("expected %s at byte %d, found %s", e.Want, e.Byte, e.Got)
}

func expected(want string, s []byte, i int) error {
	got := "the end"
	if i < len(s) {
		end := min(len(s), i+8)
		got = fmt.Sprintf("%q", s[i:end])
	}
	return &SyntaxError{Want: want, Byte: i, Got: got}
}

// num reads between lo and hi decimal digits at s[i:].
func num(s []byte, i, lo, hi int) (v, next int, ok bool) {
	j := i
	for ; j < len(s) && j-i < hi && s[j] >= '0' && s[j] <= '9'; j++ {
		v = v*10 + int(s[j]-'0')
	}
	if j-i < lo {
		return 0, i, false
	}
	return v, j, true
}

// frac reads 1 or more fraction digits as nanoseconds (beyond 9 dropped).
func frac(s []byte, i int) (ns, next int, ok bool) {
	j := i
	for ; j < len(s) && s[j] >= '0' && s[j] <= '9'; j++ {
		if j-i < 9 {
			ns = ns*10 + int(s[j]-'0')
		}
	}
	if j == i {
		return 0, i, false
	}
	for k := j - i; k < 9; k++ {
		ns *= 10
	}
	return ns, j, true
}

// zone reads Z, +hh, +hhmm or +hh:mm.
func zone(s []byte, i int) (off, next int, ok bool) {
	if i < len(s) && (s[i] == 'Z' || s[i] == 'z') {
		return 0, i + 1, true
	}
	if i >= len(s) || (s[i] != '+' && s[i] != '-') {
		return 0, i, false
	}
	sign := 1
	if s[i] == '-' {
		sign = -1
	}
	h, j, ok := num(s, i+1, 2, 2)
	if !ok {
		return 0, i, false
	}
	m := 0
	if j < len(s) && s[j] == ':' {
		if m, j, ok = num(s, j+1, 2, 2); !ok {
			return 0, i, false
		}
	} else if j+1 < len(s) && s[j] >= '0' && s[j] <= '9' {
		if m, j, ok = num(s, j, 2, 2); !ok {
			return 0, i, false
		}
	}
	off = h*3600 + m*60
	if m > 59 || off > maxOffset {
		return 0, i, false
	}
	return sign * off, j, true
}

// name matches a full name of names, or its first three letters, at the
// start of s, without regard to case. It returns the index and the length
// matched (0: none).
func name(s []byte, names []string) (int, int) {
	for k, n := range names {
		if len(s) >= len(n) && equalFold(s[:len(n)], n) {
			return k, len(n)
		}
	}
	if len(s) >= 3 {
		for k, n := range names {
			if equalFold(s[:3], n[:3]) {
				return k, 3
			}
		}
	}
	return 0, 0
}

// equalFold compares ASCII letters without regard to case.
func equalFold(b []byte, s string) bool {
	for i := range len(s) {
		x, y := b[i], s[i]
		if x == y {
			continue
		}
		if x|0x20 != y|0x20 || x|0x20 < 'a' || x|0x20 > 'z' {
			return false
		}
	}
	return true
}
