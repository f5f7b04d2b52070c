package steps

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/etld/etld/internal/stages"
)

// syslogStep builds parse_syslog from YAML with a fixed "now".
func syslogStep(t testing.TB, src string, now time.Time) *parseSyslog {
	t.Helper()
	cfg, err := loadConfig(t, "parse_syslog", src)
	if err != nil {
		t.Fatalf("parse_syslog %s: %v", src, err)
	}
	return newParseSyslog(cfg.(*ParseSyslogConfig), func() time.Time { return now })
}

func TestParseSyslog(t *testing.T) {
	now := time.Date(2026, 12, 4, 7, 0, 0, 0, time.UTC)
	tests := []struct {
		name, cfg, in, want string // want: the record, or "error: ..." (a substring)
	}{
		// RFC 5424, the RFC's own examples.
		{"5424", `{}`, `<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - BOM'su root' failed for lonvick on /dev/pts/8`,
			`{"timestamp":"2003-10-11T22:14:15.003Z","hostname":"mymachine.example.com","appname":"su","msgid":"ID47","facility":"auth","severity":"crit","message":"BOM'su root' failed for lonvick on /dev/pts/8"}`},
		{"5424 offset, BOM", `{}`, "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - \xef\xbb\xbf%% It's time to make the do-nuts.",
			`{"timestamp":"2003-08-24T12:14:15.000003Z","hostname":"192.0.2.1","appname":"myproc","procid":"8710","facility":"local4","severity":"notice","message":"%% It's time to make the do-nuts."}`},
		{"5424 structured data", `{}`, `<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"] An application event`,
			`{"timestamp":"2003-10-11T22:14:15.003Z","hostname":"mymachine.example.com","appname":"evntslog","msgid":"ID47","facility":"local4","severity":"notice","message":"An application event","structured_data":{"exampleSDID@32473":{"iut":"3","eventSource":"Application","eventID":"1011"},"examplePriority@32473":{"class":"high"}}}`},
		{"5424 escapes, no message", `{}`, `<13>1 - - - - - [x@1 a="q\"b\\s\]e\n" b=""][y@2]`,
			`{"facility":"user","severity":"notice","structured_data":{"x@1":{"a":"q\"b\\s]e\\n","b":""},"y@2":{}}}`},
		{"5424 without PRI", `{}`, `1 2024-01-01T00:00:00Z h a 1 m - hi`,
			`{"timestamp":"2024-01-01T00:00:00Z","hostname":"h","appname":"a","procid":"1","msgid":"m","message":"hi"}`},
		{"5424 empty message", `{}`, `<0>1 - h - - - - `, `{"hostname":"h","facility":"kern","severity":"emerg","message":""}`},
		{"5424 invalid UTF-8", `{}`, "<191>1 - h - - - [a b=\"\xff\x01\"] \xfe",
			`{"hostname":"h","facility":"local7","severity":"debug","message":"\ufffd","structured_data":{"a":{"b":"\ufffd\u0001"}}}`},

		// RFC 3164: rsyslog's default file format, with and without PRI.
		{"3164 rsyslog file", `{}`, `Dec  4 06:00:01 web1 CRON[12345]: (root) CMD (run-parts /etc/cron.hourly)`,
			`{"timestamp":"2026-12-04T06:00:01Z","hostname":"web1","appname":"CRON","procid":"12345","message":"(root) CMD (run-parts /etc/cron.hourly)"}`},
		{"3164 PRI", `{}`, `<86>Dec  4 06:00:01 web1 sshd[811]: Accepted publickey for deploy from 203.0.113.5 port 51514 ssh2`,
			`{"timestamp":"2026-12-04T06:00:01Z","hostname":"web1","appname":"sshd","procid":"811","facility":"authpriv","severity":"info","message":"Accepted publickey for deploy from 203.0.113.5 port 51514 ssh2"}`},
		{"3164 no pid", `{}`, `Nov 30 23:59:59 db kernel: [  0.000000] Linux version 6.1.0`,
			`{"timestamp":"2026-11-30T23:59:59Z","hostname":"db","appname":"kernel","message":"[  0.000000] Linux version 6.1.0"}`},
		{"3164 year rule", `{}`, `Dec 31 23:59:59 db app: last year`,
			`{"timestamp":"2025-12-31T23:59:59Z","hostname":"db","appname":"app","message":"last year"}`},
		{"3164 single space day", `{}`, `Dec 4 06:00:01 h t: m`,
			`{"timestamp":"2026-12-04T06:00:01Z","hostname":"h","appname":"t","message":"m"}`},
		{"3164 timezone", `{timezone: Europe/Berlin}`, `Jul  1 12:00:00 h t: m`,
			`{"timestamp":"2026-07-01T10:00:00Z","hostname":"h","appname":"t","message":"m"}`},
		{"3164 no tag", `{}`, `Dec  4 06:00:01 h just some text`,
			`{"timestamp":"2026-12-04T06:00:01Z","hostname":"h","message":"just some text"}`},
		{"3164 RFC 3339 time", `{}`, `2026-12-04T06:00:01.123456+01:00 web1 systemd[1]: Started Session 4.`,
			`{"timestamp":"2026-12-04T05:00:01.123456Z","hostname":"web1","appname":"systemd","procid":"1","message":"Started Session 4."}`},
		{"field", `{field: line}`, `{"file":"a","line":"<14>Dec  4 06:00:01 h t: m","message":"old"}`,
			`{"file":"a","line":"<14>Dec  4 06:00:01 h t: m","timestamp":"2026-12-04T06:00:01Z","hostname":"h","appname":"t","facility":"user","severity":"info","message":"m"}`},

		// Malformed.
		{"empty", `{}`, ``, `error: parse_syslog: expected a timestamp at byte 0, found the end of the line`},
		{"bad PRI", `{}`, `<192>1 - - - - - -`, `error: expected a priority <0> to <191> at byte 0`},
		{"unclosed PRI", `{}`, `<12`, `error: expected a priority <0> to <191> at byte 0`},
		{"json", `{}`, `{"a":1}`, `error: expected a timestamp (Mmm dd hh:mm:ss) at byte 0`},
		{"bad month", `{}`, `Foo  4 06:00:01 h t: m`, `error: expected a timestamp Mmm dd hh:mm:ss (a month name) at byte 0`},
		{"bad hour", `{}`, `<1>Dec  4 25:00:01 h t: m`, `error: expected a timestamp Mmm dd hh:mm:ss (an hour 00-23) at byte 10`},
		{"no host", `{}`, `Dec  4 06:00:01 `, `error: expected a hostname at byte 16, found the end of the line`},
		{"Feb 30", `{}`, `Feb 30 06:00:01 h t: m`, `error: timestamp at byte 0: February has no day 30`},
		{"5424 bad time", `{}`, `<1>1 2024-13-01T00:00:00Z h a p m -`, `error: expected an RFC 3339 timestamp (a month 01-12) at byte 10`},
		{"5424 year 0", `{}`, `<1>1 0001-01-01T00:00:00+01:00 h a p m -`, `error: timestamp at byte 5: time is outside years 0001-9999`},
		{"5424 offset", `{}`, `<1>1 2024-01-01T00:00:00+24:00 h a p m -`, `error: expected an RFC 3339 timestamp (a UTC offset`},
		{"5424 short", `{}`, `<1>1 - h a`, `error: expected a process id or - at byte 10, found the end of the line`},
		{"5424 bad SD", `{}`, `<1>1 - h a p m x`, `error: expected structured data ([...] or -) at byte 15, found "x"`},
		{"5424 unclosed SD", `{}`, `<1>1 - h a p m [id a="x`, `error: expected the closing " of a parameter value at byte 23`},
		{"5424 SD no value", `{}`, `<1>1 - h a p m [id a] msg`, `error: expected =" at byte 20`},
		{"5424 SD empty id", `{}`, `<1>1 - h a p m [] msg`, `error: expected an SD-ID at byte 16`},
		{"5424 no space before msg", `{}`, `<1>1 - h a p m -msg`, `error: expected a space before the message at byte 16`},
		{"field missing", `{field: line}`, `{"x":1}`, `error: parse_syslog: field "line" is missing`},
		{"field not string", `{field: line}`, `{"line":[1]}`, `error: field "line" is an array, want a string`},
		{"field malformed", `{field: line}`, `{"line":"<1>1 - h a"}`,
			`error: parse_syslog: expected a process id or - at byte 10, found the end of the line of field "line"`},
		{"field escaped", `{field: line}`, `{"line":"<14>Dec  4 06:00:01 h t: \"m\""}`,
			`{"line":"<14>Dec  4 06:00:01 h t: \"m\"","timestamp":"2026-12-04T06:00:01Z","hostname":"h","appname":"t","facility":"user","severity":"info","message":"\"m\""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b *stages.Batch
			if strings.Contains(tt.cfg, "field") {
				b = parsed(t, tt.in)
			} else {
				b = readBatch(t, tt.in)
			}
			syslogStep(t, tt.cfg, now).Process(b)
			checkOne(t, b, tt.in, tt.want)
		})
	}
}

func TestParseSyslogConfigErrors(t *testing.T) {
	_, err := loadConfig(t, "parse_syslog", `{timezone: EST5EDT-ish}`)
	if fe := fieldErr(t, err); fe.Field != "timezone" || !strings.Contains(err.Error(), `unknown time zone "EST5EDT-ish"`) {
		t.Errorf("error %v", err)
	}
}

func FuzzParseSyslog(f *testing.F) {
	for _, s := range []string{
		`<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - BOM'su root' failed`,
		`<165>1 2003-10-11T22:14:15.003Z h evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="App\]"][p@1 class="high"] An event`,
		`Dec  4 06:00:01 web1 CRON[12345]: (root) CMD`,
		`<86>Feb 29 06:00:01 web1 sshd[811]: x`,
		`2026-12-04T06:00:01.123456+01:00 web1 systemd[1]: Started`,
		`<13>1 - - - - - [x@1 a="q\"b\\s\]e\n" b=""][y@2]`,
		"<0>1 9999-12-31T23:59:59-23:59 h - - - [a b=\"\xff\"] \xfe",
	} {
		f.Add(s)
	}
	st := syslogStep(f, `{timezone: America/New_York}`, time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC))
	f.Fuzz(func(t *testing.T, line string) {
		b := &stages.Batch{Records: []stages.Record{{Raw: []byte(line)}}}
		st.Process(b)
		if len(b.Records)+len(b.Rejects) != 1 {
			t.Fatalf("%d kept, %d rejected", len(b.Records), len(b.Rejects))
		}
		if len(b.Records) == 1 {
			var m map[string]any
			if err := json.Unmarshal(b.Records[0].Raw, &m); err != nil {
				t.Fatalf("%q gave invalid JSON %s: %v", line, b.Records[0].Raw, err)
			}
			if ts, ok := m["timestamp"].(string); ok {
				if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
					t.Fatalf("%q gave timestamp %q: %v", line, ts, err)
				}
			}
		} else if !strings.Contains(b.Rejects[0].Err.Error(), "parse_syslog: ") {
			t.Fatalf("error %v", b.Rejects[0].Err)
		}
	})
}

func BenchmarkParseSyslog(b *testing.B) {
	for _, bc := range []struct{ name, line string }{
		{"rfc3164", `<86>Dec  4 06:00:01 web1 sshd[811]: Accepted publickey for deploy from 203.0.113.5 port 51514 ssh2`},
		{"rfc5424", `<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			lines := make([]string, 256)
			for i := range lines {
				lines[i] = bc.line
			}
			benchRecords(b, newStep(b, "parse_syslog", "{}"), readBatch(b, lines...).Records)
		})
	}
}
