package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/etld/etld/internal/kafkatest"
)

// W5-Kafka measures the kafka sink and source: W2 (parse_json, filter,
// set) from the shared feeds into a kafka sink, then a kafka source (a
// consumer group) into a file, against kfake started in this process on
// 127.0.0.1 (or the brokers of -kafka-brokers). kfake is a test double,
// not a performance reference: it shares this machine's CPUs with etld
// and keeps everything in memory, so the figures bound etld's own cost
// from below rather than predict a real cluster's throughput.
//
//	go run ./bench -workloads W5-Kafka -runs 3

// kafkaConfig is the W5-Kafka setting.
type kafkaConfig struct {
	shared, data, work, bin string
	feeds, lines, runs      int
	partitions              int32
	brokers                 string // external brokers; "" starts kfake
}

// w5Result is one run of both directions.
type w5Result struct{ sink, source result }

func runW5Kafka(kc kafkaConfig) error {
	if err := generate(kc.shared, kc.data, kc.feeds, kc.lines); err != nil {
		return err
	}
	glob := filepath.Join(kc.data, "feed-*.jsonl")
	matches, _ := filepath.Glob(glob)
	debug, err := countDebug(matches)
	if err != nil {
		return err
	}
	total := kc.feeds * kc.lines
	kept := total - debug
	loadBefore := loadavg()
	var best w5Result
	for i := range kc.runs {
		r, err := w5Once(kc, glob, kept, i)
		if err != nil {
			return err
		}
		if i == 0 || r.sink.wall < best.sink.wall {
			best.sink = r.sink
		}
		if i == 0 || r.source.wall < best.source.wall {
			best.source = r.source
		}
	}
	where := "kfake in the bench process (not a performance reference)"
	if kc.brokers != "" {
		where = "brokers " + kc.brokers
	}
	fmt.Printf("W5-Kafka: %d feeds x %d lines (%d records, %d after W2's filter), %d partitions, %s/%s, %d CPUs, best of %d runs\n",
		kc.feeds, kc.lines, total, kept, kc.partitions, runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), kc.runs)
	fmt.Printf("%s; load average %s before, %s after\n\n", where, loadBefore, loadavg())
	fmt.Println("| direction | records/s | wall s | etld CPU s | etld peak RSS MiB | records |")
	fmt.Println("|---|---:|---:|---:|---:|---:|")
	fmt.Printf("| file -> W2 -> kafka sink | %.0f | %.2f | %.2f | %.1f | %d |\n", float64(total)/best.sink.wall.Seconds(),
		best.sink.wall.Seconds(), best.sink.cpu.Seconds(), float64(best.sink.rssKiB)/1024, best.sink.lines)
	fmt.Printf("| kafka source -> file | %.0f | %.2f | %.2f | %.1f | %d |\n", float64(kept)/best.source.wall.Seconds(),
		best.source.wall.Seconds(), best.source.cpu.Seconds(), float64(best.source.rssKiB)/1024, best.source.lines)
	return nil
}

// w5Once runs both directions once on a fresh topic (and cluster).
func w5Once(kc kafkaConfig, glob string, kept, round int) (w5Result, error) {
	brokers := kc.brokers
	if brokers == "" {
		fake, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return w5Result{}, fmt.Errorf("kfake: %w", err)
		}
		defer fake.Close()
		brokers = strings.Join(fake.ListenAddrs(), ",")
	}
	topic := fmt.Sprintf("w5-%d-%d", os.Getpid(), round)
	if err := createTopic(brokers, topic, kc.partitions); err != nil {
		return w5Result{}, err
	}
	state := filepath.Join(kc.work, "w5-state")
	out := filepath.Join(kc.work, "w5-out.jsonl")
	os.RemoveAll(state)
	os.Remove(out)
	defer os.RemoveAll(state)
	defer os.Remove(out)
	list := "[" + brokers + "]"

	sinkCfg := filepath.Join(kc.work, "w5-sink.yaml")
	if err := os.WriteFile(sinkCfg, []byte(w2Pipeline(glob, "", `{type: kafka, inputs: [w2], brokers: `+list+`, topic: `+topic+`}`)), 0o644); err != nil {
		return w5Result{}, err
	}
	cmd := exec.Command(kc.bin, "run", "-c", sinkCfg, "--state-dir", filepath.Join(state, "sink"),
		"--admin", "off", "--no-watch", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	var r w5Result
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	hwm := sampleHWM(cmd.Process.Pid)
	if err := cmd.Wait(); err != nil {
		return r, fmt.Errorf("file -> kafka: %w", err)
	}
	r.sink = usage(cmd, time.Since(start), hwm())
	n, err := topicRecords(brokers, topic)
	if err != nil {
		return r, err
	}
	if n != int64(kept) {
		return r, fmt.Errorf("file -> kafka: the topic holds %d records, want %d", n, kept)
	}
	r.sink.lines = int(n)

	srcCfg := filepath.Join(kc.work, "w5-source.yaml")
	if err := os.WriteFile(srcCfg, []byte(`version: 1
sources:
  in: {type: kafka, brokers: `+list+`, topics: [`+topic+`], group: w5-`+topic+`}
sinks:
  out: {type: file, inputs: [in], path: "`+out+`", fsync: checkpoint}
`), 0o644); err != nil {
		return r, err
	}
	cmd = exec.Command(kc.bin, "run", "-c", srcCfg, "--state-dir", filepath.Join(state, "source"),
		"--admin", "off", "--no-watch", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	start = time.Now()
	if err := cmd.Start(); err != nil {
		return r, err
	}
	hwm = sampleHWM(cmd.Process.Pid)
	// The source never ends: the time is until the last record is in
	// the file (polled), then etld is stopped.
	deadline := time.Now().Add(10 * time.Minute)
	var wall time.Duration
	for {
		lines, _ := countLines(out)
		if lines >= kept {
			wall = time.Since(start)
			break
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return r, fmt.Errorf("kafka -> file: %d of %d records after 10 minutes", lines, kept)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		return r, fmt.Errorf("kafka -> file: stop: %w", err)
	}
	r.source = usage(cmd, wall, hwm())
	if r.source.lines, err = countLines(out); err != nil || r.source.lines != kept {
		return r, fmt.Errorf("kafka -> file wrote %d lines, want %d (%v)", r.source.lines, kept, err)
	}
	return r, nil
}

// usage is the CPU time of an exited command, with its peak RSS.
func usage(cmd *exec.Cmd, wall time.Duration, rssKiB int64) result {
	return result{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), rssKiB: rssKiB}
}

// sampleHWM follows the peak RSS (VmHWM) of a running process and
// returns a function giving the last value seen, to call once it exited.
// The rusage of wait4 would not do here: Linux carries the parent's peak
// RSS into a child that execs after a vfork-style clone, and the parent
// is this process, whose kfake holds the whole topic.
func sampleHWM(pid int) func() int64 {
	var last atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			kib := vmHWM(pid)
			if kib == 0 {
				return // exited
			}
			last.Store(kib)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return func() int64 {
		<-done
		return last.Load()
	}
}

func createTopic(brokers, topic string, partitions int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return kafkatest.NewTopic(ctx, cl, topic, partitions)
}

// topicRecords sums the high watermarks of topic's partitions.
func topicRecords(brokers, topic string) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := kafkatest.EndOffsets(ctx, cl, topic, false)
	var n int64
	for _, o := range ends {
		n += o
	}
	return n, err
}
