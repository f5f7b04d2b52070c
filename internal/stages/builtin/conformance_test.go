package builtin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/etld/etld/internal/kafkatest"
	"github.com/etld/etld/internal/natstest"
	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/stagetest"
)

// The conformance fixtures: one per registered type, the only place a
// type's test config lives. TestConformance fails for a type without one.

// sourceFixtures make a fresh input and the config that reads it.
var sourceFixtures = map[string]func(t *testing.T, f stages.Factory) stagetest.SourceCase{
	"file": func(t *testing.T, f stages.Factory) stagetest.SourceCase {
		dir := t.TempDir()
		want := stagetest.Lines(3000) // three batches
		writeLines(t, filepath.Join(dir, "app.log"), want)
		return stagetest.SourceCase{
			Config: stagetest.Config(t, f, dir, "path: '*.log'\nfollow: true"),
			Want:   want,
		}
	},
	"journald": func(t *testing.T, f stages.Factory) stagetest.SourceCase {
		// A stand-in for journalctl that prints fixed entries, from the
		// one --cursor names when given, then follows (waits): real
		// journalctl prints an entry's fields in a different order on
		// every run. internal/stages/journald and e2e test real journals.
		dir := t.TempDir()
		want := make([]string, 2500)
		for i := range want {
			want[i] = fmt.Sprintf(`{"__CURSOR":"s=e71d;i=%x","MESSAGE":"entry %d","_SYSTEMD_UNIT":"etld-test.service"}`, i+1, i)
		}
		writeLines(t, filepath.Join(dir, "entries.jsonl"), want)
		script := `#!/bin/sh
cd "$(dirname "$0")"
cur=
for a; do case $a in --cursor=*) cur=${a#--cursor=};; esac; done
if [ -z "$cur" ]; then cat entries.jsonl; else grep -F -A 1000000 "\"__CURSOR\":\"$cur\"" entries.jsonl; fi
exec sleep 1000000
`
		if err := os.WriteFile(filepath.Join(dir, "journalctl"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		return stagetest.SourceCase{Config: stagetest.Config(t, f, dir, "journalctl_path: ./journalctl"), Want: want}
	},
	"generate": func(t *testing.T, f stages.Factory) stagetest.SourceCase {
		want := make([]string, 2500)
		for i := range want {
			want[i] = fmt.Sprintf(`{"seq":%d,"msg":"hello from etld"}`, i)
		}
		return stagetest.SourceCase{Config: stagetest.Config(t, f, t.TempDir(), "count: 2500"), Want: want}
	},
	"kafka": func(t *testing.T, f stages.Factory) stagetest.SourceCase {
		topic := kafkaCluster.CreateTopic(t, "conformance", 1)
		want := stagetest.Lines(3000)
		kafkaCluster.Produce(t, topic, want)
		return stagetest.SourceCase{
			Config: stagetest.Config(t, f, t.TempDir(), fmt.Sprintf("brokers: [%s]\ntopics: [%s]\ngroup: %s\nsession_timeout: %v",
				strings.Join(kafkaCluster.Brokers, ", "), topic, kafkatest.Name("conformance"), kafkaCluster.SessionTimeout())),
			Want: want,
		}
	},
	"syslog": func(t *testing.T, f stages.Factory) stagetest.SourceCase {
		want := stagetest.Lines(3000)
		dir := shortTempDir(t)
		return stagetest.SourceCase{
			Config:   stagetest.Config(t, f, dir, "mode: unix\npath: s.sock\nparse: false"),
			Settings: syslogSender(t, dir, strings.Join(want, "\n")+"\n"),
			Want:     want,
		}
	},
	"nats": func(t *testing.T, f stages.Factory) stagetest.SourceCase {
		srv := sharedNATS(t)
		stream := srv.Stream(t, "conf")
		want := stagetest.Lines(3000)
		srv.Publish(t, stream+".in", want)
		return stagetest.SourceCase{
			Config: stagetest.Config(t, f, t.TempDir(), "url: "+srv.URL+"\nstream: "+stream+"\ndurable: conf\nack_wait: 1s"),
			Want:   want,
		}
	},
	"stdin": func(t *testing.T, f stages.Factory) stagetest.SourceCase {
		want := stagetest.Lines(3000)
		return stagetest.SourceCase{
			Config:   stagetest.Config(t, f, t.TempDir(), ""),
			Settings: stages.Settings{Stdin: strings.NewReader(strings.Join(want, "\n") + "\n")},
			Want:     want,
		}
	},
}

// natsServer is started with the package, before the checks, whose leak
// check would take the server's goroutines for the stage's.
var natsServer, natsErr = natstest.Shared()

func sharedNATS(t *testing.T) *natstest.Server {
	if natsErr != nil {
		t.Fatalf("nats server: %v", natsErr)
	}
	return natsServer
}

// stepFixtures are each step type's value in a worker's steps, applied
// to stagetest.Lines.
var stepFixtures = map[string]string{
	"drop":            "[user, n]",
	"eval":            "{n2: 'n * 2', who: 'user + \"!\"'}",
	"filter":          `'level != "debug"'`,
	"keep":            "[ts, msg]",
	"parse_csv":       "{columns: [ts, level, msg, n]}",
	"parse_json":      "{}",
	"parse_logfmt":    "{}",
	"parse_regex":     `{pattern: '"level":"(?P<level>\w+)","msg":"(?P<msg>[^"]*)"'}`,
	"parse_syslog":    "{timezone: Europe/Berlin}",
	"parse_timestamp": "{field: ts, target: t2, to: unix}",
	"rename":          "{user: who, n: num}",
	"set":             "{pipeline: p1, n: 0}",
}

// stepInputs are the sample records of parsers of formats other than
// JSON lines (stagetest.StepOn); the others get stagetest.Lines.
var stepInputs = map[string]func(n int) []string{
	"parse_csv": func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf(`2024-01-01T00:00:%02dZ,info,"record %d, quoted",%d`, i%60, i, i)
		}
		return out
	},
	"parse_logfmt": func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf(`ts=2024-01-01T00:00:%02dZ level=info msg="record %d" n=%d`, i%60, i, i)
		}
		return out
	},
	"parse_syslog": func(n int) []string {
		out := make([]string, n)
		for i := range out {
			if i%2 == 0 {
				out[i] = fmt.Sprintf("<%d>Dec  4 06:%02d:%02d web%d app[%d]: record %d", i%192, i/60%60, i%60, i%3, i, i)
			} else {
				out[i] = fmt.Sprintf(`<%d>1 2026-12-04T06:00:%02d.%06dZ web%d app %d - [m@1 n="%d"] record %d`, i%192, i%60, i, i%3, i, i, i)
			}
		}
		return out
	},
}

// sinkFixtures make a fresh destination and the config that writes it.
var sinkFixtures = map[string]func(t *testing.T, f stages.Factory) stagetest.SinkCase{
	"file": func(t *testing.T, f stages.Factory) stagetest.SinkCase {
		dir := t.TempDir()
		path := filepath.Join(dir, "out.jsonl")
		return stagetest.SinkCase{
			Config: stagetest.Config(t, f, dir, "path: out.jsonl"),
			Output: func(t *testing.T) []string { return readLines(t, path) },
		}
	},
	"kafka": func(t *testing.T, f stages.Factory) stagetest.SinkCase {
		topic := kafkaCluster.CreateTopic(t, "conformance", 1)
		return stagetest.SinkCase{
			Config: stagetest.Config(t, f, t.TempDir(), fmt.Sprintf("brokers: [%s]\ntopic: %s", strings.Join(kafkaCluster.Brokers, ", "), topic)),
			Output: func(t *testing.T) []string { return kafkatest.Values(kafkaCluster.ReadAll(t, topic)) },
		}
	},
	"nats": func(t *testing.T, f stages.Factory) stagetest.SinkCase {
		// msg_id off: the suite's batches reuse origins and offsets, which
		// the ids would take for re-sends.
		srv := sharedNATS(t)
		stream := srv.Stream(t, "conf")
		return stagetest.SinkCase{
			Config: stagetest.Config(t, f, t.TempDir(), "url: "+srv.URL+"\nsubject: "+stream+".out\nmsg_id: false"),
			Output: func(t *testing.T) []string { return srv.Messages(t, stream) },
		}
	},
	"stdout": func(t *testing.T, f stages.Factory) stagetest.SinkCase {
		out := &failingBuffer{}
		return stagetest.SinkCase{
			Config:     stagetest.Config(t, f, t.TempDir(), ""),
			Settings:   stages.Settings{Stdout: out},
			Output:     func(*testing.T) []string { return out.lines() },
			FailWrites: out.fail,
		}
	},
}

// kafkaCluster serves the kafka fixtures. TestConformance starts it
// before the checks, whose goroutine-leak check would otherwise see it.
var kafkaCluster *kafkatest.Cluster

// TestConformance runs the stagetest suite on every built-in type.
func TestConformance(t *testing.T) {
	kafkaCluster = kafkatest.Start(t)
	// kfake's goroutines for a connection the client closed end when the
	// server notices; on a loaded machine that can outlast the check.
	stagetest.IgnoreLeaks = []goleak.Option{
		goleak.IgnoreTopFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).read"),
		goleak.IgnoreTopFunction("github.com/twmb/franz-go/pkg/kfake.(*clientConn).write"),
	}
	defer func() { stagetest.IgnoreLeaks = nil }()
	reg := Registry()
	conform(t, reg, stages.KindSource, sourceFixtures, "sourceFixtures", func(t *testing.T, f stages.Factory, fx func(*testing.T, stages.Factory) stagetest.SourceCase) {
		stagetest.Source(t, f, func(t *testing.T) stagetest.SourceCase { return fx(t, f) })
	})
	conform(t, reg, stages.KindStep, stepFixtures, "stepFixtures", func(t *testing.T, f stages.Factory, opts string) {
		cfg := stagetest.Config(t, f, t.TempDir(), opts)
		if lines, ok := stepInputs[f.Type]; ok {
			stagetest.StepOn(t, f, cfg, lines)
		} else {
			stagetest.Step(t, f, cfg)
		}
	})
	conform(t, reg, stages.KindSink, sinkFixtures, "sinkFixtures", func(t *testing.T, f stages.Factory, fx func(*testing.T, stages.Factory) stagetest.SinkCase) {
		stagetest.Sink(t, f, func(t *testing.T) stagetest.SinkCase { return fx(t, f) })
	})
}

// conform runs run on every registered type of kind k with its fixture,
// failing for a type that has none.
func conform[F any](t *testing.T, reg *stages.Registry, k stages.Kind, fixtures map[string]F, mapName string, run func(*testing.T, stages.Factory, F)) {
	for _, typ := range reg.Types(k) {
		t.Run(string(k)+"/"+typ, func(t *testing.T) {
			fx, ok := fixtures[typ]
			if !ok {
				t.Fatalf("%s type %q has no conformance fixture: add one to %s in internal/stages/builtin/conformance_test.go", k, typ, mapName)
			}
			f, _ := reg.Lookup(k, typ)
			run(t, f, fx)
		})
	}
}

// TestConformanceFixturesRegistered: a fixture for a type that is not
// registered (renamed, removed) is stale.
func TestConformanceFixturesRegistered(t *testing.T) {
	reg := Registry()
	kinds := map[stages.Kind][]string{}
	for typ := range sourceFixtures {
		kinds[stages.KindSource] = append(kinds[stages.KindSource], typ)
	}
	for typ := range stepFixtures {
		kinds[stages.KindStep] = append(kinds[stages.KindStep], typ)
	}
	for typ := range stepInputs {
		if _, ok := stepFixtures[typ]; !ok {
			t.Errorf("stepInputs has %q, which has no stepFixtures entry", typ)
		}
	}
	for typ := range sinkFixtures {
		kinds[stages.KindSink] = append(kinds[stages.KindSink], typ)
	}
	for k, types := range kinds {
		for _, typ := range types {
			if _, ok := reg.Lookup(k, typ); !ok {
				t.Errorf("conformance fixture for the unregistered %s type %q", k, typ)
			}
		}
	}
}

func writeLines(t *testing.T, path string, lines []string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return splitLines(data)
}

func splitLines(data []byte) []string {
	s := strings.TrimSuffix(string(data), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// failingBuffer is the stdout sink's stream in the suite: a buffer whose
// next writes can be made to fail, taking nothing.
type failingBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	fails int
}

var errInjected = errors.New("injected write failure")

func (b *failingBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fails > 0 {
		b.fails--
		return 0, errInjected
	}
	return b.buf.Write(p)
}

func (b *failingBuffer) fail(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fails = n
}

func (b *failingBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return splitLines(b.buf.Bytes())
}

// TestConformanceMultiline runs the source suite on the file and stdin
// sources with multiline on: records of two and three lines, so that
// batches and the state round trip cut the input between joined records
// (a restored source must neither split nor repeat one).
func TestConformanceMultiline(t *testing.T) {
	want := stagetest.Lines(3000)
	for i := range want {
		want[i] += "\n  at frame " + fmt.Sprint(i)
		if i%2 == 0 {
			want[i] += "\n  at caller"
		}
	}
	reg := Registry()
	file, _ := reg.Lookup(stages.KindSource, "file")
	t.Run("file", func(t *testing.T) {
		stagetest.Source(t, file, func(t *testing.T) stagetest.SourceCase {
			dir := t.TempDir()
			writeLines(t, filepath.Join(dir, "app.log"), want)
			return stagetest.SourceCase{
				Config: stagetest.Config(t, file, dir, "path: '*.log'\nfollow: false\nmultiline: {continue: '^\\s'}"),
				Want:   want,
			}
		})
	})
	stdin, _ := reg.Lookup(stages.KindSource, "stdin")
	t.Run("stdin", func(t *testing.T) {
		stagetest.Source(t, stdin, func(t *testing.T) stagetest.SourceCase {
			return stagetest.SourceCase{
				Config:   stagetest.Config(t, stdin, t.TempDir(), "multiline: {start: '^\\{'}"),
				Settings: stages.Settings{Stdin: strings.NewReader(strings.Join(want, "\n") + "\n")},
				Want:     want,
			}
		})
	})
}

// syslogSender returns the settings of a syslog source listening on a
// unix socket in dir and sending data to it when it logs that it listens:
// so the data arrives only when the source is open, and nothing is left
// running once it is sent.
func syslogSender(t *testing.T, dir, data string) stages.Settings {
	hook := zerolog.HookFunc(func(_ *zerolog.Event, _ zerolog.Level, msg string) {
		if msg != "syslog source listening" {
			return
		}
		c, err := net.Dial("unix", filepath.Join(dir, "s.sock"))
		if err != nil {
			t.Errorf("dial the syslog source: %v", err)
			return
		}
		defer c.Close()
		if _, err := c.Write([]byte(data)); err != nil {
			t.Errorf("send to the syslog source: %v", err)
		}
	})
	return stages.Settings{Logger: zerolog.New(io.Discard).Level(zerolog.InfoLevel).Hook(hook)}
}

// shortTempDir is a temporary directory with a short path: unix socket
// paths are limited to about 100 bytes.
func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "sl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}
