package sources

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/stagetest"
)

func TestMain(m *testing.M) {
	pollInterval = 20 * time.Millisecond // keep follow tests quick
	goleak.VerifyTestMain(m)
}

// testTimeout bounds how long a test waits for the data it expects before
// failing; it is a hang guard, not a performance assertion.
const testTimeout = 20 * time.Second

func testSettings(t testing.TB) stages.Settings {
	return stages.Settings{Pipeline: "test", ID: "src", Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)}
}

// got is what a test read: lines and rejects, in order.
type got struct {
	lines   []string
	offsets []int64
	paths   []string
	rejects []stages.Reject
}

func (g *got) add(b *stages.Batch) {
	for _, r := range b.Records {
		g.lines = append(g.lines, string(r.Raw))
		g.offsets = append(g.offsets, r.Offset)
		g.paths = append(g.paths, r.Origin.Path)
	}
	g.rejects = append(g.rejects, b.Rejects...)
}

// readToEnd reads a finite source until ErrEndOfInput.
func readToEnd(t testing.TB, src stages.Source) *got {
	t.Helper()
	g := &got{}
	stagetest.ReadToEnd(t, src, testTimeout, func(b *stages.Batch) {
		if b == nil || (len(b.Records) == 0 && len(b.Rejects) == 0) {
			t.Fatalf("Read returned an empty batch")
		}
		g.add(b)
	})
	return g
}

// readUntil reads a following source until done(g) holds, failing after
// testTimeout.
func readUntil(t testing.TB, src stages.Source, g *got, done func(*got) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for !done(g) {
		b, err := src.Read(ctx)
		if err != nil {
			t.Fatalf("Read: %v (read %d lines so far)", err, len(g.lines))
		}
		g.add(b)
	}
}

// expectQuiet checks that a following source has nothing more for a few
// poll intervals.
func expectQuiet(t testing.TB, src stages.Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*pollInterval)
	defer cancel()
	b, err := src.Read(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		var lines []string
		if b != nil {
			for _, r := range b.Records {
				lines = append(lines, string(r.Raw))
			}
		}
		t.Fatalf("Read = %q, %v; want nothing more", lines, err)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t testing.TB, path, content string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
}

// newFile builds, validates and opens a file source; Close runs at cleanup.
func newFile(t testing.TB, cfg *FileConfig) *FileSource {
	t.Helper()
	return openFile(t, cfg, nil)
}

// openFile is newFile, with setup (if set) run on the source before Open.
func openFile(t testing.TB, cfg *FileConfig, setup func(*FileSource)) *FileSource {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	src := NewFileSource(testSettings(t), cfg)
	if setup != nil {
		setup(src)
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

// fieldsOf lists the Field of every FieldError in a (joined) error.
func fieldsOf(err error) []string {
	var out []string
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var fe *stages.FieldError
		if errors.As(e, &fe) {
			out = append(out, fe.Field)
		} else {
			out = append(out, "?"+e.Error())
		}
	}
	walk(err)
	return out
}

func TestRegistered(t *testing.T) {
	want := map[string]bool{"file": false, "stdin": false, "generate": false}
	for _, f := range All() {
		if _, ok := want[f.Type]; ok {
			want[f.Type] = true
		}
		r := stages.NewRegistry()
		if err := r.Add(f); err != nil {
			t.Errorf("factory %q: %v", f.Type, err)
		}
		cfg := f.NewConfig()
		if v, ok := cfg.(stages.Validator); ok {
			err := v.Validate()
			if f.Type == "file" {
				if got := fieldsOf(err); strings.Join(got, ",") != "path" {
					t.Errorf("file default config: fields %v, want [path]", got)
				}
			} else if err != nil {
				t.Errorf("%s default config: %v", f.Type, err)
			}
		}
	}
	for typ, ok := range want {
		if !ok {
			t.Errorf("type %q not registered", typ)
		}
	}
}

func TestFilepathJoinForGlobs(t *testing.T) {
	c := NewFileConfig()
	c.Path = "data/orders-*.jsonl"
	c.ResolvePaths("/etc/etld")
	if c.Path != filepath.FromSlash("/etc/etld/data/orders-*.jsonl") {
		t.Errorf("ResolvePaths: %q", c.Path)
	}
	c.Path = "/abs/x.log"
	c.ResolvePaths("/etc/etld")
	if c.Path != "/abs/x.log" {
		t.Errorf("ResolvePaths changed an absolute path: %q", c.Path)
	}
}
