package config

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDirectory loads testdata/dir: orders.yaml and payments.yml are
// pipelines with the same ids; notes.txt and the hidden .swap.yaml (both
// invalid YAML) are not pipeline files.
func TestDirectory(t *testing.T) {
	dir := filepath.Join("testdata", "dir")
	pipes, ds := Load(dir, testOptions())
	if len(ds) != 0 {
		t.Fatalf("diagnostics: %v", diagLines(ds))
	}
	if len(pipes) != 2 {
		t.Fatalf("got %d pipelines, want 2", len(pipes))
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct{ name, file string }{
		{"orders", filepath.Join(dir, "orders.yaml")},
		{"payments", filepath.Join(dir, "payments.yml")},
	} {
		p := pipes[i]
		if p.Name != want.name || p.File != want.file || p.Dir != abs {
			t.Errorf("pipeline %d: Name %q, File %q, Dir %q; want %q, %q, %q", i, p.Name, p.File, p.Dir, want.name, want.file, abs)
		}
		equalLines(t, p.Name+" stages", stageIDs(p.Stages), []string{"in", "w", "out"})
		if got := p.Stage("in").Pos.File; got != want.file {
			t.Errorf("%s: stage Pos.File = %q", p.Name, got)
		}
	}
	if pipes[0].Stage("in").Type != "file" || pipes[1].Stage("in").Type != "generate" {
		t.Errorf("ids are per file: in = %s and %s", pipes[0].Stage("in").Type, pipes[1].Stage("in").Type)
	}
	if pipes[1].Stage("w").Worker.Concurrency != 2 {
		t.Errorf("payments.w concurrency = %d", pipes[1].Stage("w").Worker.Concurrency)
	}

	files, err := PipelineFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	equalLines(t, "PipelineFiles", files, []string{filepath.Join(dir, "orders.yaml"), filepath.Join(dir, "payments.yml")})
}

func TestDirectoryDiagnosticsNameTheFile(t *testing.T) {
	dir := filepath.Join("testdata", "dir_invalid")
	pipes, ds := Load(dir, testOptions())
	equalLines(t, "diagnostics", diagLines(ds), []string{
		filepath.Join(dir, "bad.yml") + `:3:21: sources.in: unknown option "folow" for stdin source (valid: type, max_line_bytes, multiline)`,
	})
	if pipes != nil {
		t.Errorf("Load returned pipelines although bad.yml is invalid")
	}
}

func TestDirectorySameSinkPath(t *testing.T) {
	dir := filepath.Join("testdata", "dir_samepath")
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	pipes, ds := Load(dir, testOptions())
	first, second := filepath.Join(dir, "first.yaml"), filepath.Join(dir, "second.yml")
	equalLines(t, "diagnostics", diagLines(ds), []string{
		second + `:7:5: sinks.out: writes ` + filepath.Join(abs, "out", "shared.jsonl") +
			`, which sink "out" of pipeline "first" (` + first + `:5:8) also writes (each output file has exactly one writer)`,
	})
	if pipes != nil || !ds.HasErrors() {
		t.Errorf("Load = %d pipelines, HasErrors %v", len(pipes), ds.HasErrors())
	}

	// Each file alone is fine.
	for _, f := range []string{first, second} {
		if pipes, ds := Load(f, testOptions()); len(pipes) != 1 || len(ds) != 0 {
			t.Errorf("Load(%s) = %d pipelines, %v", f, len(pipes), diagLines(ds))
		}
	}
}

func TestDirectoryEdgeCases(t *testing.T) {
	const valid = "version: 1\nsources:\n  in: {type: stdin}\nsinks:\n  out: {type: stdout, inputs: [in]}\n"

	t.Run("empty directory", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "README.md"), "# not a pipeline\n")
		pipes, ds := Load(dir, testOptions())
		equalLines(t, "diagnostics", diagLines(ds), []string{dir + ": warning: no pipeline files (*.yaml, *.yml) in this directory"})
		if len(pipes) != 0 || ds.HasErrors() {
			t.Errorf("Load = %d pipelines, HasErrors %v", len(pipes), ds.HasErrors())
		}
	})

	t.Run("one name, two extensions", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "a.yaml"), valid)
		writeFile(t, filepath.Join(dir, "a.yml"), valid)
		pipes, ds := Load(dir, testOptions())
		equalLines(t, "diagnostics", diagLines(ds), []string{
			filepath.Join(dir, "a.yml") + `: pipeline name "a" is also used by ` + filepath.Join(dir, "a.yaml") + " (names come from file names without extension)",
		})
		if pipes != nil {
			t.Errorf("Load returned pipelines")
		}
	})

	t.Run("errors in several files, sorted by file", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "b.yaml"), "version: 2\n"+valid[len("version: 1\n"):])
		writeFile(t, filepath.Join(dir, "a.yml"), "")
		writeFile(t, filepath.Join(dir, "c.yaml"), valid+"extra: 1\n")
		_, ds := Load(dir, testOptions())
		equalLines(t, "diagnostics", diagLines(ds), []string{
			filepath.Join(dir, "a.yml") + ":1:1: empty pipeline file (want at least version, sources and sinks)",
			filepath.Join(dir, "b.yaml") + ":1:10: version: unsupported schema version 2 (this etld reads version: 1)",
			filepath.Join(dir, "c.yaml") + `:6:1: unknown top-level key "extra" (valid: version, sources, workers, sinks, dead_letter, checkpoint_interval)`,
		})
	})

	t.Run("a directory named like a pipeline file is skipped", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "p.yaml"), valid)
		if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
			t.Fatal(err)
		}
		pipes, ds := Load(dir, testOptions())
		if len(pipes) != 1 || len(ds) != 0 {
			t.Errorf("Load = %d pipelines, %v", len(pipes), diagLines(ds))
		}
	})
}

func TestPipelineNames(t *testing.T) {
	for file, want := range map[string]string{
		"/etc/etld/pipelines/orders.yaml": "orders",
		"payments.yml":                    "payments",
		"dir/my.pipeline.yaml":            "my.pipeline",
	} {
		if got := PipelineName(file); got != want {
			t.Errorf("PipelineName(%q) = %q, want %q", file, got, want)
		}
	}
	for name, want := range map[string]bool{
		"a.yaml": true, "a.yml": true, "a.YAML": false, "a.json": false, "yaml": false, "a.yaml~": false,
		"a.test.yaml": false, "a.test.yml": false, "test.yaml": true, "a.tests.yaml": true,
	} {
		if got := IsPipelineFile(name); got != want {
			t.Errorf("IsPipelineFile(%q) = %v, want %v", name, got, want)
		}
	}
}
