package main

// MANYFILES: etld follows -manyfiles-n files (default 10,000), each of
// which the bench appends about one line per second to for
// -manyfiles-duration, and copies them to one output file. It measures
// etld's CPU (from /proc/PID/stat, over the steady phase after a warm-up),
// its peak RSS (VmHWM), its open descriptors, the end-to-end delay of each
// line (the write time embedded in the line against the time the bench
// reads it in the output; median and p99) and checks that every line is
// in the output exactly once. One command:
//
//	go run ./bench -workloads MANYFILES -manyfiles-n 10000
//
// Linux only (it reads /proc).

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// history is what each MANYFILES input holds before the run: 2 KiB of
// lines the bench does not count (not three fields).
var history = bytes.Repeat([]byte("# an earlier line of this log, before the measured run.......\n"), 32)

type manyConfig struct {
	work, bin string
	n         int
	dur       time.Duration
	maxOpen   int    // max_open_files; 0: n+64
	watch     string // etld run's --watch
}

func runManyFiles(mc manyConfig) error {
	dir, err := os.MkdirTemp(mc.work, "manyfiles-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out.log")
	if err := os.Mkdir(in, 0o755); err != nil {
		return err
	}
	files := make([]*os.File, mc.n)
	for i := range files {
		f, err := os.OpenFile(filepath.Join(in, fmt.Sprintf("f%05d.log", i)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("create input %d (raise ulimit -n?): %w", i, err)
		}
		defer f.Close()
		files[i] = f
		// Some history, as a log file has: beyond the 1 KiB that
		// identifies a file, whose hash etld extends while a file is
		// shorter.
		if _, err := f.Write(history); err != nil {
			return err
		}
	}
	if mc.maxOpen == 0 {
		mc.maxOpen = mc.n + 64
	}
	cfg := filepath.Join(dir, "many.yaml")
	pipeline := fmt.Sprintf("version: 1\nsources:\n  logs: { type: file, path: %s, max_open_files: %d }\nsinks:\n  out: { type: file, inputs: [logs], path: %s }\n",
		filepath.Join(in, "*.log"), mc.maxOpen, out)
	if err := os.WriteFile(cfg, []byte(pipeline), 0o644); err != nil {
		return err
	}
	load := loadavg()
	cmd := exec.Command(mc.bin, "run", "-c", cfg, "--state-dir", filepath.Join(dir, "state"), "--admin", "off", "--log-format", "json", "--watch", mc.watch)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM) // a graceful stop writes ETLD_CPUPROFILE
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	// The reader: tails the output, records each line's delay and counts it.
	seen := make([]map[int]int, mc.n)
	for i := range seen {
		seen[i] = map[int]int{}
	}
	var mu sync.Mutex
	var delays []time.Duration
	got := 0
	stopRead := make(chan struct{})
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		var f *os.File
		var rest []byte
		buf := make([]byte, 1<<20)
		for {
			select {
			case <-stopRead:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if f == nil {
				if f, err = os.Open(out); err != nil {
					f = nil
					continue
				}
				defer f.Close()
			}
			for {
				k, rerr := f.Read(buf)
				now := time.Now().UnixNano()
				rest = append(rest, buf[:k]...)
				mu.Lock()
				for {
					i := bytes.IndexByte(rest, '\n')
					if i < 0 {
						break
					}
					fs := strings.Fields(string(rest[:i]))
					rest = rest[i+1:]
					if len(fs) != 3 {
						continue
					}
					idx, _ := strconv.Atoi(fs[0])
					seq, _ := strconv.Atoi(fs[1])
					ts, _ := strconv.ParseInt(fs[2], 10, 64)
					if idx >= 0 && idx < mc.n {
						seen[idx][seq]++
					}
					got++
					delays = append(delays, time.Duration(now-ts))
				}
				mu.Unlock()
				if rerr == io.EOF || k == 0 {
					break
				}
			}
		}
	}()

	// The writer: every 10 ms, the next n/100 files get a line, so each
	// file gets one a second.
	warm := min(5*time.Second, mc.dur/4)
	start := time.Now()
	written := make([]int, mc.n)
	total, next := 0, 0
	per := max(1, mc.n/100)
	var cpu0 time.Duration
	var t0 time.Time
	tick := time.NewTicker(10 * time.Millisecond)
	var line []byte
	for now := range tick.C {
		if t0.IsZero() && now.Sub(start) >= warm {
			cpu0, t0 = procCPU(pid), now
		}
		if now.Sub(start) >= mc.dur {
			break
		}
		for range per {
			line = strconv.AppendInt(line[:0], int64(next), 10)
			line = append(line, ' ')
			line = strconv.AppendInt(line, int64(written[next]), 10)
			line = append(line, ' ')
			line = strconv.AppendInt(line, time.Now().UnixNano(), 10)
			line = append(line, '\n')
			if _, err := files[next].Write(line); err != nil {
				return err
			}
			written[next]++
			total++
			next = (next + 1) % mc.n
		}
	}
	tick.Stop()
	cpu1, t1 := procCPU(pid), time.Now()
	fds := countDir(fmt.Sprintf("/proc/%d/fd", pid))
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		g := got
		mu.Unlock()
		if g >= total || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	hwm := vmHWM(pid)
	close(stopRead)
	<-readDone

	lost, dup := 0, 0
	for i := range mc.n {
		for s := range written[i] {
			switch c := seen[i][s]; {
			case c == 0:
				lost++
			case c > 1:
				dup += c - 1
			}
		}
	}
	slices.Sort(delays)
	q := func(p float64) time.Duration {
		if len(delays) == 0 {
			return 0
		}
		return delays[min(len(delays)-1, int(p*float64(len(delays))))]
	}
	steady := t1.Sub(t0).Seconds()
	cpuSec := (cpu1 - cpu0).Seconds()
	linesSteady := float64(mc.n) * steady
	fmt.Printf("MANYFILES files=%d duration=%s max_open_files=%d --watch %s load avg before: %s, after: %s\n", mc.n, mc.dur, mc.maxOpen, mc.watch, load, loadavg())
	fmt.Printf("  etld CPU %.1f%% of one core over %.0fs steady (%.2f CPU-s per million lines), peak RSS %d MiB, open fds %d\n",
		100*cpuSec/steady, steady, cpuSec/linesSteady*1e6, hwm>>10, fds)
	fmt.Printf("  delay median %s p99 %s; lines written %d, read %d, lost %d, duplicated %d\n",
		q(0.5).Round(time.Millisecond), q(0.99).Round(time.Millisecond), total, got, lost, dup)
	if lost > 0 || dup > 0 {
		return fmt.Errorf("MANYFILES: lost %d, duplicated %d lines\n%s", lost, dup, stderr.String())
	}
	return nil
}
