package main

// The live case of MANYFEEDS: -manyfeeds-live followed files (default
// 1,000) merged by ts, of which 10% send one record at the start and then
// nothing. The others are appended to every 50ms, -manyfeeds-live-rate
// records/s in all (default 50,000), for -manyfeeds-live-for (default
// 20s), each record's ts the time it is written. The merge has
// idle_timeout 2s and max_lateness 10s: a silent feed holding the merge
// back would show as records waiting max_lateness. The bench tails the
// output and reports the delay from write to output (median, p99, max,
// after twice idle_timeout + 1s), then stops etld with SIGTERM for
// its CPU time and peak RSS. Every record must be in the output once.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/etld/etld/internal/linescan"
)

const (
	liveIdle     = 2 * time.Second
	liveLateness = 10 * time.Second
	liveTick     = 50 * time.Millisecond
)

func runManyFeedsLive(mc manyFeedsConfig) error {
	dir, err := os.MkdirTemp(mc.work, "manyfeeds-live-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	in := filepath.Join(dir, "in")
	if err := os.MkdirAll(in, 0o755); err != nil {
		return err
	}
	n := mc.live
	silent := n / 10
	start := time.Now()
	files := make([]*os.File, n)
	for i := range files {
		f, err := os.Create(filepath.Join(in, fmt.Sprintf("feed-%d.jsonl", i+1)))
		if err != nil {
			return err
		}
		defer f.Close()
		files[i] = f
		if i < silent { // one record, then silence
			if _, err := f.Write(liveLine(nil, start, i+1, 0)); err != nil {
				return err
			}
		}
	}
	out := filepath.Join(dir, "out.jsonl")
	cfg := filepath.Join(dir, "live.yaml")
	merge := fmt.Sprintf(", idle_timeout: %v, max_lateness: %v", liveIdle, liveLateness)
	if err := os.WriteFile(cfg, []byte(manyFeedsPipeline(filepath.Join(in, "*.jsonl"), out, true, merge)), 0o644); err != nil {
		return err
	}
	loadBefore := loadavg()
	cmd := exec.Command(mc.bin, "run", "-c", cfg, "--state-dir", filepath.Join(dir, "state"),
		"--admin", "off", "--no-watch", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if mc.profiles != "" {
		cmd.Env = append(os.Environ(), "ETLD_CPUPROFILE="+filepath.Join(mc.profiles, "MANYFEEDS-live.pprof"))
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-done
		}
	}()

	// Tail the output: the delay of every record from its write (its ts).
	var delays []time.Duration
	var outLines int
	tailer := &liveTailer{path: out}
	defer tailer.close()
	steadyFrom := start.Add(2*liveIdle + time.Second) // past etld's start and the silent feeds turning idle
	collect := func() error {
		return tailer.poll(func(line []byte, now time.Time) error {
			outLines++
			s, ok := linescan.String(line, `"ts":"`)
			if !ok {
				return fmt.Errorf("output line without ts: %.200s", line)
			}
			ts, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return err
			}
			if ts.After(steadyFrom) {
				delays = append(delays, now.Sub(ts))
			}
			return nil
		})
	}

	// Write: every liveTick, the share of the rate to each active feed.
	written := silent
	seq := make([]int, n)
	var line []byte
	perTick := float64(mc.liveRate) * liveTick.Seconds() / float64(n-silent)
	owed := make([]float64, n)
	tick := time.NewTicker(liveTick)
	end := time.Now().Add(mc.liveFor)
	writeStart := time.Now()
	for now := range tick.C {
		if now.After(end) {
			break
		}
		for i := silent; i < n; i++ {
			owed[i] += perTick
			line = line[:0]
			for ; owed[i] >= 1; owed[i]-- {
				line = liveLine(line, time.Now(), i+1, seq[i])
				seq[i]++
				written++
			}
			if len(line) > 0 {
				if _, err := files[i].Write(line); err != nil {
					return err
				}
			}
		}
		if err := collect(); err != nil {
			return err
		}
	}
	tick.Stop()
	writeWall := time.Since(writeStart)
	deadline := time.Now().Add(liveLateness + 30*time.Second)
	for outLines < written {
		if time.Now().After(deadline) {
			return fmt.Errorf("live: %d of %d records in the output %v after the writers stopped", outLines, written, liveLateness+30*time.Second)
		}
		time.Sleep(20 * time.Millisecond) // polling the output file, not synchronising
		if err := collect(); err != nil {
			return err
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if err := <-done; err != nil {
		return fmt.Errorf("live: etld: %w", err)
	}
	if err := collect(); err != nil {
		return err
	}
	if outLines != written {
		return fmt.Errorf("live: %d records in the output, %d written", outLines, written)
	}
	if err := checkMerged(out, false); err != nil {
		return fmt.Errorf("live: %w", err)
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss
	}
	slices.Sort(delays)
	q := func(p float64) time.Duration {
		if len(delays) == 0 {
			return 0
		}
		return delays[min(len(delays)-1, int(p*float64(len(delays))))]
	}
	fmt.Printf("MANYFEEDS live: %d followed feeds (%d silent after one record), %d records/s asked for %v; idle_timeout %v, max_lateness %v\n",
		n, silent, mc.liveRate, mc.liveFor, liveIdle, liveLateness)
	fmt.Printf("load average %s before, %s after\n\n", loadBefore, loadavg())
	fmt.Println("| records | records/s written | CPU s | CPU s per M records | peak RSS MiB | delay median | delay p99 | delay max |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Printf("| %d | %.0f | %.2f | %.2f | %.1f | %v | %v | %v |\n", written, float64(written-silent)/writeWall.Seconds(),
		cpu.Seconds(), cpu.Seconds()/float64(written)*1e6, float64(rss)/1024,
		q(0.5).Round(time.Millisecond), q(0.99).Round(time.Millisecond), q(1).Round(time.Millisecond))
	if q(0.99) >= liveLateness {
		return fmt.Errorf("live: p99 delay %v reaches max_lateness %v: the silent feeds hold the merge back", q(0.99), liveLateness)
	}
	fmt.Println("\noutput checked: every record once, each feed in seq order; delays measured from 2 x idle_timeout + 1s after the start")
	return nil
}

// liveLine appends a record of feed k with ts t, in genjson.go's layout.
func liveLine(dst []byte, t time.Time, k, seq int) []byte {
	dst = append(dst, `{"ts":"`...)
	dst = t.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000000Z")
	dst = append(dst, `","feed":"feed-`...)
	dst = strconv.AppendInt(dst, int64(k), 10)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendInt(dst, int64(seq), 10)
	return append(dst, `,"level":"info","msg":"live record"}`+"\n"...)
}

// liveTailer reads the complete lines appended to a file since its last
// poll.
type liveTailer struct {
	path    string
	f       *os.File
	rd      *bufio.Reader
	partial []byte
}

func (t *liveTailer) close() {
	if t.f != nil {
		t.f.Close()
	}
}

func (t *liveTailer) poll(each func(line []byte, now time.Time) error) error {
	if t.f == nil {
		f, err := os.Open(t.path)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		t.f, t.rd = f, bufio.NewReaderSize(f, 1<<20)
	}
	now := time.Now()
	for {
		line, err := t.rd.ReadSlice('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if len(t.partial) > 0 {
				line = append(t.partial, line...)
				t.partial = t.partial[:0]
			}
			if err := each(bytes.TrimSuffix(line, []byte{'\n'}), now); err != nil {
				return err
			}
			continue
		}
		t.partial = append(t.partial, line...)
		if err == nil || errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
}
