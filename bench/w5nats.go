package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// W5-NATS: W2's records through NATS JetStream, each way, against a
// server started in this process (on 127.0.0.1, its store under the work
// directory): file -> nats sink (every record published and acked), then
// nats source -> file (every record of the stream written, acks after
// checkpoints). The server's own CPU and memory are this process's, not
// etld's: the RSS reported is etld's (VmHWM, see finish).
//
//	go run ./bench -workloads W5-NATS -runs 3

// w5Config is the W5-NATS setting.
type w5Config struct {
	shared, data, work, bin string
	feeds, lines, runs      int
	timeout                 time.Duration
}

func runW5NATS(c w5Config) error {
	if err := generate(c.shared, c.data, c.feeds, c.lines); err != nil {
		return err
	}
	total := c.feeds * c.lines
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(c.work, "jetstream"),
		NoLog: true, NoSigs: true, MaxPending: 256 << 20,
	})
	if err != nil {
		return err
	}
	srv.Start()
	defer srv.Shutdown()
	if !srv.ReadyForConnections(10 * time.Second) {
		return fmt.Errorf("nats server did not start")
	}
	url := srv.ClientURL()
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "W5", Subjects: []string{"w5.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		return err
	}
	glob := filepath.Join(c.data, "feed-*.jsonl")
	out := filepath.Join(c.work, "w5-out.jsonl")
	loadBefore := loadavg()
	var pub, sub []result
	for i := range c.runs {
		// file -> nats: a fresh stream content and state each run.
		if err := stream.Purge(ctx); err != nil {
			return err
		}
		state := filepath.Join(c.work, fmt.Sprintf("w5-state-pub-%d", i))
		// A pipeline name of its own per run: the records' Nats-Msg-Ids
		// name the pipeline, and the stream drops a second run's records
		// as duplicates of the first's within its duplicate window.
		cfg := filepath.Join(c.work, fmt.Sprintf("w5pub-%d.yaml", i))
		if err := os.WriteFile(cfg, []byte(`version: 1
sources:
  feeds: {type: file, path: "`+glob+`", follow: false}
sinks:
  bus: {type: nats, inputs: [feeds], url: "`+url+`", subject: w5.records}
`), 0o644); err != nil {
			return err
		}
		cmd := exec.Command(c.bin, "run", "-c", cfg, "--state-dir", state, "--admin", "off", "--no-watch")
		cmd.Stderr = os.Stderr
		r, err := measureRun(cmd, c.timeout, func() (int, error) {
			info, err := stream.Info(ctx)
			if err != nil {
				return 0, err
			}
			return int(info.State.Msgs), nil
		}, total, false)
		if err != nil {
			return fmt.Errorf("W5-NATS file -> nats: %w", err)
		}
		r.name = "file -> nats"
		pub = append(pub, r)

		// nats -> file: a new durable reads the whole stream.
		os.Remove(out)
		state = filepath.Join(c.work, fmt.Sprintf("w5-state-sub-%d", i))
		cfg = filepath.Join(c.work, "w5sub.yaml")
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 1
sources:
  bus: {type: nats, url: "%s", stream: W5, durable: w5run%d, max_ack_pending: 2000000}
sinks:
  out: {type: file, inputs: [bus], path: "%s", fsync: checkpoint}
`, url, i, out)), 0o644); err != nil {
			return err
		}
		cmd = exec.Command(c.bin, "run", "-c", cfg, "--state-dir", state, "--admin", "off", "--no-watch")
		cmd.Stderr = os.Stderr
		r, err = measureRun(cmd, c.timeout, func() (int, error) { return countLines(out) }, total, true)
		if err != nil {
			return fmt.Errorf("W5-NATS nats -> file: %w", err)
		}
		r.name = "nats -> file"
		sub = append(sub, r)
	}
	fmt.Printf("W5-NATS: %d W2 records (%d feeds x %d lines) through an in-process NATS JetStream server (file store), %d CPUs, load before %s, after %s\n",
		total, c.feeds, c.lines, runtime.NumCPU(), loadBefore, loadavg())
	for _, rs := range [][]result{pub, sub} {
		best := rs[0]
		var rates []string
		for _, r := range rs {
			rates = append(rates, fmt.Sprintf("%.0f", float64(total)/r.wall.Seconds()))
			if r.wall < best.wall {
				best = r
			}
		}
		fmt.Printf("  %-13s best %.2fs = %.0f records/s (runs: %s records/s), etld CPU %.2fs, etld peak RSS %.1f MiB, %d records\n",
			best.name, best.wall.Seconds(), float64(total)/best.wall.Seconds(), strings.Join(rates, ", "),
			best.cpu.Seconds(), float64(best.rssKiB)/1024, best.lines)
	}
	fmt.Println("  targets: >= 500000 records/s each way, peak RSS < 96 MiB")
	return nil
}

// measureRun runs cmd until count reports want (the time taken is the
// wall time), then, for a run that does not end by itself (live), stops
// it with SIGTERM; it returns etld's CPU time and peak RSS.
func measureRun(cmd *exec.Cmd, timeout time.Duration, count func() (int, error), want int, live bool) (result, error) {
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var r result
	deadline := time.Now().Add(timeout)
	for {
		r.rssKiB = max(r.rssKiB, vmHWM(cmd.Process.Pid))
		n, err := count()
		if err == nil && n >= want {
			r.wall, r.lines = time.Since(start), n
			break
		}
		select {
		case err := <-exited:
			if !live && err == nil {
				r.wall = time.Since(start)
				n, err = count()
				for tries := 0; err != nil && tries < 10; tries++ { // a busy server may time out
					n, err = count()
				}
				r.lines = n
				if n < want {
					return r, fmt.Errorf("etld ended with %d of %d records", n, want)
				}
				return finish(r, cmd), nil
			}
			return r, fmt.Errorf("etld exited (%v) with %d of %d records", err, n, want)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return r, fmt.Errorf("%d of %d records after %v", n, want, timeout)
		}
	}
	r.rssKiB = max(r.rssKiB, vmHWM(cmd.Process.Pid))
	if live {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	if err := <-exited; err != nil {
		return r, fmt.Errorf("etld: %w", err)
	}
	return finish(r, cmd), nil
}

// finish adds etld's CPU time. Its peak RSS is VmHWM, polled while it
// runs: the rusage of a child started from this process counts the
// memory of this process (and of the server in it) from before the exec.
func finish(r result, cmd *exec.Cmd) result {
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r
}
