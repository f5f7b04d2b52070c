package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/etld/etld/internal/linescan"
)

// nginxPattern is parse_regex's nginx_combined preset written out as a
// user pattern (internal/stages/steps/parse_regex.go), so that W3 can be
// run a second time with Go's regexp doing the nginx feeds' work.
const nginxPattern = `^(?P<remote_addr>[^ ]+) - (?P<remote_user>[^ ]+) ` +
	`\[(?P<time_local>[^\]]*)\] "(?P<request>(?P<method>[^ "]+) (?P<path>[^ "]+) (?P<protocol>[^ "]+)|[^"]*)" ` +
	`(?P<status>[0-9]{3}) (?P<body_bytes_sent>[0-9]+|-)` +
	` "(?P<http_referer>[^"]*)" "(?P<http_user_agent>[^"]*)"$`

// textPipeline is W3 over the text feeds in data into out: each kind of
// feed parsed by its worker (ordered), merged by ts into one file. With
// regexp, the access logs are parsed by nginxPattern instead of the preset.
func textPipeline(data, out string, regexp bool) string {
	nginx := `{ preset: nginx_combined }`
	if regexp {
		nginx = `{ pattern: '` + nginxPattern + `' }`
	}
	return `version: 1
sources:
  access: {type: file, path: "` + filepath.Join(data, "access-*.log") + `", follow: false}
  app:    {type: file, path: "` + filepath.Join(data, "app-*.logfmt") + `", follow: false}
  syslog: {type: file, path: "` + filepath.Join(data, "syslog-*.log") + `", follow: false}
workers:
  web:
    inputs: [access]
    ordered: true
    steps:
      - parse_regex: ` + nginx + `
      - parse_timestamp: { field: time_local, format: '%d/%b/%Y:%H:%M:%S %z', target: ts }
  apps:
    inputs: [app]
    ordered: true
    steps:
      - parse_logfmt: {}
      - parse_timestamp: { field: ts, format: rfc3339 }
  system:
    inputs: [syslog]
    ordered: true
    steps:
      - parse_syslog: { timezone: UTC }
      - rename: { timestamp: ts }
sinks:
  out: {type: file, inputs: [web, apps, system], path: "` + out + `", fsync: checkpoint, merge: {order_by: ts}}
`
}

// textConfig is the W3 group's setting.
type textConfig struct {
	data, work, bin string
	feeds, lines    int
	runs            int
	timeout         time.Duration
	profiles        string
}

// runText measures W3 (preset) and W3 with the nginx regexp as a user
// pattern, and cat over the same feeds, interleaving the runs, and
// checks that every output holds all lines sorted by ts.
func runText(tc textConfig) error {
	if tc.feeds < 3 {
		return fmt.Errorf("W3 needs -feeds 3 or more (an access log, an app log and a syslog)")
	}
	year := time.Now().Year()
	stamp := filepath.Join(tc.data, fmt.Sprintf(".done-%d-%d-%d", tc.feeds, tc.lines, year))
	if _, err := os.Stat(stamp); err != nil {
		os.RemoveAll(tc.data)
		fmt.Fprintf(os.Stderr, "generating %d x %d text lines into %s\n", tc.feeds, tc.lines, tc.data)
		if err := genText(tc.data, tc.feeds, tc.lines, year); err != nil {
			return err
		}
		if err := os.WriteFile(stamp, nil, 0o644); err != nil {
			return err
		}
	}
	if tc.profiles != "" {
		if err := os.MkdirAll(tc.profiles, 0o755); err != nil {
			return err
		}
	}
	var matches []string
	for i := 1; i <= tc.feeds; i++ {
		matches = append(matches, filepath.Join(tc.data, textFeedName(i)))
	}
	total := tc.feeds * tc.lines
	out := filepath.Join(tc.work, "text-out.jsonl")
	state := filepath.Join(tc.work, "text-state")
	type workload struct{ name, short, cfg string }
	ws := []workload{
		{name: "cat (reference)"},
		{name: "etld W3 (nginx preset)", short: "W3"},
		{name: "etld W3 (nginx as regexp pattern)", short: "W3re"},
	}
	for i := range ws[1:] {
		w := &ws[i+1]
		w.cfg = filepath.Join(tc.work, w.short+".yaml")
		if err := os.WriteFile(w.cfg, []byte(textPipeline(tc.data, out, w.short == "W3re")), 0o644); err != nil {
			return err
		}
	}
	loadBefore := loadavg()
	res := make([][]result, len(ws))
	var failures []string
	for round := range tc.runs {
		for i, w := range ws {
			os.Remove(out)
			os.RemoveAll(state)
			r, err := runOne(runSpec{bin: tc.bin, timeout: tc.timeout, cfg: w.cfg, matches: matches, out: out, state: state,
				profile: profileFile(tc.profiles, fmt.Sprintf("%s-%d.pprof", w.short, round+1))})
			if err != nil {
				return fmt.Errorf("%s, run %d: %w", w.name, round+1, err)
			}
			fmt.Fprintf(os.Stderr, "%s run %d: %.2f s, %.0f lines/s\n", w.name, round+1, r.wall.Seconds(), float64(total)/r.wall.Seconds())
			if r.lines != total {
				failures = append(failures, fmt.Sprintf("%s run %d wrote %d lines, want %d", w.name, round+1, r.lines, total))
			} else if w.cfg != "" {
				if err := checkSortedTS(out); err != nil {
					failures = append(failures, fmt.Sprintf("%s run %d: %v", w.name, round+1, err))
				}
			}
			res[i] = append(res[i], r)
		}
	}
	os.Remove(out)
	os.RemoveAll(state)

	fmt.Printf("W3 group: %d text feeds x %d lines (%d lines: access, app, syslog feeds), %s/%s, %d CPUs, %d rounds\n",
		tc.feeds, tc.lines, total, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), tc.runs)
	printRounds(tc.data, tc.work, loadBefore, "lines", []string{ws[0].name, ws[1].name, ws[2].name}, res, total)
	fmt.Println("\ntargets: W3 >= 1,000,000 input lines/s, peak RSS < 64 MiB")
	if len(failures) > 0 {
		return fmt.Errorf("wrong output:\n  %s", strings.Join(failures, "\n  "))
	}
	fmt.Println("outputs checked: every line written, sorted by ts")
	return nil
}

// runSpec is one timed run: etld with cfg (cat over matches when cfg is
// ""), writing out, from the state directory state, killed after
// timeout; profile, when set, is the file for etld's CPU profile.
type runSpec struct {
	bin        string
	timeout    time.Duration
	profile    string
	cfg        string
	matches    []string
	out, state string
}

// profileFile is the file name of a CPU profile in dir, "" without dir.
func profileFile(dir, name string) string {
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, name)
}

// runOne runs rs and measures it.
func runOne(rs runSpec) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rs.timeout)
	defer cancel()
	var cmd *exec.Cmd
	if rs.cfg == "" {
		f, err := os.Create(rs.out)
		if err != nil {
			return result{}, err
		}
		defer f.Close()
		cmd = exec.CommandContext(ctx, "cat", rs.matches...)
		cmd.Stdout = f
	} else {
		cmd = exec.CommandContext(ctx, rs.bin, "run", "-c", rs.cfg, "--state-dir", rs.state,
			"--admin", "off", "--no-watch", "--log-level", "warn")
		cmd.Stderr = os.Stderr
		if rs.profile != "" {
			cmd.Env = append(os.Environ(), "ETLD_CPUPROFILE="+rs.profile)
		}
	}
	r, err := measure(cmd, rs.out)
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("still running after -timeout %v: killed (%v)", rs.timeout, err)
	}
	return r, err
}

// checkSortedTS checks that every line of a W3 output has a ts (RFC 3339)
// no earlier than the line before.
func checkSortedTS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := lineScanner(f)
	var prev time.Time
	n, bad := 0, 0
	first := ""
	for sc.Scan() {
		n++
		s, ok := linescan.String(sc.Bytes(), `"ts":"`)
		if !ok {
			return fmt.Errorf("line %d has no ts: %.200s", n, sc.Bytes())
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return fmt.Errorf("line %d: %v", n, err)
		}
		if t.Before(prev) {
			if bad == 0 {
				first = fmt.Sprintf("line %d: ts %s before %s", n, s, prev.Format(time.RFC3339Nano))
			}
			bad++
		}
		prev = t
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%d order violations, the first at %s", bad, first)
	}
	return nil
}
