package pipetest

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/etld/etld/internal/config"
)

// Find returns the test files of paths: a file as is, a directory's
// *.test.yaml and *.test.yml files, sorted.
func Find(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			out = append(out, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") && config.IsTestFile(e.Name()) {
				out = append(out, filepath.Join(p, e.Name()))
			}
		}
	}
	return out, nil
}

// NextTo returns the test files that go with a config path: those in a
// directory, or a pipeline file's own (orders.yaml: orders.test.yaml or
// orders.test.yml).
func NextTo(configPath string) ([]string, error) {
	fi, err := os.Stat(configPath)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return Find([]string{configPath})
	}
	base := strings.TrimSuffix(configPath, filepath.Ext(configPath))
	var out []string
	for _, ext := range []string{".test.yaml", ".test.yml"} {
		if _, err := os.Stat(base + ext); err == nil {
			out = append(out, base+ext)
		}
	}
	return out, nil
}

// Report writes one result as `etld test` prints it: "ok" or "FAIL",
// the test's position and name, then for a failure the reason and a
// line diff of every sink that did not match ("-" expected, missing;
// "+" written, not expected).
func Report(w io.Writer, r Result) {
	status := "ok  "
	if !r.Passed() {
		status = "FAIL"
	}
	fmt.Fprintf(w, "%s %s:%d: %s\n", status, r.File.Path, r.Test.Pos.Line, r.Test.Name)
	if r.Err != nil {
		fmt.Fprintf(w, "    pipeline %s: %s\n", r.File.Pipeline, strings.ReplaceAll(r.Err.Error(), "\n", "\n    "))
	}
	for _, s := range r.Sinks {
		if s.OK {
			continue
		}
		var missing, extra int
		for _, d := range s.Diff {
			switch d.Op {
			case Want:
				missing++
			case Got:
				extra++
			}
		}
		fmt.Fprintf(w, "    sink %s: %s missing, %s not expected (-want +got):\n", s.ID, lineCount(missing), lineCount(extra))
		for _, d := range s.Diff {
			fmt.Fprintf(w, "      %c %s\n", d.Op, d.Text)
		}
	}
}

func lineCount(n int) string {
	if n == 1 {
		return "1 line"
	}
	return fmt.Sprintf("%d lines", n)
}
