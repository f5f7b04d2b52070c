//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etld/etld/internal/natstest"
)

// NATS JetStream end to end: etld processes against a server started by
// the test (in this process, on 127.0.0.1), or the one named by
// $ETLD_TEST_NATS_URL.

// natsPublishFeed publishes records from..from+n-1 of feed to subject and
// returns their keys.
func natsPublishFeed(t *testing.T, srv *natstest.Server, subject, name string, from, n int) []string {
	t.Helper()
	data, keys := feed(name, from, n)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	srv.Publish(t, subject, lines)
	return keys
}

// natsStreamKeys returns the keys of the records a stream holds.
func natsStreamKeys(t *testing.T, srv *natstest.Server, stream string) []string {
	t.Helper()
	msgs := srv.Messages(t, stream)
	keys := make([]string, 0, len(msgs))
	for _, m := range msgs {
		k, ok := keyOf([]byte(m))
		if !ok {
			t.Fatalf("stream %s holds a message without a key: %.200q", stream, m)
		}
		keys = append(keys, k)
	}
	return keys
}

// natsFileKeys returns the keys of the lines of files (missing: none).
func natsFileKeys(t *testing.T, paths ...string) []string {
	t.Helper()
	var keys []string
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, keysOf(t, p, splitLines(t, p, data))...)
	}
	return keys
}

// countLines counts the lines of a file (0 when missing).
func countLines(path string) int {
	data, _ := os.ReadFile(path)
	return bytes.Count(data, []byte{'\n'})
}

// TestNATSSharedDurableKill: three instances share one durable; one of
// them is killed with -9 twice (and restarted with its state) while the
// stream grows. Every record ends up in one of the instances' files
// (lost = 0); a record in two files can only come from a crash between a
// checkpoint and its acks, so duplicates stay below what a crash can
// leave committed and unacked (max_ack_pending per crash).
func TestNATSSharedDurableKill(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "e2eshared")
	dir := t.TempDir()
	const maxAckPending = 4000
	cfg := func(i int) string {
		return writeConfig(t, dir, fmt.Sprintf("central%d.yaml", i), fmt.Sprintf(`version: 1
checkpoint_interval: 100ms
sources:
  bus:
    type: nats
    url: %s
    stream: %s
    durable: central
    ack_wait: 2s
    max_ack_pending: %d
    pull_batch: 500
sinks:
  out:
    type: file
    inputs: [bus]
    path: out/central%d.jsonl
`, srv.URL, stream, maxAckPending, i))
	}
	outs := make([]string, 3)
	procs := make([]*proc, 3)
	args := make([][]string, 3)
	for i := range procs {
		outs[i] = filepath.Join(dir, "out", fmt.Sprintf("central%d.jsonl", i))
		args[i] = runArgs(cfg(i), filepath.Join(dir, fmt.Sprintf("state%d", i)))
	}
	const chunk = 20000
	for i := range procs {
		procs[i] = startEtld(t, dir, nil, args[i]...)
		procs[i].eventually("the pipeline has started", func() bool { return procs[i].logged("pipeline started") })
	}
	// Each round publishes pieces while all three instances pull and
	// kills instance 0 as soon as it has written some of them: mid-stream,
	// with records still coming. Its line count is taken after the
	// restart's rollback to the checkpoint ("pipeline started" comes after
	// it): counted before the rollback, instance 0 might never get back
	// above a count its file no longer holds.
	const piece, maxPieces = 1000, 40
	var want []string
	next := 0 // sequence number of the next record published
	publish := func(n int) {
		want = append(want, natsPublishFeed(t, srv, stream+".in", "shared", next, n)...)
		next += n
	}
	for round := 1; round <= 2; round++ {
		before, first := countLines(outs[0]), next
		for i := 0; countLines(outs[0]) <= before; i++ {
			if i == maxPieces {
				t.Fatalf("round %d: instance 0 wrote nothing while %d records were published", round, next-first)
			}
			publish(piece)
		}
		procs[0].kill()
		t.Logf("round %d: instance 0 killed with -9 after %d lines, %d records into the round", round, countLines(outs[0]), next-first)
		publish(chunk / 2) // taken by the others while instance 0 is down
		procs[0] = startEtld(t, dir, nil, args[0]...)
		procs[0].eventually("instance 0 has restarted", func() bool { return procs[0].logged("pipeline started") })
	}
	publish(chunk)
	eventually(t, waitTimeout, func() bool {
		got := map[string]bool{}
		// The files are being written (and instance 0 was just
		// restarted, before rolling back a line cut by the kill): count
		// the complete lines only; the final check below is strict.
		for _, o := range outs {
			data, _ := os.ReadFile(o)
			for line := range bytes.Lines(data) {
				if k, ok := keyOf(bytes.TrimSuffix(line, []byte{'\n'})); ok && bytes.HasSuffix(line, []byte{'\n'}) {
					got[k] = true
				}
			}
		}
		return len(got) >= len(want)
	}, "every record written by one of the instances")
	for _, p := range procs {
		p.expectExit(p.stop(), 0, "a graceful stop")
	}
	got := natsFileKeys(t, outs...)
	seen := map[string]int{}
	for _, k := range got {
		seen[k]++
	}
	lost, dup := 0, 0
	for _, k := range want {
		if seen[k] == 0 {
			lost++
		}
	}
	for _, n := range seen {
		dup += n - 1
	}
	for i, o := range outs {
		t.Logf("instance %d wrote %d lines", i, countLines(o))
	}
	t.Logf("%d records, %d lines: lost %d, duplicated %d (bound %d: max_ack_pending per crash)", len(want), len(got), lost, dup, 2*maxAckPending)
	if lost != 0 {
		t.Errorf("%d records lost", lost)
	}
	if len(seen) != len(want) {
		t.Errorf("%d distinct records written, %d published", len(seen), len(want))
	}
	if dup > 2*maxAckPending {
		t.Errorf("%d duplicates: more than a crash between a checkpoint and its acks can leave (%d)", dup, 2*maxAckPending)
	}
}

// TestNATSSingleDurableKillExact: one instance per durable is exactly
// once across kill -9: committed-but-unacked messages that come back are
// recognised from the checkpoint and skipped.
func TestNATSSingleDurableKillExact(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "e2esingle")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "central.yaml", fmt.Sprintf(`version: 1
checkpoint_interval: 100ms
sources:
  bus: { type: nats, url: %s, stream: %s, durable: one, ack_wait: 2s, pull_batch: 500 }
sinks:
  out: { type: file, inputs: [bus], path: out/central.jsonl }
`, srv.URL, stream))
	out := filepath.Join(dir, "out", "central.jsonl")
	args := runArgs(cfg, filepath.Join(dir, "state"))
	const chunk = 20000
	want := natsPublishFeed(t, srv, stream+".in", "single", 0, chunk)
	p := startEtld(t, dir, nil, args...)
	for round := 1; round <= 2; round++ {
		before := countLines(out)
		p.eventually("etld writes records", func() bool { return countLines(out) > before })
		p.kill()
		t.Logf("round %d: killed with -9 after %d lines", round, countLines(out))
		want = append(want, natsPublishFeed(t, srv, stream+".in", "single", round*chunk, chunk)...)
		p = startEtld(t, dir, nil, args...)
		// Count lines only after the rollback to the checkpoint.
		p.eventually("etld has restarted", func() bool { return p.logged("pipeline started") })
	}
	p.eventually("every record written", func() bool { return countLines(out) >= len(want) })
	p.expectExit(p.stop(), 0, "a graceful stop")
	checkExactlyOnce(t, "one instance per durable after two kill -9", want, outputKeys(t, out))
}

// TestNATSSinkKill: file -> nats sink, killed with -9 twice while it
// publishes: the re-sent records are dropped by the stream's duplicate
// window, so the stream holds every line once.
func TestNATSSinkKill(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "e2esink")
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "edge.yaml", fmt.Sprintf(`version: 1
checkpoint_interval: 100ms
sources:
  app: { type: file, path: in/app.jsonl }
sinks:
  bus: { type: nats, inputs: [app], url: %s, subject: %s.edge }
`, srv.URL, stream))
	in := filepath.Join(dir, "in", "app.jsonl")
	args := runArgs(cfg, filepath.Join(dir, "state"))
	const chunk = 30000
	data, want := feed("edge", 0, chunk)
	writeFile(t, dir, filepath.Join("in", "app.jsonl"), data)
	p := startEtld(t, dir, nil, args...)
	streamCount := func() int { return len(srv.Messages(t, stream)) }
	for round := 1; round <= 2; round++ {
		before := streamCount()
		p.eventually("etld publishes records", func() bool { return streamCount() > before+chunk/10 })
		p.kill()
		t.Logf("round %d: killed with -9 with %d messages in the stream", round, streamCount())
		more, keys := feed("edge", round*chunk, chunk)
		appendFile(t, in, more)
		want = append(want, keys...)
		p = startEtld(t, dir, nil, args...)
	}
	p.eventually("every line in the stream", func() bool { return streamCount() >= len(want) })
	p.expectExit(p.stop(), 0, "a graceful stop")
	checkExactlyOnce(t, "the stream after two kill -9 of the publisher", want, natsStreamKeys(t, srv, stream))
}

// TestNATSBrokerDown: the server is down when etld starts and again
// while it runs. etld keeps retrying, /readyz says not ready, nothing is
// lost, and it recovers by itself: file -> nats -> file through two
// pipelines of one daemon.
func TestNATSBrokerDown(t *testing.T) {
	srv := natstest.Start(t)
	if srv.External() {
		t.Skipf("%s is set: this test stops and restarts the server", natstest.EnvURL)
	}
	stream := srv.Stream(t, "e2edown")
	dir := t.TempDir()
	writeConfig(t, filepath.Join(dir, "conf"), "edge.yaml", fmt.Sprintf(`version: 1
checkpoint_interval: 100ms
sources:
  app: { type: file, path: ../in/app.jsonl }
sinks:
  bus: { type: nats, inputs: [app], url: %s, subject: %s.edge, timeout: 1s }
`, srv.URL, stream))
	writeConfig(t, filepath.Join(dir, "conf"), "central.yaml", fmt.Sprintf(`version: 1
checkpoint_interval: 100ms
sources:
  bus: { type: nats, url: %s, stream: %s, durable: central, ack_wait: 2s, timeout: 1s }
sinks:
  out: { type: file, inputs: [bus], path: ../out/central.jsonl }
`, srv.URL, stream))
	in := filepath.Join(dir, "in", "app.jsonl")
	out := filepath.Join(dir, "out", "central.jsonl")
	data, want := feed("down", 0, 5000)
	writeFile(t, dir, filepath.Join("in", "app.jsonl"), data)

	srv.Shutdown()
	p := startEtld(t, dir, nil, runArgs(filepath.Join(dir, "conf"), filepath.Join(dir, "state"), "--admin", "127.0.0.1:0")...)
	addr := crashAdminAddr(t, p)
	notReady := func() bool {
		code, body := crashGet(addr, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "nats")
	}
	p.eventually("/readyz answers 503 naming the nats stages while the server is down at start", notReady)
	srv.Restart(t)
	p.eventually("every record through the broker once it is up", func() bool { return countLines(out) >= len(want) })
	p.eventually("/readyz answers 200 after the server came up", func() bool {
		code, _ := crashGet(addr, "/readyz")
		return code == http.StatusOK
	})

	srv.Shutdown()
	p.eventually("/readyz answers 503 while the server is down mid-run", notReady)
	more, keys := feed("down", len(want), 5000)
	appendFile(t, in, more)
	want = append(want, keys...)
	srv.Restart(t)
	p.eventually("every record through the broker after it came back", func() bool { return countLines(out) >= len(want) })
	p.eventually("/readyz answers 200 again", func() bool {
		code, _ := crashGet(addr, "/readyz")
		return code == http.StatusOK
	})
	p.expectExit(p.stop(), 0, "a graceful stop")
	checkExactlyOnce(t, "records through a broker that went down twice", want, outputKeys(t, out))
	checkExactlyOnce(t, "the stream", want, natsStreamKeys(t, srv, stream))
}

// TestNATSMisconfiguredAtStart: a stream that does not exist is a start
// error naming the stage, with exit 2 as for an invalid config.
func TestNATSMisconfiguredAtStart(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "central.yaml", fmt.Sprintf(`version: 1
sources:
  bus: { type: nats, url: %s, stream: NOSUCH, durable: d }
sinks:
  out: { type: file, inputs: [bus], path: out/central.jsonl }
`, srv.URL))
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	p.expectExit(p.wait(), 2, "a missing stream at start")
	if s := p.stderr.String(); !strings.Contains(s, `nats source \"bus\"`) || !strings.Contains(s, `stream \"NOSUCH\" not found`) {
		t.Errorf("the error does not name the stage and the stream:\n%s", tail(s, 2048))
	}
}

// TestNATSMisconfiguredReload: a reload to a stream that does not exist
// fails with the stage named, and the running pipeline goes on.
func TestNATSMisconfiguredReload(t *testing.T) {
	srv := natstest.Start(t)
	stream := srv.Stream(t, "e2ereload")
	dir := t.TempDir()
	text := `version: 1
checkpoint_interval: 100ms
sources:
  bus: { type: nats, url: %s, stream: %s, durable: d }
sinks:
  out: { type: file, inputs: [bus], path: out/central.jsonl }
`
	cfg := writeConfig(t, dir, "central.yaml", fmt.Sprintf(text, srv.URL, stream))
	out := filepath.Join(dir, "out", "central.jsonl")
	p := startEtld(t, dir, nil, runArgs(cfg, filepath.Join(dir, "state"))...)
	want := natsPublishFeed(t, srv, stream+".in", "reload", 0, 1000)
	p.eventually("the first records written", func() bool { return countLines(out) >= len(want) })
	writeConfig(t, dir, "central.yaml", fmt.Sprintf(text, srv.URL, "NOSUCH"))
	p.eventually(`a failed reload naming the stage and the stream`, func() bool {
		s := p.stderr.String()
		return strings.Contains(s, `"message":"config reloaded"`) && strings.Contains(s, `stream \"NOSUCH\" not found`)
	})
	want = append(want, natsPublishFeed(t, srv, stream+".in", "reload", 1000, 1000)...)
	p.eventually("the old pipeline goes on", func() bool { return countLines(out) >= len(want) })
	p.expectExit(p.stop(), 0, "a graceful stop")
	checkExactlyOnce(t, "records across a failed reload", want, outputKeys(t, out))
}
