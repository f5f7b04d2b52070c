package natstest

// The ceiling of JetStream on this machine, without etld: how fast a bare
// client publishes ~170-byte messages, one per record, each with a
// Nats-Msg-Id, into a stream, and reads them back through a pull
// consumer. The server runs in a child process so that its CPU time and
// the client's can be told apart. Run with
//
//	go test -run '^$' -bench Ceiling -benchtime 200000x ./internal/natstest
//
// Each case reports msgs/s and the CPU microseconds per message of the
// server and of the client.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// childServer is a JetStream server in a child process (the test binary,
// see init), with its pid for its CPU time.
type childServer struct {
	url string
	cmd *exec.Cmd
	in  interface{ Close() error }
}

func startChild(b *testing.B) *childServer {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envServe+"="+b.TempDir())
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		b.Fatalf("server process: %v", err)
	}
	cs := &childServer{url: strings.TrimSpace(line), cmd: cmd, in: in}
	b.Cleanup(func() { _ = cs.in.Close(); _ = cs.cmd.Wait() })
	return cs
}

// cpu is the child's CPU time so far (user+system).
func (cs *childServer) cpu(b *testing.B) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cs.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // clock ticks (USER_HZ)
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs f and reports its rate and CPU split over n messages.
func measure(b *testing.B, cs *childServer, n int, f func()) {
	b.Helper()
	s0, c0, t0 := cs.cpu(b), selfCPU(), time.Now()
	b.ResetTimer()
	f()
	b.StopTimer()
	wall := time.Since(t0)
	s1, c1 := cs.cpu(b), selfCPU()
	b.ReportMetric(float64(n)/wall.Seconds(), "msgs/s")
	b.ReportMetric(float64((s1-s0).Microseconds())/float64(n), "server-us/msg")
	b.ReportMetric(float64((c1-c0).Microseconds())/float64(n), "client-us/msg")
}

var ceilingPayload = bytes.Repeat([]byte("x"), 170)

func ceilingStream(b *testing.B, js jetstream.JetStream, st jetstream.StorageType) {
	b.Helper()
	_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "C", Subjects: []string{"c.>"}, Storage: st, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}
}

func connect(b *testing.B, url string) (*nats.Conn, jetstream.JetStream) {
	b.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		b.Fatal(err)
	}
	return nc, js
}

func msgID(i int) string {
	return "pipeline/sink/src/feed-" + strconv.Itoa(i&3) + ".jsonl:" + strconv.Itoa(i*170)
}

// publishAsync is what the nats sink does: PublishMsgAsync, a header map
// per message, a future per message.
func publishAsync(b *testing.B, js jetstream.JetStream, n int, withID bool) {
	for i := range n {
		m := &nats.Msg{Subject: "c.x", Data: ceilingPayload}
		if withID {
			m.Header = nats.Header{jetstream.MsgIDHeader: []string{msgID(i)}}
		}
		if _, err := js.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("acks did not come")
	}
}

// publishRaw publishes with a reply subject on one wildcard inbox and
// counts the acks itself: no future, no JSON decoding.
func publishRaw(b *testing.B, nc *nats.Conn, n int, withID bool, window int) {
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	acked, bad := 0, 0
	inbox := nc.NewInbox()
	sub, err := nc.Subscribe(inbox+".*", func(m *nats.Msg) {
		mu.Lock()
		acked++
		if bytes.Contains(m.Data, []byte(`"error"`)) {
			bad++
		}
		cond.Signal()
		mu.Unlock()
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = sub.SetPendingLimits(-1, -1)
	reply := inbox + ".a"
	for i := range n {
		m := &nats.Msg{Subject: "c.x", Reply: reply, Data: ceilingPayload}
		if withID {
			m.Header = nats.Header{jetstream.MsgIDHeader: []string{msgID(i)}}
		}
		mu.Lock()
		for i-acked >= window {
			cond.Wait()
		}
		mu.Unlock()
		if err := nc.PublishMsg(m); err != nil {
			b.Fatal(err)
		}
	}
	mu.Lock()
	for acked < n {
		cond.Wait()
	}
	mu.Unlock()
	if bad > 0 {
		b.Fatalf("%d publishes refused", bad)
	}
}

// consume reads the stream through a durable pull consumer: Fetch of
// batch messages, acked one by one (explicit), only the last one of each
// fetch (ack all) or not at all (none).
func consume(b *testing.B, js jetstream.JetStream, nc *nats.Conn, n, batch int, policy jetstream.AckPolicy) {
	ctx := context.Background()
	c, err := js.CreateOrUpdateConsumer(ctx, "C", jetstream.ConsumerConfig{
		Durable: "d" + strconv.Itoa(int(policy)), AckPolicy: policy, MaxAckPending: -1, AckWait: time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}
	got := 0
	for got < n {
		mb, err := c.Fetch(min(batch, n-got), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		var last jetstream.Msg
		for m := range mb.Messages() {
			got++
			if policy == jetstream.AckExplicitPolicy {
				_ = nc.Publish(m.Reply(), []byte("+ACK"))
			}
			last = m
		}
		if err := mb.Error(); err != nil {
			b.Fatal(err)
		}
		if last != nil && policy == jetstream.AckAllPolicy {
			_ = nc.Publish(last.Reply(), []byte("+ACK"))
		}
	}
	if policy != jetstream.AckNonePolicy {
		if err := nc.Flush(); err != nil {
			b.Fatal(err)
		}
		// Wait for the server to process every ack (ack floor at the end).
		deadline := time.Now().Add(time.Minute)
		for {
			info, err := c.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if info.AckFloor.Stream >= uint64(n) {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("ack floor %d of %d", info.AckFloor.Stream, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func BenchmarkCeilingPublish(b *testing.B) {
	for _, st := range []jetstream.StorageType{jetstream.FileStorage, jetstream.MemoryStorage} {
		for _, mode := range []string{"async-id", "async-noid", "raw-id", "raw-noid"} {
			b.Run(fmt.Sprintf("%s/%s", st, mode), func(b *testing.B) {
				cs := startChild(b)
				nc, js := connect(b, cs.url)
				ceilingStream(b, js, st)
				measure(b, cs, b.N, func() {
					switch mode {
					case "async-id", "async-noid":
						publishAsync(b, js, b.N, mode == "async-id")
					case "raw-id", "raw-noid":
						publishRaw(b, nc, b.N, mode == "raw-id", 16384)
					}
				})
				info, err := js.Stream(context.Background(), "C")
				if err != nil {
					b.Fatal(err)
				}
				if got := info.CachedInfo().State.Msgs; got != uint64(b.N) {
					b.Fatalf("the stream holds %d messages, want %d", got, b.N)
				}
			})
		}
	}
}

func BenchmarkCeilingConsume(b *testing.B) {
	for _, st := range []jetstream.StorageType{jetstream.FileStorage, jetstream.MemoryStorage} {
		for _, p := range []jetstream.AckPolicy{jetstream.AckExplicitPolicy, jetstream.AckAllPolicy, jetstream.AckNonePolicy} {
			for _, batch := range []int{4096} {
				b.Run(fmt.Sprintf("%s/%s/fetch%d", st, p, batch), func(b *testing.B) {
					b.StopTimer()
					cs := startChild(b)
					nc, js := connect(b, cs.url)
					ceilingStream(b, js, st)
					publishRaw(b, nc, b.N, true, 16384)
					measure(b, cs, b.N, func() { consume(b, js, nc, b.N, batch, p) })
				})
			}
		}
	}
}
