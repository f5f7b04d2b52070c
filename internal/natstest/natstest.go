// Package natstest gives tests a NATS server with JetStream: one started
// in-process on 127.0.0.1 (a random port, a temporary store directory),
// or the external server named by $ETLD_TEST_NATS_URL. Unit tests and the
// e2e tests (whose etld processes dial the server) use the same helper.
package natstest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EnvURL names the environment variable of an external server. With it
// set, tests use that server (which must have JetStream enabled) and
// create streams with names of their own, deleting them at the end.
const EnvURL = "ETLD_TEST_NATS_URL"

// Server is a JetStream server for one test.
type Server struct {
	URL  string
	srv  *server.Server // nil for an external server
	dir  string
	port int
	// child is the stdin of Shared's server process, which exits when
	// it closes (an *os.File is closed when collected: keep it).
	child io.Closer
}

var streamSeq atomic.Int64

// Start starts an in-process server (or returns the external one), shut
// down when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	if url := os.Getenv(EnvURL); url != "" {
		return &Server{URL: url}
	}
	s := &Server{dir: t.TempDir(), port: -1}
	s.start(t)
	t.Cleanup(s.Shutdown)
	return s
}

// External reports whether the server is not the test's own (so it cannot
// be stopped and restarted).
func (s *Server) External() bool { return s.srv == nil && s.dir == "" }

// Shared returns a server for the whole test binary, run in a child
// process (the test binary itself, see init) that ends with the test
// process. Suites that check for leaked goroutines around each case use
// it: the server's streams and consumers have goroutines of their own,
// which would be taken for the case's. It cannot be restarted.
var Shared = sync.OnceValues(func() (*Server, error) {
	if url := os.Getenv(EnvURL); url != "" {
		return &Server{URL: url}, nil
	}
	dir, err := os.MkdirTemp("", "etld-natstest-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envServe+"="+dir)
	in, err := cmd.StdinPipe() // the child exits when it closes: when this process ends
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("the server process did not start: %v", err)
	}
	return &Server{URL: strings.TrimSpace(line), child: in}, nil
})

// envServe makes the test binary a NATS server (see init).
const envServe = "ETLD_NATSTEST_SERVE"

// init turns a test binary started by Shared into the server: it runs
// before the test package's own initialisation and never returns.
func init() {
	dir := os.Getenv(envServe)
	if dir == "" {
		return
	}
	s := &Server{dir: dir, port: -1}
	if err := s.run(); err != nil {
		fmt.Fprintln(os.Stderr, "natstest:", err)
		os.Exit(1)
	}
	fmt.Println(s.URL)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent goes
	s.Shutdown()
	_ = os.RemoveAll(dir)
	os.Exit(0)
}

func (s *Server) start(t testing.TB) {
	t.Helper()
	if err := s.run(); err != nil {
		t.Fatalf("natstest: %v", err)
	}
}

func (s *Server) run() error {
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      s.port,
		JetStream: true,
		StoreDir:  s.dir,
		NoLog:     true,
		NoSigs:    true,
		// The benchmarks and tests publish fast: keep the server from
		// cutting off a client whose reads lag for a moment.
		MaxPending: 256 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("the server did not start")
	}
	s.srv = srv
	addr := srv.Addr().String()
	if s.port <= 0 {
		_, p, _ := strings.Cut(addr, ":")
		fmt.Sscan(p, &s.port)
	}
	s.URL = "nats://" + addr
	return nil
}

// Shutdown stops an in-process server (its store stays, for Restart).
func (s *Server) Shutdown() {
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
		s.srv = nil
	}
}

// Restart starts a stopped in-process server again, on the same port
// and store. It skips t for an external server.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if s.dir == "" {
		t.Skipf("natstest: %s is external: cannot restart it", EnvURL)
	}
	s.start(t)
}

// Connect opens a client connection, closed when t ends.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js := s.connect(t)
	t.Cleanup(nc.Close)
	return nc, js
}

// connect opens a connection for the caller to close.
func (s *Server) connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.URL)
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", s.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		t.Fatalf("natstest: %v", err)
	}
	return nc, js
}

// Stream creates a stream with a unique name capturing "<name>.>" and
// returns the name (also the subject prefix). It is deleted when t ends.
func (s *Server) Stream(t testing.TB, base string) string {
	t.Helper()
	name := fmt.Sprintf("%s_%d_%d", base, os.Getpid(), streamSeq.Add(1))
	nc, js := s.connect(t)
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       name,
		Subjects:   []string{name + ".>"},
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		t.Fatalf("natstest: create stream %s: %v", name, err)
	}
	if s.External() {
		t.Cleanup(func() {
			nc, err := nats.Connect(s.URL)
			if err != nil {
				return
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = js.DeleteStream(ctx, name)
		})
	}
	return name
}

// Publish publishes payloads to subject, waiting for every ack.
func (s *Server) Publish(t testing.TB, subject string, payloads []string) {
	t.Helper()
	nc, js := s.connect(t)
	defer nc.Close()
	for i, p := range payloads {
		if _, err := js.PublishAsync(subject, []byte(p)); err != nil {
			t.Fatalf("natstest: publish: %v", err)
		}
		if i%1000 == 999 || i == len(payloads)-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				t.Fatalf("natstest: publish acks did not come")
			}
		}
	}
}

// Messages returns the payloads of every message of stream, in order.
func (s *Server) Messages(t testing.TB, stream string) []string {
	t.Helper()
	nc, js := s.connect(t)
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	n := int(info.State.Msgs)
	out := make([]string, 0, n)
	if n == 0 {
		return out
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	for len(out) < n {
		b, err := c.Fetch(min(n-len(out), 10000), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			t.Fatalf("natstest: fetch: %v", err)
		}
		got := 0
		for m := range b.Messages() {
			out = append(out, string(m.Data()))
			got++
		}
		if b.Error() != nil {
			t.Fatalf("natstest: fetch: %v", b.Error())
		}
		if got == 0 {
			t.Fatalf("natstest: %d of %d messages read, then none", len(out), n)
		}
	}
	return out
}
