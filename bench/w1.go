package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// w1Pipeline is W1: the feeds matching glob, read once, straight into
// one file (no steps: the passthrough path).
func w1Pipeline(glob, out string) string {
	return `version: 1
sources:
  feeds: {type: file, path: "` + glob + `", follow: false}
sinks:
  out: {type: file, inputs: [feeds], path: "` + out + `", fsync: checkpoint}
`
}

// runW1Rounds times cat and etld W1 over the feeds in data in runs
// paired rounds (which of the two goes first alternates, so that a
// change of load hits both alike) and prints medians: wall, CPU seconds
// (per million records too: the figure load disturbs least) and peak
// RSS, and the median over the rounds of cat's wall time over W1's, the
// figure of the passthrough target (W1 >= 0.8 x cat on a quiet machine).
func runW1Rounds(data, work, bin string, feeds, lines, runs int) error {
	matches, _ := filepath.Glob(filepath.Join(data, "feed-*.jsonl"))
	total := feeds * lines
	out := filepath.Join(work, "out.jsonl")
	cfg := filepath.Join(work, "W1-rounds.yaml")
	if err := os.WriteFile(cfg, []byte(w1Pipeline(filepath.Join(data, "feed-*.jsonl"), out)), 0o644); err != nil {
		return err
	}
	timers := []func() (result, error){ // in the order of res
		func() (result, error) { return timeCat(matches, out) },
		func() (result, error) { return timeEtld(bin, cfg, work, out) },
		func() (result, error) { return timeFloor(matches, out) },
	}
	loadBefore := loadavg()
	res := make([][]result, len(timers)) // cat, W1, floor
	var ratios []float64
	for round := range runs {
		var got [3]result
		for k := range timers {
			i := (k + round) % len(timers) // who goes first rotates
			r, err := timers[i]()
			if err != nil {
				return fmt.Errorf("W1 rounds: %w", err)
			}
			if r.lines != total {
				return fmt.Errorf("W1 rounds: round %d wrote %d lines, want %d", round+1, r.lines, total)
			}
			got[i] = r
		}
		for i := range res {
			res[i] = append(res[i], got[i])
		}
		ratios = append(ratios, got[0].wall.Seconds()/got[1].wall.Seconds())
	}
	fmt.Printf("\nW1 against cat, %d paired rounds (medians), %d feeds x %d lines\n", runs, feeds, lines)
	printRounds(data, work, loadBefore, "records", []string{"cat (reference)", "etld W1", "two-copy floor (in the bench's process, see timeFloor)"}, res, total)
	fmt.Printf("\nW1 throughput = %.2f x cat (median of the rounds' ratios: %s)\n", median(ratios), fmtList(ratios))
	return w1FixedCost(work, bin, runs, res[1])
}

// w1FloorBlock is the floor's read size: about one W1 batch (1,024
// lines of ~160 bytes).
const w1FloorBlock = 160 << 10

// timeFloor copies files into out the way W1's passthrough does at the
// least: one goroutine preads blocks into a few reused buffers, another
// writes them, with no line splitting, no records and no checkpoints.
// It runs in the bench's own process, so it has no start-up: its wall
// time is the floor of W1's wall time without its fixed cost, for a
// design that reads the bytes (to find lines) and writes them, two
// copies where cat makes one. CPU is the process's, which does nothing
// else meanwhile.
func timeFloor(files []string, out string) (result, error) {
	os.Remove(out)
	var before syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &before); err != nil {
		return result{}, err
	}
	start := time.Now()
	if err := floorCopy(files, out); err != nil {
		return result{}, err
	}
	r := result{wall: time.Since(start)}
	var after syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &after); err != nil {
		return result{}, err
	}
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	r.cpu = tv(after.Utime) - tv(before.Utime) + tv(after.Stime) - tv(before.Stime)
	r.rssKiB = after.Maxrss // the bench process's peak, not the copy's
	n, err := countLines(out)
	r.lines = n
	return r, err
}

// floorCopy is timeFloor's copy: files, in order, into out.
func floorCopy(files []string, out string) error {
	w, err := os.Create(out)
	if err != nil {
		return err
	}
	const inFlight = 8
	free := make(chan []byte, inFlight)
	for range inFlight {
		free <- make([]byte, w1FloorBlock)
	}
	full := make(chan []byte, 4)
	werr := make(chan error, 1)
	go func() {
		var err error
		for b := range full {
			if err == nil {
				_, err = w.Write(b)
			}
			free <- b[:cap(b)]
		}
		werr <- err
	}()
	rerr := func() error {
		defer close(full)
		for _, path := range files {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			var off int64
			for {
				buf := <-free
				n, err := f.ReadAt(buf, off)
				if n > 0 {
					full <- buf[:n]
					off += int64(n)
				} else {
					free <- buf
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					f.Close()
					return err
				}
			}
			f.Close()
		}
		return nil
	}()
	if err := <-werr; rerr == nil {
		rerr = err
	}
	if err := w.Close(); rerr == nil {
		rerr = err
	}
	return rerr
}

// w1FixedCost times etld running W1 over a one-line feed, runs times: the
// cost that does not depend on the input (start, config, state directory,
// final checkpoint, exit), which cat hardly has. It prints its medians and
// what is left of W1's median wall time without it (w1: W1's rounds).
func w1FixedCost(work, bin string, runs int, w1 []result) error {
	dir := filepath.Join(work, "w1-fixed")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "feed-1.jsonl"), []byte(`{"seq":1}`+"\n"), 0o644); err != nil {
		return err
	}
	out := filepath.Join(dir, "out.jsonl")
	cfg := filepath.Join(dir, "W1-fixed.yaml")
	if err := os.WriteFile(cfg, []byte(w1Pipeline(filepath.Join(dir, "feed-*.jsonl"), out)), 0o644); err != nil {
		return err
	}
	var walls, cpus []float64
	for range runs {
		r, err := timeEtld(bin, cfg, dir, out)
		if err != nil {
			return fmt.Errorf("W1 fixed cost: %w", err)
		}
		if r.lines != 1 {
			return fmt.Errorf("W1 fixed cost: wrote %d lines, want 1", r.lines)
		}
		walls, cpus = append(walls, r.wall.Seconds()), append(cpus, r.cpu.Seconds())
	}
	var w1Walls []float64
	for _, r := range w1 {
		w1Walls = append(w1Walls, r.wall.Seconds())
	}
	fixed := median(walls)
	fmt.Printf("W1 fixed cost (one line, %d runs): wall %.3f s, CPU %.3f s (medians); W1's median wall without it %.3f s\n",
		runs, fixed, median(cpus), median(w1Walls)-fixed)
	return nil
}

// timeCat measures cat of files into out, the reference of W1.
func timeCat(files []string, out string) (result, error) {
	os.Remove(out)
	f, err := os.Create(out)
	if err != nil {
		return result{}, err
	}
	defer f.Close()
	cmd := exec.Command("cat", files...)
	cmd.Stdout = f
	return measure(cmd, out)
}

// timeEtld measures etld running the pipeline cfg, which writes out,
// from a fresh state directory in work.
func timeEtld(bin, cfg, work, out string) (result, error) {
	os.Remove(out)
	os.RemoveAll(filepath.Join(work, "state"))
	cmd := exec.Command(bin, "run", "-c", cfg, "--state-dir", filepath.Join(work, "state"),
		"--admin", "off", "--no-watch", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	return measure(cmd, out)
}
