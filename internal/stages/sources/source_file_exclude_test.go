package sources

import (
	"bytes"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/stages"
)

func TestFileExcludeValidate(t *testing.T) {
	tests := []struct {
		name    string
		exclude []string
		fields  []string
	}{
		{"none", nil, nil},
		{"globs", []string{"/x/*.gz", "old/*", "/x/[ab].log"}, nil},
		{"bad glob", []string{"/x/*.gz", "/x/[a.log"}, []string{"exclude[1]"}},
		{"every bad one", []string{"[", "", "ok", `/x/\`}, []string{"exclude[0]", "exclude[1]", "exclude[3]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewFileConfig()
			c.Path, c.Exclude = "/x/*.log", tt.exclude
			if got := fieldsOf(c.Validate()); !reflect.DeepEqual(got, tt.fields) {
				t.Errorf("fields = %q, want %q", got, tt.fields)
			}
		})
	}
}

func TestFileExcludeResolveAndMatch(t *testing.T) {
	c := NewFileConfig()
	c.Path, c.Exclude = "logs/*.log", []string{"logs/debug-*", "/abs/*.log"}
	c.ResolvePaths("/etc/etld")
	if want := []string{"/etc/etld/logs/debug-*", "/abs/*.log"}; !reflect.DeepEqual(c.Exclude, want) {
		t.Fatalf("Exclude = %q, want %q (relative to the pipeline file like path)", c.Exclude, want)
	}
	for path, want := range map[string]bool{
		"/etc/etld/logs/app.log":       true,
		"/etc/etld/logs/debug-app.log": false, // excluded
		"/etc/etld/logs/app.txt":       false, // not matched
		"/etc/etld/logs/sub/app.log":   false, // * does not cross /
	} {
		if got := c.MatchesInput(path); got != want {
			t.Errorf("MatchesInput(%q) = %v, want %v", path, got, want)
		}
	}
}

// openOwnFile opens a file source whose settings carry own and log to
// logs (a source logs from the goroutine that calls Open and Read only).
func openOwnFile(t *testing.T, cfg *FileConfig, own *stages.OwnOutputs, logs *bytes.Buffer) *FileSource {
	t.Helper()
	return openFile(t, cfg, func(s *FileSource) {
		s.settings.Own = own
		s.log = zerolog.New(logs)
	})
}

const ownSkipMsg = "skipping a file etld writes itself"

func TestFileReadOnceSkipsExcludedAndOwnFiles(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"a.log":             "a1\n",
		"b.log":             "b1\n",
		"debug.log":         "excluded\n",
		"out.log":           "own output\n",
		"out.log.000001":    "own sealed segment\n",
		"out.log.000002.gz": "own compressed segment\n",
		"out.log.bak":       "bak1\n", // not a segment name: read
	} {
		writeFile(t, filepath.Join(dir, name), content)
	}
	own := &stages.OwnOutputs{}
	own.Set([]stages.OwnOutput{{Path: filepath.Join(dir, "out.log"), Pipeline: "p", Stage: "out"}})
	cfg := NewFileConfig()
	cfg.Path, cfg.Follow, cfg.Exclude = "*", false, []string{"debug.*"}
	cfg.ResolvePaths(dir)
	var logs bytes.Buffer
	g := readToEnd(t, openOwnFile(t, cfg, own, &logs))
	if want := []string{"a1", "b1", "bak1"}; !reflect.DeepEqual(g.lines, want) {
		t.Errorf("lines = %q, want %q", g.lines, want)
	}
	if n := strings.Count(logs.String(), ownSkipMsg); n != 3 {
		t.Errorf("%d skip lines, want 3 (one per own file):\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), `"sink":"p/out"`); n != 3 {
		t.Errorf("skip lines name the sink %d times, want 3:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "debug.log") {
		t.Errorf("an excluded file is skipped silently:\n%s", logs.String())
	}
}

// TestFollowSkipsOwnOutputs: a followed glob that matches a sink's output
// never reads it, however often it grows and the glob is matched again;
// the skip is logged once per file. Own outputs that appear after Open
// (a reload added a sink) are skipped as well.
func TestFollowSkipsOwnOutputs(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.log"), filepath.Join(dir, "out.log")
	writeFile(t, in, "in1\n")
	writeFile(t, out, "out1\n")
	own := &stages.OwnOutputs{}
	own.Set([]stages.OwnOutput{{Path: out, Pipeline: "p", Stage: "out"}})
	var logs bytes.Buffer
	src := openOwnFile(t, followConfig(filepath.Join(dir, "*.log*")), own, &logs)
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 1 })

	// The sink writes and rotates while input arrives; new files make the
	// source match the glob again every time.
	later := filepath.Join(dir, "later.log")
	own.Set([]stages.OwnOutput{{Path: out, Pipeline: "p", Stage: "out"}, {Path: later, Pipeline: "q", Stage: "late"}})
	for i := 2; i <= 5; i++ {
		appendFile(t, out, "out\n")
		writeFile(t, fmt.Sprintf("%s.%06d", out, i), "sealed\n")
		writeFile(t, filepath.Join(dir, fmt.Sprintf("new%d.log", i)), "new\n")
		appendFile(t, later, "late\n")
		appendFile(t, in, "in\n")
		readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 2*i-1 })
	}
	expectQuiet(t, src)
	for _, l := range g.lines {
		if l != "in1" && l != "in" && l != "new" {
			t.Fatalf("read %q from an own output; lines %q", l, g.lines)
		}
	}
	for _, f := range []string{out, later, out + ".000002", out + ".000005"} {
		if n := strings.Count(logs.String(), `"file":"`+f+`"`); n != 1 {
			t.Errorf("%s: logged %d times, want once:\n%s", f, n, logs.String())
		}
	}
	if n := strings.Count(logs.String(), ownSkipMsg); n != 6 {
		t.Errorf("%d skip lines, want 6 (out.log, later.log, 4 segments):\n%s", n, logs.String())
	}
}
