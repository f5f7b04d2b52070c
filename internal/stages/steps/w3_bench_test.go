package steps

import (
	"fmt"
	"testing"
	"time"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// w3Lines returns n lines of one kind of W3's feeds (bench/gentext.go):
// an nginx access log, a logfmt app log or a syslog file, one line every
// 10 ms.
func w3Lines(kind string, n int) []string {
	agents := []string{"curl/8.5.0", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36", "Go-http-client/2.0"}
	msgs := []string{`"request served"`, `"cache miss"`, `"slow query \"users\""`, "retrying"}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	out := make([]string, n)
	for i := range out {
		t := t0.Add(time.Duration(i) * 10 * time.Millisecond)
		switch kind {
		case "access":
			out[i] = fmt.Sprintf(`198.51.100.4 - - [%s] "GET /api/orders/%d HTTP/1.1" 200 %d "https://shop.example/cart" "%s"`,
				t.Format("02/Jan/2006:15:04:05 -0700"), i, 1000+i, agents[i%len(agents)])
		case "app":
			out[i] = fmt.Sprintf(`ts=%s level=info msg=%s path="/api/users" status=200 duration_ms=%d req=%d`,
				t.Format(time.RFC3339Nano), msgs[i%len(msgs)], i%1000, i)
		default:
			out[i] = fmt.Sprintf(`<86>%s web1 sshd[811]: Accepted publickey for deploy from 203.0.113.5 port %d ssh2`, t.Format(time.Stamp), 50000+i)
		}
	}
	return out
}

// BenchmarkW3Steps is one worker of W3 on one core: a batch of 1024
// lines through its two steps, then the merge key's lookup of ts (as the
// ordered worker does it: through the field index, else a walk).
// ns/record is the step chain's CPU cost per input line.
func BenchmarkW3Steps(b *testing.B) {
	for _, w := range []struct {
		kind  string
		steps []stepCfg
	}{
		{"access", []stepCfg{{"parse_regex", `{preset: nginx_combined}`}, {"parse_timestamp", `{field: time_local, format: '%d/%b/%Y:%H:%M:%S %z', target: ts}`}}},
		{"app", []stepCfg{{"parse_logfmt", `{}`}, {"parse_timestamp", `{field: ts, format: rfc3339}`}}},
		{"syslog", []stepCfg{{"parse_syslog", `{timezone: UTC}`}, {"rename", `{timestamp: ts}`}}},
	} {
		b.Run(w.kind, func(b *testing.B) {
			var sts []stages.Step
			for _, sc := range w.steps {
				sts = append(sts, newStep(b, sc.typ, sc.cfg))
			}
			src := readBatch(b, w3Lines(w.kind, 1024)...).Records
			own := make([]stages.Record, len(src))
			n := 0
			for _, r := range src {
				n += len(r.Raw)
			}
			b.SetBytes(int64(n))
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				copy(own, src)
				batch := &stages.Batch{Records: own, IndexFields: true} // as before a merge
				for _, st := range sts {
					st.Process(batch)
				}
				if len(batch.Records) != len(src) {
					b.Fatal(rejectErrors(batch.Rejects))
				}
				for i := range batch.Records {
					if _, found, ok := batch.Field(i, "ts"); ok {
						if !found {
							b.Fatal("no ts")
						}
					} else if _, found, err := jsonrec.Find(batch.Records[i].Raw, "ts"); err != nil || !found {
						b.Fatal("no ts", err)
					}
				}
				batch.Records = nil // own is not pooled; its buffers are
				batch.Release()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(src)), "ns/record")
			reportCPU(b, cpu0, b.N*len(src))
		})
	}
}
