package journald

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/journald/journaltest"
	"github.com/etld/etld/internal/stages/stagetest"
)

func TestMain(m *testing.M) {
	// Keep the restart tests quick.
	backoffMin, backoffMax, healthyAfter = 20*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
	goleak.VerifyTestMain(m)
}

// testTimeout bounds how long a test waits for what it expects: a hang
// guard, not a performance assertion.
const testTimeout = 30 * time.Second

func testSettings(t testing.TB) stages.Settings {
	return stages.Settings{Pipeline: "test", ID: "journal", Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}
}

// journal is a journal directory with one file the test appends to.
type journal struct {
	t      testing.TB
	remote string
	dir    string
}

func newJournal(t testing.TB) *journal {
	t.Helper()
	return &journal{t: t, remote: journaltest.Remote(t), dir: t.TempDir()}
}

func (j *journal) add(boot string, from, n int) {
	j.t.Helper()
	journaltest.Append(j.t, j.remote, filepath.Join(j.dir, "test.journal"), boot, from, n)
}

// config returns a validated config reading j.
func (j *journal) config(edit func(*Config)) *Config {
	j.t.Helper()
	c := NewConfig()
	c.Directory = j.dir
	if edit != nil {
		edit(c)
	}
	if err := c.Validate(); err != nil {
		j.t.Fatalf("Validate: %v", err)
	}
	return c
}

// open builds and opens a source (restored from st when st is not nil);
// Close runs at cleanup.
func open(t testing.TB, c *Config, st []byte) *source {
	t.Helper()
	src := newSource(testSettings(t), c)
	if st != nil {
		if err := src.Restore(st); err != nil {
			t.Fatalf("Restore: %v", err)
		}
	}
	if err := src.Open(context.Background()); err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := src.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return src
}

// got is what a test read.
type got struct {
	keys    []string
	raws    []string
	rejects []stages.Reject
}

func (g *got) add(t testing.TB, b *stages.Batch) {
	t.Helper()
	for _, r := range b.Records {
		if !r.Parsed || string(r.Line) != string(r.Raw) {
			t.Fatalf("record not parsed as is: Parsed %v, Raw %s, Line %s", r.Parsed, r.Raw, r.Line)
		}
		e, err := journaltest.Parse(r.Raw)
		if err != nil {
			t.Fatalf("record %s: %v", r.Raw, err)
		}
		g.keys = append(g.keys, journaltest.Key(e))
		g.raws = append(g.raws, string(r.Raw))
	}
	for _, r := range b.Rejects {
		r.Record.Raw = append([]byte(nil), r.Record.Raw...)
		g.rejects = append(g.rejects, r)
	}
	b.Release()
}

// readN reads until n records came, failing after testTimeout.
func readN(t testing.TB, src stages.Source, g *got, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for len(g.keys) < n {
		b, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("Read: %v (read %d of %d records: %v)", err, len(g.keys), n, tailKeys(g.keys))
		}
		g.add(t, b)
	}
}

// readToEnd reads a finite source until ErrEndOfInput.
func readToEnd(t testing.TB, src stages.Source) *got {
	t.Helper()
	g := &got{}
	stagetest.ReadToEnd(t, src, testTimeout, func(b *stages.Batch) { g.add(t, b) })
	return g
}

func tailKeys(k []string) []string { return k[max(0, len(k)-5):] }

// eventually polls cond until it holds, failing after testTimeout.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
