package steps

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"
	_ "time/tzdata" // IANA time zones in a minimal container too

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/strftime"
)

// ParseTimestampConfig is the config of parse_timestamp:
// `parse_timestamp: {field: time, format: '%d/%b/%Y:%H:%M:%S %z'}`.
type ParseTimestampConfig struct {
	Field    string `yaml:"field" doc:"the field holding the time (a string; a number too for the unix formats)"`
	Format   string `yaml:"format" doc:"rfc3339, unix, unix_ms, unix_us, unix_ns (a number or a numeric string, fractions allowed), or a strftime format such as '%d/%b/%Y:%H:%M:%S %z' (%Y %y %m %d %e %j %H %I %p %M %S %f %z %b %B %h %a %A %s %T %F %D %R %n %t %%; %Z is refused: use %z or timezone)"`
	Timezone string `yaml:"timezone" doc:"IANA time zone name for times written without an offset; a format without a year takes the current one, or the previous one when that would put the time over a day in the future"`
	To       string `yaml:"to" doc:"what to write: rfc3339 (in UTC, with nanoseconds when there are any), unix (seconds, with a fraction when there is one) or unix_ms (integer)"`
	Target   string `yaml:"target" doc:"the field to write (default: field itself); replaced in place or appended"`

	layout *strftime.Layout // compiled by Validate; nil for the unix formats
	unix   int              // for the unix formats: digits of the unit below a second (0, 3, 6, 9)
	loc    *time.Location
	to     outForm
	target []fieldKey // one key, as planSet takes
}

type outForm uint8

const (
	toRFC3339 outForm = iota
	toUnix
	toUnixMS
)

func (c *ParseTimestampConfig) setDefaults() {
	c.Format, c.Timezone, c.To = "rfc3339", "UTC", "rfc3339"
}

func (c *ParseTimestampConfig) compiled() bool { return c.loc != nil }

// Validate compiles the format and loads the time zone, reporting every
// bad option at once.
func (c *ParseTimestampConfig) Validate() error {
	var errs []error
	c.loc = nil
	if c.Field == "" {
		errs = append(errs, stages.FieldErr("field", errors.New("parse_timestamp: field is required")))
	}
	c.layout, c.unix = nil, -1
	switch c.Format {
	case "", "rfc3339":
		c.layout = strftime.RFC3339
	case "unix":
		c.unix = 0
	case "unix_ms":
		c.unix = 3
	case "unix_us":
		c.unix = 6
	case "unix_ns":
		c.unix = 9
	default:
		l, err := strftime.Compile(c.Format)
		if err != nil {
			errs = append(errs, stages.FieldErr("format", fmt.Errorf("parse_timestamp: %w", err)))
		}
		c.layout = l
	}
	loc, err := loadZone(c.Timezone)
	if err != nil {
		errs = append(errs, stages.FieldErr("timezone", fmt.Errorf("parse_timestamp: %w", err)))
	}
	switch c.To {
	case "", "rfc3339":
		c.to = toRFC3339
	case "unix":
		c.to = toUnix
	case "unix_ms":
		c.to = toUnixMS
	default:
		errs = append(errs, stages.FieldErr("to", fmt.Errorf("parse_timestamp: %q is not one of rfc3339, unix, unix_ms", c.To)))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	c.target = []fieldKey{newFieldKey(c.Field)}
	if c.Target != "" {
		c.target[0] = newFieldKey(c.Target)
	}
	c.loc = loc
	return nil
}

// loadZone loads an IANA time zone; "" is UTC.
func loadZone(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil || name == "Local" {
		return nil, fmt.Errorf("unknown time zone %q (want an IANA name such as Europe/Berlin, or UTC)", name)
	}
	return loc, nil
}

// parseTimestamp rewrites one field of every record as a normalised time.
type parseTimestamp struct {
	cfg  *ParseTimestampConfig
	src  fieldSource      // cfg.Field
	now  func() time.Time // for the year rule
	pool sync.Pool        // of *tsScratch
}

type tsScratch struct {
	set  exprScratch // only the member and edit buffers
	val  []byte
	vals [][]byte // val, as planSet takes
	str  []byte   // the field's string, when it has escapes
	// edited are the members of a rewritten record.
	edited []jsonrec.Member
	// memoIn and memoStr are the text that gave val; memo says whether
	// val may be reused for the same text (see value).
	memoIn  []byte
	memoStr bool
	memo    bool
}

func newParseTimestamp(cfg *ParseTimestampConfig, now func() time.Time) *parseTimestamp {
	st := &parseTimestamp{cfg: cfg, src: fieldSource{Name: cfg.Field}, now: now}
	st.pool.New = func() any { return &tsScratch{set: exprScratch{found: make([]bool, 1)}, vals: make([][]byte, 1)} }
	return st
}

// Process parses the field of every Parsed record and writes the time to
// the target field. A record without the field, or whose value does not
// match the format, is a bad record; so are records not Parsed. The new
// record texts share one allocation per batch; a record whose target
// already holds the value written (a time already normalised) keeps its
// text. It finds the field, and indexes its output, with the batch's
// field index (stages.FieldIndex). Safe for concurrent calls on different
// batches.
func (st *parseTimestamp) Process(b *stages.Batch) {
	s := st.pool.Get().(*tsScratch)
	defer st.pool.Put(s)
	cfg := st.cfg
	const grow = 48 // the longest value written, a comma and slack
	extra := len(cfg.target[0].prefix) + grow
	total := 0
	for i := range b.Records {
		total += len(b.Records[i].Raw) + extra
	}
	a := arena{b: b}
	c := compactor{b: b}
	var x *stages.FieldIndex
	if b.IndexFields {
		x = stages.NewFieldIndex(len(b.Records))
	}
	s.memo = false
	for i := range b.Records {
		r := &b.Records[i]
		need := len(r.Raw) + extra
		total -= need
		if !r.Parsed {
			c.reject(r, errNotParsed("parse_timestamp"))
			continue
		}
		ms, closeBrace, err := members(b, i, &s.set.members)
		if err != nil {
			c.reject(r, rejectErr("parse_timestamp", fmt.Errorf("malformed JSON record: %w", err)))
			continue
		}
		if err := st.value(s, r.Raw, ms); err != nil {
			c.reject(r, rejectErr("parse_timestamp", err))
			continue
		}
		s.vals[0] = s.val
		planSet(&s.set, r.Raw, ms, cfg.target, s.vals)
		if unchanged(r.Raw, ms, s.set.edits, s.set.add) {
			x.Add(c.w, r.Raw, ms, closeBrace)
			c.keep(r)
			continue
		}
		a.reserve(need, total+need)
		start := len(a.buf)
		a.buf = jsonrec.AppendEdited(a.buf, r.Raw, ms, closeBrace, s.set.edits, s.set.add)
		r.Raw = a.since(start)
		if x != nil {
			var ok bool
			if s.edited, closeBrace, ok = jsonrec.EditedMembers(s.edited[:0], ms, closeBrace, s.set.edits, s.set.add); ok {
				x.Add(c.w, r.Raw, s.edited, closeBrace)
			}
		}
		c.keep(r)
	}
	c.done()
	b.SetFieldIndex(x)
}

// unchanged reports whether edits and add (from planSet) leave obj as it
// is: they only set one member to the value it has.
func unchanged(obj []byte, ms []jsonrec.Member, edits []jsonrec.Edit, add []byte) bool {
	if len(add) > 0 || len(edits) != 1 || edits[0].Remove {
		return false
	}
	m := &ms[edits[0].Member]
	return bytes.Equal(obj[m.Val:m.End], edits[0].Value)
}

// value sets s.val to the value to write for the configured field of obj
// (members ms). Within a batch, a field whose text is the previous
// record's gives the previous value without parsing it again: logs
// written at one-second resolution repeat their time for every line of
// that second. (Not for formats without a year, whose result depends on
// the time of day.)
func (st *parseTimestamp) value(s *tsScratch, obj []byte, ms []jsonrec.Member) error {
	v, isStr, err := st.src.member(obj, ms, &s.str)
	if err != nil {
		return err
	}
	if s.memo && isStr == s.memoStr && bytes.Equal(v, s.memoIn) {
		return nil
	}
	t, err := st.parse(v, isStr)
	if err != nil {
		return err
	}
	s.val = appendTime(s.val[:0], t, st.cfg.to)
	s.memoIn, s.memoStr = append(s.memoIn[:0], v...), isStr
	s.memo = st.cfg.layout == nil || st.cfg.layout.HasYear
	return nil
}

// parse reads v, the configured field's text (a string's contents when
// isStr), as a time.
func (st *parseTimestamp) parse(v []byte, isStr bool) (time.Time, error) {
	cfg := st.cfg
	if cfg.unix >= 0 {
		t, err := parseUnix(v, cfg.unix)
		if err != nil {
			return time.Time{}, fmt.Errorf("field %q: %w", cfg.Field, err)
		}
		return t, nil
	}
	if !isStr {
		return time.Time{}, st.src.notString(v)
	}
	f, err := cfg.layout.Parse(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("field %q: %w", cfg.Field, err)
	}
	year := 0
	if !cfg.layout.HasYear {
		year = f.GuessYear(st.now(), cfg.loc)
	}
	t, err := f.Time(cfg.loc, year)
	if err != nil {
		return time.Time{}, fmt.Errorf("field %q: %w", cfg.Field, err)
	}
	return t, nil
}

// parseUnix reads v, a decimal number of seconds (digits = 0),
// milliseconds (3), microseconds (6) or nanoseconds (9), with an optional
// sign and fraction, or in exponent form (read as a float).
func parseUnix(v []byte, digits int) (time.Time, error) {
	if len(v) > 0 && v[0] == '"' { // a JSON string holding a number
		v = v[1 : len(v)-1]
	}
	i := 0
	neg := i < len(v) && v[i] == '-'
	if neg {
		i++
	}
	var whole int64
	j := i
	for ; j < len(v) && v[j] >= '0' && v[j] <= '9'; j++ {
		if whole > (math.MaxInt64-9)/10 {
			return time.Time{}, fmt.Errorf("expected a number in range at byte %d", i)
		}
		whole = whole*10 + int64(v[j]-'0')
	}
	if j == i {
		return time.Time{}, fmt.Errorf("expected digits at byte %d", j)
	}
	// frac is the fraction in units of 1e-9 of the unit, read from up to
	// 9 digits.
	var frac int64
	if j < len(v) && v[j] == '.' {
		k := j + 1
		for ; k < len(v) && v[k] >= '0' && v[k] <= '9'; k++ {
			if k-j <= 9 {
				frac = frac*10 + int64(v[k]-'0')
			}
		}
		if k == j+1 {
			return time.Time{}, fmt.Errorf("expected fraction digits at byte %d", k)
		}
		for n := k - j - 1; n < 9; n++ {
			frac *= 10
		}
		j = k
	}
	if j < len(v) && (v[j] == 'e' || v[j] == 'E') {
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil || f > 1e17 || f < -1e17 {
			return time.Time{}, fmt.Errorf("expected a number in range, found %q", v)
		}
		whole, frac, neg = int64(f), int64((f-float64(int64(f)))*1e9), false
		if frac < 0 {
			whole, frac, neg = -whole, -frac, true
		}
		j = len(v)
	}
	if j != len(v) {
		return time.Time{}, fmt.Errorf("expected the end of the number at byte %d", j)
	}
	unit := int64(1)
	for range digits {
		unit *= 10
	}
	// whole units = sec*unit + rest; ns = rest*(1e9/unit) + frac/unit.
	sec, rest := whole/unit, whole%unit
	ns := rest*(1e9/unit) + frac/unit
	if neg {
		sec, ns = -sec, -ns
	}
	t := time.Unix(sec, ns).UTC()
	if y := t.Year(); y < 1 || y > 9999 {
		return time.Time{}, fmt.Errorf("time is outside years 0001-9999 (year %d)", y)
	}
	return t, nil
}

// appendTime appends t (UTC) as the JSON value of the given form.
func appendTime(dst []byte, t time.Time, to outForm) []byte {
	switch to {
	case toUnix:
		sec, ns := t.Unix(), t.Nanosecond()
		if sec < 0 && ns != 0 { // -1.5 is -2 + 0.5: write -(1 + 0.5)
			sec, ns = sec+1, 1e9-ns
			if sec == 0 {
				dst = append(dst, '-')
			}
		}
		dst = strconv.AppendInt(dst, sec, 10)
		if ns != 0 {
			start := len(dst)
			dst = strconv.AppendInt(append(dst, '.'), int64(1e9+ns), 10)
			copy(dst[start+1:], dst[start+2:]) // drop the leading 1
			dst = dst[:len(dst)-1]
			for dst[len(dst)-1] == '0' {
				dst = dst[:len(dst)-1]
			}
		}
		return dst
	case toUnixMS:
		return strconv.AppendInt(dst, t.UnixMilli(), 10)
	}
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

func init() {
	register(stepFactory("parse_timestamp",
		"Reads a time from a field (`format`: rfc3339, unix, unix_ms, unix_us, unix_ns or strftime) and writes it "+
			"normalised to `target` (RFC 3339 in UTC by default, or Unix seconds or milliseconds), which the ordered "+
			"merge's order_by reads; a value that does not match, or outside years 0001-9999, is a bad record.",
		stages.Caps{NeedsFields: true},
		func(_ stages.Settings, c *ParseTimestampConfig) (stages.Step, error) {
			return newParseTimestamp(c, time.Now), nil
		}))
}
