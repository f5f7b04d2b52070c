// Package timekey reads timestamps as int64 Unix nanoseconds, the sort key
// of the ordered merge (SPEC §5): an RFC 3339 time, or a number of Unix
// seconds with an optional fraction. The common UTC layout
// YYYY-MM-DDTHH:MM:SS[.f...]Z is read without time.Parse, which would
// otherwise be most of the merge's cost per record.
//
// Keys cover the times an int64 of nanoseconds can hold: years 1678 to
// 2262. Both functions return an error that quotes the value; callers add
// the field name.
package timekey

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// minTime and maxTime bound the times a key can hold (int64 nanoseconds
// since 1970).
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

// RFC3339 reads s, an RFC 3339 time (fractional seconds allowed), as Unix
// nanoseconds. s is not retained.
func RFC3339(s []byte) (int64, error) {
	if k, ok := fastUTC(s); ok {
		return k, nil
	}
	str := unsafe.String(unsafe.SliceData(s), len(s))
	t, err := time.Parse(time.RFC3339Nano, str)
	if err != nil {
		return 0, fmt.Errorf("%q is not an RFC 3339 time", s)
	}
	if t.Before(minTime) || t.After(maxTime) {
		return 0, fmt.Errorf("%q is out of range (years 1678 to 2262)", s)
	}
	return t.UnixNano(), nil
}

// fastUTC reads the most common layout, YYYY-MM-DDTHH:MM:SS[.f...]Z
// (UTC, up to 9 fractional digits), without time.Parse. Anything else
// (offsets, odd values) is left to time.Parse: ok is false.
func fastUTC(s []byte) (int64, bool) {
	n := len(s)
	if n < 20 || s[n-1] != 'Z' || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return 0, false
	}
	num := func(i, w int) (int, bool) {
		v := 0
		for _, c := range s[i : i+w] {
			if c < '0' || c > '9' {
				return 0, false
			}
			v = v*10 + int(c-'0')
		}
		return v, true
	}
	year, ok1 := num(0, 4)
	month, ok2 := num(5, 2)
	day, ok3 := num(8, 2)
	hour, ok4 := num(11, 2)
	minute, ok5 := num(14, 2)
	sec, ok6 := num(17, 2)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || year < 1678 || year > 2261 ||
		month < 1 || month > 12 || day < 1 || day > daysIn(year, month) || hour > 23 || minute > 59 || sec > 59 {
		return 0, false
	}
	var frac int64
	switch rest := s[19 : n-1]; {
	case len(rest) == 0:
	case len(rest) < 2 || len(rest) > 10 || rest[0] != '.':
		return 0, false
	default:
		digits := rest[1:]
		for i := 0; i < 9; i++ {
			frac *= 10
			if i < len(digits) {
				c := digits[i]
				if c < '0' || c > '9' {
					return 0, false
				}
				frac += int64(c - '0')
			}
		}
	}
	days := daysFromCivil(year, month, day)
	return (days*86400+int64(hour*3600+minute*60+sec))*1e9 + frac, true
}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil is the number of days from 1970-01-01 to the given date of
// the proleptic Gregorian calendar (H. Hinnant's algorithm).
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 {
		era = (y - 399) / 400
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era*146097 + doe - 719468)
}

// Seconds reads v, the text of a JSON number of Unix seconds, as Unix
// nanoseconds, exactly (up to 9 fractional digits; more are truncated).
// v is not retained.
func Seconds(v []byte) (int64, error) {
	if bytes.ContainsAny(v, "eE") {
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil || math.Abs(f) >= 9.2e9 {
			return 0, fmt.Errorf("%s is not a number of Unix seconds in range", v)
		}
		return int64(math.Round(f * 1e9)), nil
	}
	s := unsafe.String(unsafe.SliceData(v), len(v))
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	ip, fp, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(ip, 10, 64)
	if err != nil || sec >= 9_200_000_000 {
		return 0, fmt.Errorf("%s is not a number of Unix seconds in range", v)
	}
	var ns int64
	for i := 0; i < 9; i++ {
		ns *= 10
		if i < len(fp) {
			c := fp[i]
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("%s is not a number of Unix seconds in range", v)
			}
			ns += int64(c - '0')
		}
	}
	k := sec*1e9 + ns
	if neg {
		k = -k
	}
	return k, nil
}
