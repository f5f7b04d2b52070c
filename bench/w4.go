package main

// W4 is TCP syslog ingest: -feeds connections (default 4) send -lines
// RFC 5424 messages each (default 500,000), octet-counted (RFC 6587), to
// a `syslog` source with parse: true that writes a file. The clock runs
// from the first byte sent to the last record in the output file, whose
// lines are counted as they are written; peak RSS and CPU time come from
// the process once it is stopped. The messages are generated once into
// -syslog-data and sent from there with sendfile, so that the client
// costs the two cores little.
//
// When Debian's rsyslog is installed (apt-get install rsyslog), rsyslogd
// runs on the same data in the same round (imtcp -> omfile with a JSON
// template of the same fields) and the ratio is printed:
//
//	go run ./bench -workloads W4 -runs 3

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

type syslogConfig struct {
	data, work, bin string
	conns, msgs     int
	runs            int
	timeout         time.Duration
}

// syslogMessage is message seq of connection c, without its frame.
func syslogMessage(dst []byte, c, seq int) []byte {
	return fmt.Appendf(dst, `<%d>1 2026-12-04T10:%02d:%02d.%06dZ web%02d.example.net app%d %d ID%d [req@32473 conn="%d" seq="%d"] GET /api/orders/%d completed in %dms status=200 bytes=%d`,
		128+seq%8, seq/60%60, seq%60, seq%1000000, c, c%3, 1000+c, seq%50, c, seq, seq*7%100000, seq%997, seq*13%65536)
}

// generateSyslog writes one file per connection of octet-counted
// messages, unless they are there already.
func generateSyslog(sc syslogConfig) ([]string, error) {
	if err := os.MkdirAll(sc.data, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for c := range sc.conns {
		path := filepath.Join(sc.data, fmt.Sprintf("conn-%d.syslog", c))
		paths = append(paths, path)
		if _, err := os.Stat(path); err == nil {
			continue
		}
		tmp := path + ".tmp"
		f, err := os.Create(tmp)
		if err != nil {
			return nil, err
		}
		w := bufio.NewWriterSize(f, 1<<20)
		var msg []byte
		for seq := range sc.msgs {
			msg = syslogMessage(msg[:0], c, seq)
			fmt.Fprintf(w, "%d ", len(msg))
			_, _ = w.Write(msg)
		}
		if err := errors.Join(w.Flush(), f.Close()); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, err
		}
	}
	return paths, nil
}

// rsyslogConf is rsyslogd's config: imtcp on addr into out as JSON with
// the fields parse_syslog gives.
func rsyslogConf(work, port, out string) string {
	fields := []struct{ out, prop, opts string }{
		{"timestamp", "timereported", ` dateFormat="rfc3339"`}, {"hostname", "hostname", ""}, {"appname", "app-name", ""},
		{"procid", "procid", ""}, {"msgid", "msgid", ""}, {"facility", "syslogfacility-text", ""},
		{"severity", "syslogseverity-text", ""}, {"message", "msg", ""}, {"structured_data", "structured-data", ""},
		{"peer", "fromhost-ip", ""},
	}
	var props strings.Builder
	for _, f := range fields {
		fmt.Fprintf(&props, "  property(outname=%q name=%q format=\"jsonf\"%s)\n", f.out, f.prop, f.opts)
	}
	return fmt.Sprintf(`global(workDirectory=%q)
module(load="imtcp" MaxSessions="16")
template(name="json" type="list" option.jsonf="on") {
%s}
input(type="imtcp" address="127.0.0.1" port=%q)
*.* action(type="omfile" file=%q template="json")
`, work, props.String(), port, out)
}

func runSyslog(sc syslogConfig) error {
	paths, err := generateSyslog(sc)
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	rsyslogd, lookErr := exec.LookPath("rsyslogd")
	total := sc.conns * sc.msgs
	load := loadavg()
	fmt.Printf("W4: TCP syslog ingest, %d connections x %d RFC 5424 messages (octet-counted) -> file, parse: true\n\n", sc.conns, sc.msgs)
	names := []string{"etld"}
	if lookErr == nil {
		names = append(names, "rsyslogd")
	}
	res := make([][]result, len(names))
	for round := range sc.runs {
		for i, name := range names {
			dir := filepath.Join(sc.work, fmt.Sprintf("w4-%s-%d", name, round))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			r, err := syslogRun(sc, name, rsyslogd, dir, paths, total)
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", name, round+1, err)
			}
			res[i] = append(res[i], r)
			_ = os.RemoveAll(dir)
		}
	}
	fmt.Printf("| program | messages/s median (min-max of %d) | CPU s median | peak RSS MiB max |\n|---|---|---|---|\n", sc.runs)
	medRate := make([]float64, len(names))
	for i, name := range names {
		var rates, cpus []float64
		var rss int64
		for _, r := range res[i] {
			rates = append(rates, float64(total)/r.wall.Seconds())
			cpus = append(cpus, r.cpu.Seconds())
			rss = max(rss, r.rssKiB)
		}
		medRate[i] = median(rates)
		fmt.Printf("| %s | %.0f (%.0f-%.0f) | %.2f | %.1f |\n", name, medRate[i], slices.Min(rates), slices.Max(rates), median(cpus), float64(rss)/1024)
	}
	fmt.Println()
	if lookErr == nil {
		fmt.Printf("etld / rsyslogd: %.2fx the median messages/s\n", medRate[0]/medRate[1])
	} else {
		fmt.Println("rsyslogd not found: install Debian's rsyslog (apt-get install -y rsyslog) to compare in the same run")
	}
	fmt.Printf("load average before: %s, after: %s; %d CPUs\n", load, loadavg(), runtime.NumCPU())
	return nil
}

// syslogRun starts etld (or rsyslogd) listening on a free port, sends the
// files over one connection each, and waits until the output has total
// lines.
func syslogRun(sc syslogConfig, name, rsyslogd, dir string, paths []string, total int) (result, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	addr := l.Addr().String()
	_ = l.Close()
	_, port, _ := net.SplitHostPort(addr)
	out := filepath.Join(dir, "out.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), sc.timeout)
	defer cancel()
	var cmd *exec.Cmd
	if name == "etld" {
		cfg := filepath.Join(dir, "w4.yaml")
		// checkpoint_interval 100ms: the file sink writes at each checkpoint, so
		// the end of the run is seen to 0.1 s, not to the default 1 s.
		yaml := fmt.Sprintf("version: 1\ncheckpoint_interval: 100ms\nsources:\n  in:\n    type: syslog\n    address: %s\n    max_connections: 16\nsinks:\n  out:\n    type: file\n    inputs: [in]\n    path: %s\n", addr, out)
		if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
			return result{}, err
		}
		cmd = exec.CommandContext(ctx, sc.bin, "run", "-c", cfg, "--state-dir", filepath.Join(dir, "state"),
			"--admin", "off", "--no-watch", "--log-level", "warn")
	} else {
		conf := filepath.Join(dir, "rsyslog.conf")
		if err := os.WriteFile(conf, []byte(rsyslogConf(dir, port, out)), 0o644); err != nil {
			return result{}, err
		}
		cmd = exec.CommandContext(ctx, rsyslogd, "-n", "-f", conf, "-i", filepath.Join(dir, "rsyslogd.pid"))
	}
	cmd.Stderr = os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	// Wait until it listens: a probe connection that sends nothing.
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			break
		}
		if ctx.Err() != nil {
			return result{}, fmt.Errorf("%s does not listen on %s", name, addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(paths))
	for i, p := range paths {
		wg.Go(func() { errs[i] = sendFile(addr, p) })
	}
	lc := &tailCounter{path: out}
	for lc.count() < total {
		if ctx.Err() != nil {
			return result{}, fmt.Errorf("%d of %d lines after %v", lc.n, total, sc.timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	wall := time.Since(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return result{}, err
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	werr := cmd.Wait()
	waited = true
	if werr != nil && name == "etld" {
		return result{}, fmt.Errorf("etld: %w", werr)
	}
	r := result{name: name, wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.rssKiB = ru.Maxrss
	}
	if n := lc.count(); n != total {
		return result{}, fmt.Errorf("%d lines written, want %d", n, total)
	}
	r.lines = total
	if f, err := os.Open(out); err == nil {
		line, _ := bufio.NewReader(f).ReadString('\n')
		_ = f.Close()
		fmt.Fprintf(os.Stderr, "%s writes: %s", name, line)
	}
	return r, nil
}

// sendFile sends the file at path over one TCP connection (sendfile).
func sendFile(addr, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	if _, err := io.Copy(c, f); err != nil {
		_ = c.Close()
		return err
	}
	return c.Close()
}

// tailCounter counts the lines of a growing file, reading only what was
// appended since the last count.
type tailCounter struct {
	path string
	off  int64
	n    int
	buf  []byte
}

func (t *tailCounter) count() int {
	f, err := os.Open(t.path)
	if err != nil {
		return t.n
	}
	defer f.Close()
	if t.buf == nil {
		t.buf = make([]byte, 1<<20)
	}
	for {
		k, err := f.ReadAt(t.buf, t.off)
		t.n += bytes.Count(t.buf[:k], []byte{'\n'})
		t.off += int64(k)
		if err != nil || k == 0 {
			return t.n
		}
	}
}
