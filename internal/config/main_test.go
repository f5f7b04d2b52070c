package config

import (
	"os"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/etld/etld/internal/stages/builtin"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testEnv is the environment every test loads with: tests never depend on
// the process environment.
var testEnv = map[string]string{
	"HOME":      "/home/etld",
	"EMPTY":     "",
	"N":         "4",
	"DATA_DIR":  "data",
	"LEVEL":     "debug",
	"OUT_NAME":  "merged",
	"DOLLAR_IN": "$HOME",
}

// mapEnv turns a map into a LookupEnv.
func mapEnv(m map[string]string) LookupEnv {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

func testOptions() Options {
	return Options{Registry: builtin.Registry(), Env: mapEnv(testEnv)}
}

// diagLines formats diagnostics one per line, as `etld validate` prints them.
func diagLines(ds Diagnostics) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

// parseOK parses an in-memory pipeline file that must be valid (warnings
// allowed) and returns it.
func parseOK(t testing.TB, file, src string, opts Options) *Pipeline {
	t.Helper()
	p, ds := Parse(file, []byte(src), opts)
	if ds.HasErrors() || p == nil {
		t.Fatalf("Parse(%s) failed:\n%s", file, strings.Join(diagLines(ds), "\n"))
	}
	return p
}

// parseDiags parses an in-memory pipeline file and returns its diagnostics
// as lines.
func parseDiags(t testing.TB, file, src string, opts Options) []string {
	t.Helper()
	p, ds := Parse(file, []byte(src), opts)
	if ds.HasErrors() && p != nil {
		t.Errorf("Parse(%s) returned a pipeline along with errors", file)
	}
	return diagLines(ds)
}

func equalLines(t testing.TB, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\ngot:\n\t%s\nwant:\n\t%s", what, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// stageIDs lists the ids of stages in order.
func stageIDs(sts []*Stage) []string {
	out := make([]string, len(sts))
	for i, s := range sts {
		out[i] = s.ID
	}
	return out
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
