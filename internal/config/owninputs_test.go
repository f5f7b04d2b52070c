package config

import (
	"os"
	"path/filepath"
	"testing"
)

// TestOwnInputsWarning: a file source whose glob can match a sink's
// output, a rotated segment of it or a dead-letter file, in its own
// pipeline or another one of the directory, gets a warning naming both
// stages; exclude silences it.
func TestOwnInputsWarning(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", `version: 1
dead_letter: bad
sources:
  logs:
    type: file
    path: logs/*/*.log
  quiet:
    type: file
    path: logs/etld/*.log
    exclude: [logs/etld/*]
sinks:
  out:
    type: file
    inputs: [logs, quiet]
    path: logs/etld/a.log
  bad:
    type: file
    path: logs/etld/bad.log
`)
	write("b.yaml", `version: 1
sources:
  segs:
    type: file
    path: logs/b/b.log.*
    follow: false
  gen:
    type: generate
    count: 1
sinks:
  b:
    type: file
    inputs: [gen, segs]
    path: logs/b/b.log
    rotate: {max_size: 1MiB, gzip: true}
  screen:
    type: stdout
    inputs: [gen]
`)
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	logs := filepath.Join(dir, "logs")
	pipes, ds := Load(dir, testOptions())
	if len(pipes) != 2 {
		t.Fatalf("got %d pipelines, want 2 (warnings are no errors): %v", len(pipes), diagLines(ds))
	}
	equalLines(t, "diagnostics", diagLines(ds), []string{
		a + `:5:5: warning: sources.logs: can read ` + logs + `/etld/a.log, which sink a/out writes (` + a + `:13:5); etld never reads its own outputs and skips such files: add them to exclude or narrow path`,
		a + `:5:5: warning: sources.logs: can read ` + logs + `/etld/bad.log, which dead-letter sink a/bad writes (` + a + `:17:5); etld never reads its own outputs and skips such files: add them to exclude or narrow path`,
		a + `:5:5: warning: sources.logs: can read ` + logs + `/b/b.log, which sink b/b writes (` + b + `:12:5); etld never reads its own outputs and skips such files: add them to exclude or narrow path`,
		b + `:4:5: warning: sources.segs: can read ` + logs + `/b/b.log.000001, which sink b/b writes (` + b + `:12:5); etld never reads its own outputs and skips such files: add them to exclude or narrow path`,
	})
}
