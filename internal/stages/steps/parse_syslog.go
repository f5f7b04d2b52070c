package steps

import (
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/strftime"
)

// ParseSyslogConfig is the config of parse_syslog: `parse_syslog: {}`, or
// with options `parse_syslog: {timezone: Europe/Berlin, field: line}`.
type ParseSyslogConfig struct {
	Timezone string `yaml:"timezone" doc:"IANA time zone name of RFC 3164 times, which have no offset (nor a year: the current one, or the previous one when that would put the time over a day in the future)"`
	Field    string `yaml:"field" doc:"parse this string field of a parsed record instead of the line; the fields found are merged into the record, replacing fields of the same names"`

	loc *time.Location // loaded by Validate
}

func (c *ParseSyslogConfig) setDefaults() { c.Timezone = "UTC" }

func (c *ParseSyslogConfig) compiled() bool { return c.loc != nil }

// Validate loads the time zone.
func (c *ParseSyslogConfig) Validate() error {
	loc, err := loadZone(c.Timezone)
	if err != nil {
		return stages.FieldErr("timezone", fmt.Errorf("parse_syslog: %w", err))
	}
	c.loc = loc
	return nil
}

var facilityNames = [...]string{"kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
	"authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
	"local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"}

var severityNames = [...]string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"}

// syslogMsg is one parsed line: slices of it (nil when absent or `-`).
type syslogMsg struct {
	pri                               int // -1: none
	ts                                time.Time
	hasTS                             bool
	host, app, procid, msgid, sd, msg []byte
	hasMsg                            bool
	now                               time.Time // for RFC 3164's year rule
}

// parseSyslog parses RFC 5424 and RFC 3164 lines: a textStep (see
// field.go), so the line or a field is parsed, and the fields written, as
// by the other parsers.
type parseSyslog struct {
	*textStep
	cfg *ParseSyslogConfig
}

// newParseSyslog builds the step; now is the clock of RFC 3164's year
// rule, read once per batch.
func newParseSyslog(cfg *ParseSyslogConfig, now func() time.Time) *parseSyslog {
	st := &parseSyslog{cfg: cfg}
	st.textStep = newTextStep("parse_syslog", cfg.Field, st.parseText)
	st.textStep.now = now
	return st
}

// parseText parses one line (or field) into s.out. A line that is neither
// RFC 5424 nor RFC 3164 is an error saying what was expected at which
// byte.
func (st *parseSyslog) parseText(text []byte, s *parseScratch) error {
	m := syslogMsg{now: s.now}
	if err := st.parse(text, &m); err != nil {
		return st.src.in(err)
	}
	addSyslog(&s.out, &m)
	return nil
}

// The fields parse_syslog yields, in their order.
const (
	sysTimestamp = iota
	sysHostname
	sysAppname
	sysProcid
	sysMsgid
	sysFacility
	sysSeverity
	sysMessage
	sysStructuredData
	sysFields
)

// syslogKeys are the field names, with their encoded `"name":` prefixes,
// by sys* index: distinct, so parsedFields need not check them.
var syslogKeys, syslogPrefixes = func() (keys, prefixes [sysFields][]byte) {
	for i, k := range [sysFields]string{"timestamp", "hostname", "appname", "procid", "msgid", "facility", "severity", "message", "structured_data"} {
		keys[i], prefixes[i] = []byte(k), jsonrec.AppendKey(nil, k)
	}
	return keys, prefixes
}()

// syntaxErr is a line that is not syslog.
func syntaxErr(want string, line []byte, i int) error {
	if i >= len(line) {
		return fmt.Errorf("expected %s at byte %d, found the end of the line", want, i)
	}
	return fmt.Errorf("expected %s at byte %d, found %q", want, i, line[i:min(len(line), i+12)])
}

// parse fills m from line.
func (st *parseSyslog) parse(line []byte, m *syslogMsg) error {
	m.pri = -1
	i := 0
	if len(line) > 0 && line[0] == '<' {
		j := 1
		pri := 0
		for ; j < len(line) && j <= 3 && line[j] >= '0' && line[j] <= '9'; j++ {
			pri = pri*10 + int(line[j]-'0')
		}
		if j == 1 || j >= len(line) || line[j] != '>' || pri > 191 {
			return syntaxErr("a priority <0> to <191>", line, 0)
		}
		m.pri, i = pri, j+1
	}
	// RFC 5424 has a version, then a space and a time or `-`.
	if j := digits(line, i); j > i && j-i <= 2 && line[i] != '0' && j+1 < len(line) && line[j] == ' ' &&
		(line[j+1] == '-' || line[j+1] >= '0' && line[j+1] <= '9') {
		return st.parse5424(line, j+1, m)
	}
	if i == len(line) {
		return syntaxErr("a timestamp", line, i)
	}
	return st.parse3164(line, i, m)
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// token returns the bytes up to the next space (or the end), which must
// not be empty; nil for `-`.
func token(line []byte, i int, what string) (tok []byte, next int, err error) {
	j := i
	for j < len(line) && line[j] != ' ' {
		j++
	}
	if j == i {
		return nil, i, syntaxErr(what, line, i)
	}
	if j < len(line) {
		next = j + 1
	} else {
		next = j
	}
	if j-i == 1 && line[i] == '-' {
		return nil, next, nil
	}
	return line[i:j], next, nil
}

func (st *parseSyslog) parse5424(line []byte, i int, m *syslogMsg) error {
	tsTok, next, err := token(line, i, "a timestamp or -")
	if err != nil {
		return err
	}
	if tsTok != nil {
		f, err := strftime.RFC3339.Parse(tsTok)
		if err != nil {
			var se *strftime.SyntaxError
			if errors.As(err, &se) {
				return syntaxErr("an RFC 3339 timestamp ("+se.Want+")", line, i+se.Byte)
			}
			return err
		}
		if m.ts, err = f.Time(time.UTC, 0); err != nil {
			return fmt.Errorf("timestamp at byte %d: %w", i, err)
		}
		m.hasTS = true
	}
	i = next
	if m.host, i, err = token(line, i, "a hostname or -"); err != nil {
		return err
	}
	if m.app, i, err = token(line, i, "an app name or -"); err != nil {
		return err
	}
	if m.procid, i, err = token(line, i, "a process id or -"); err != nil {
		return err
	}
	if m.msgid, i, err = token(line, i, "a message id or -"); err != nil {
		return err
	}
	// Structured data: `-` or one or more [id param="value" ...].
	start := i
	switch {
	case i < len(line) && line[i] == '-':
		i++
	case i < len(line) && line[i] == '[':
		for i < len(line) && line[i] == '[' {
			if i, err = scanSDElement(line, i); err != nil {
				return err
			}
		}
		m.sd = line[start:i]
	default:
		return syntaxErr("structured data ([...] or -)", line, i)
	}
	switch {
	case i == len(line):
	case line[i] == ' ':
		m.msg, m.hasMsg = line[i+1:], true
		if len(m.msg) >= 3 && m.msg[0] == 0xEF && m.msg[1] == 0xBB && m.msg[2] == 0xBF {
			m.msg = m.msg[3:] // the BOM that marks a UTF-8 message
		}
	default:
		return syntaxErr("a space before the message", line, i)
	}
	return nil
}

// sdName scans an SD-ID or PARAM-NAME: 1-32 printable ASCII bytes but
// '=', ' ', ']' and '"'.
func sdName(line []byte, i int, what string) (int, error) {
	j := i
	for j < len(line) && line[j] > ' ' && line[j] < 0x7f && line[j] != '=' && line[j] != ']' && line[j] != '"' {
		j++
	}
	if j == i || j-i > 32 {
		return i, syntaxErr(what, line, i)
	}
	return j, nil
}

// scanSDElement scans one [id param="value" ...] at line[i] == '['.
func scanSDElement(line []byte, i int) (int, error) {
	j, err := sdName(line, i+1, "an SD-ID")
	if err != nil {
		return j, err
	}
	for {
		switch {
		case j < len(line) && line[j] == ']':
			return j + 1, nil
		case j < len(line) && line[j] == ' ':
		default:
			return j, syntaxErr(`" " or "]" in structured data`, line, j)
		}
		if j, err = sdName(line, j+1, "a parameter name"); err != nil {
			return j, err
		}
		if j+1 >= len(line) || line[j] != '=' || line[j+1] != '"' {
			return j, syntaxErr(`="`, line, j)
		}
		j += 2
		for j < len(line) && line[j] != '"' {
			if line[j] == '\\' && j+1 < len(line) {
				j++
			}
			j++
		}
		if j >= len(line) {
			return j, syntaxErr(`the closing " of a parameter value`, line, j)
		}
		j++
	}
}

// The RFC 3164 time: `Mmm dd hh:mm:ss` (the day space-padded).
var bsdTime = mustCompile("%b %e %H:%M:%S")

func mustCompile(f string) *strftime.Layout {
	l, err := strftime.Compile(f)
	if err != nil {
		panic(err)
	}
	return l
}

func (st *parseSyslog) parse3164(line []byte, i int, m *syslogMsg) error {
	var next int
	if line[i] >= '0' && line[i] <= '9' {
		// An RFC 3339 time in the 3164 layout, as rsyslog's
		// high-precision file format writes.
		tsTok, n, err := token(line, i, "a timestamp")
		if err != nil {
			return err
		}
		f, err := strftime.RFC3339.Parse(tsTok)
		if err != nil {
			return syntaxErr("a timestamp (Mmm dd hh:mm:ss or RFC 3339)", line, i)
		}
		if m.ts, err = f.Time(time.UTC, 0); err != nil {
			return fmt.Errorf("timestamp at byte %d: %w", i, err)
		}
		next = n
	} else {
		// Mmm, spaces, d or dd, a space, hh:mm:ss: 14 or 15 bytes.
		end := i + 15
		if i+5 < len(line) && line[i+3] == ' ' && line[i+4] != ' ' && line[i+5] == ' ' {
			end-- // `Dec 4 06:00:01`
		}
		if end > len(line) || (end < len(line) && line[end] != ' ') {
			return syntaxErr("a timestamp (Mmm dd hh:mm:ss)", line, i)
		}
		f, err := bsdTime.Parse(line[i:end])
		if err != nil {
			var se *strftime.SyntaxError
			if errors.As(err, &se) {
				return syntaxErr("a timestamp Mmm dd hh:mm:ss ("+se.Want+")", line, i+se.Byte)
			}
			return err
		}
		loc := st.cfg.loc
		if m.ts, err = f.Time(loc, f.GuessYear(m.now, loc)); err != nil {
			return fmt.Errorf("timestamp at byte %d: %w", i, err)
		}
		next = min(end+1, len(line))
	}
	m.hasTS = true
	i = next
	var err error
	if m.host, i, err = token(line, i, "a hostname"); err != nil {
		return err
	}
	// TAG[PID]: or TAG: starts the content; without it, all is message.
	j := i
	for j < len(line) && j-i < 48 && line[j] != '[' && line[j] != ':' && line[j] != ' ' {
		j++
	}
	tagEnd := j
	var pid []byte
	if j < len(line) && line[j] == '[' {
		k := j + 1
		for k < len(line) && line[k] != ']' && line[k] != ' ' {
			k++
		}
		if k < len(line) && line[k] == ']' {
			pid, j = line[j+1:k], k+1
		}
	}
	if tagEnd > i && j < len(line) && line[j] == ':' {
		m.app, m.procid = line[i:tagEnd], pid
		j++
		if j < len(line) && line[j] == ' ' {
			j++
		}
		i = j
	}
	m.msg, m.hasMsg = line[i:], true
	return nil
}

// addSyslog adds m's fields to p; absent parts are left out.
func addSyslog(p *parsedFields, m *syslogMsg) {
	str := func(f int, v []byte) {
		if v != nil {
			p.addStringUnique(syslogKeys[f], syslogPrefixes[f], v)
		}
	}
	if m.hasTS {
		p.beginUnique(syslogKeys[sysTimestamp], syslogPrefixes[sysTimestamp])
		p.enc = append(p.enc, '"')
		p.enc = m.ts.AppendFormat(p.enc, time.RFC3339Nano)
		p.enc = append(p.enc, '"')
		p.endUnique()
	}
	str(sysHostname, m.host)
	str(sysAppname, m.app)
	str(sysProcid, m.procid)
	str(sysMsgid, m.msgid)
	if m.pri >= 0 {
		p.beginUnique(syslogKeys[sysFacility], syslogPrefixes[sysFacility])
		if f := m.pri / 8; f < len(facilityNames) {
			p.enc = jsonrec.AppendString(p.enc, facilityNames[f])
		} else {
			p.enc = strconv.AppendInt(p.enc, int64(f), 10)
		}
		p.endUnique()
		p.beginUnique(syslogKeys[sysSeverity], syslogPrefixes[sysSeverity])
		p.enc = jsonrec.AppendString(p.enc, severityNames[m.pri%8])
		p.endUnique()
	}
	if m.hasMsg {
		p.addStringUnique(syslogKeys[sysMessage], syslogPrefixes[sysMessage], m.msg)
	}
	if m.sd != nil {
		p.beginUnique(syslogKeys[sysStructuredData], syslogPrefixes[sysStructuredData])
		p.enc = appendSD(p.enc, m.sd)
		p.endUnique()
	}
}

// appendJSONBytes appends b as a JSON string (invalid UTF-8 becomes
// U+FFFD) without copying it to a string first.
func appendJSONBytes(dst, b []byte) []byte {
	if len(b) == 0 {
		return append(dst, '"', '"')
	}
	return jsonrec.AppendString(dst, unsafe.String(unsafe.SliceData(b), len(b)))
}

// appendSD appends already scanned structured data as an object by SD-ID
// of objects of parameters, unescaping \", \\ and \] in values.
func appendSD(dst, sd []byte) []byte {
	dst = append(dst, '{')
	i := 0
	for i < len(sd) && sd[i] == '[' {
		if i > 0 {
			dst = append(dst, ',')
		}
		j, _ := sdName(sd, i+1, "")
		dst = appendJSONBytes(dst, sd[i+1:j])
		dst = append(dst, ':', '{')
		for n := 0; sd[j] == ' '; n++ {
			k, _ := sdName(sd, j+1, "")
			if n > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONBytes(dst, sd[j+1:k])
			dst = append(dst, ':')
			// The value runs from k+2 to its closing quote.
			v := k + 2
			e := v
			escaped := false
			for sd[e] != '"' {
				if sd[e] == '\\' {
					escaped = true
					e++
				}
				e++
			}
			if escaped {
				dst = appendSDValue(dst, sd[v:e])
			} else {
				dst = appendJSONBytes(dst, sd[v:e])
			}
			j = e + 1
		}
		dst = append(dst, '}')
		i = j + 1
	}
	return append(dst, '}')
}

// appendSDValue appends a value with backslash escapes as a JSON string:
// \" \\ \] stand for the character; any other backslash is kept.
func appendSDValue(dst, v []byte) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(v); {
		c := v[i]
		if c == '\\' && i+1 < len(v) && (v[i+1] == '"' || v[i+1] == '\\' || v[i+1] == ']') {
			c = v[i+1]
			i++
		}
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c >= utf8.RuneSelf:
			r, n := utf8.DecodeRune(v[i:])
			if r == utf8.RuneError && n == 1 {
				dst = append(dst, "\ufffd"...)
			} else {
				dst = append(dst, v[i:i+n]...)
			}
			i += n
			continue
		case c < 0x20:
			const hex = "0123456789abcdef"
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			dst = append(dst, c)
		}
		i++
	}
	return append(dst, '"')
}

func init() {
	register(stepFactory("parse_syslog",
		"Parses syslog lines, RFC 5424 (with structured data) or RFC 3164 (`Mmm dd hh:mm:ss host tag[pid]: msg`, "+
			"as /var/log/syslog holds), with or without `<PRI>`, into timestamp (RFC 3339 in UTC), hostname, appname, "+
			"procid, msgid, facility and severity (names, with a PRI), message and structured_data (an object by "+
			"SD-ID); absent parts (`-` in RFC 5424) are left out. Anything else is a bad record.",
		stages.Caps{Parses: true},
		func(_ stages.Settings, c *ParseSyslogConfig) (stages.Step, error) {
			return newParseSyslog(c, time.Now), nil
		}))
}
