// Command etld runs ETL pipelines declared in YAML.
//
//	etld run      [-c PATH] [--state-dir DIR] [--admin ADDR] [--no-watch]
//	              [--shutdown-timeout DURATION] [--admin-token-file FILE]
//	              [--log-level debug|info|warn|error] [--log-format json|console]
//	etld validate [-c PATH]
//	etld graph    [-c PATH] [--format dot|mermaid]
//	etld status   [--admin ADDR] [--watch] [--interval DURATION]
//	etld test     [-c PATH] [--timeout DURATION] [FILE|DIR...]
//	etld plan     [-c PATH] [--admin ADDR] [--admin-token-file FILE]
//	etld tap      PIPELINE STAGE[.ROUTE] [--dead-letter] [--limit N] [--filter EXPR]
//	etld version
//
// Exit codes: 0 success; 1 runtime failure; 2 usage error or invalid config.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/stages/builtin"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

const usage = `etld runs ETL pipelines declared in YAML.

Usage:
  etld run      [-c PATH] [--state-dir DIR] [--admin ADDR] [--no-watch]
                [--shutdown-timeout DURATION] [--admin-token-file FILE]
                [--log-level debug|info|warn|error] [--log-format json|console]
  etld validate [-c PATH]
  etld graph    [-c PATH] [--format dot|mermaid]
  etld status   [--admin ADDR] [--watch] [--interval DURATION]
  etld test     [-c PATH] [--timeout DURATION] [FILE|DIR...]
  etld plan     [-c PATH] [--admin ADDR] [--admin-token-file FILE]
  etld tap      PIPELINE STAGE[.ROUTE] [--dead-letter] [--limit N] [--filter EXPR]
                [--admin ADDR] [--admin-token-file FILE]
  etld version

PATH is one pipeline file or a directory of them (default: $ETLD_CONFIG,
else /etc/etld/pipelines). Run "etld help COMMAND" (or "etld COMMAND -h")
for a command's flags and an example.

Examples:
  etld validate -c examples/                  # check every example pipeline
  etld run -c examples/quickstart.yaml        # run one; it exits when its files are read
  etld test -c examples/                      # run the pipeline tests next to them
  etld status --watch                         # watch the running daemon
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks errors that exit 2.
var errUsage = errors.New("usage error")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stdout, stderr)
	case "validate":
		return cmdValidate(rest, stdout, stderr)
	case "graph":
		return cmdGraph(rest, stdout, stderr)
	case "status":
		return cmdStatus(rest, stdout, stderr)
	case "test":
		return cmdTest(rest, stdout, stderr)
	case "plan":
		return cmdPlan(rest, stdout, stderr)
	case "tap":
		return cmdTap(rest, stdout, stderr)
	case "version", "--version", "-version":
		if len(rest) > 0 && (rest[0] == "-h" || rest[0] == "-help" || rest[0] == "--help") {
			printHelp(stdout, "version", nil)
			return exitOK
		}
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "help", "-h", "-help", "--help":
		return cmdHelp(rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "etld: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
}

func versionString() string {
	s := "etld " + version
	if bi, ok := debug.ReadBuildInfo(); ok {
		s += " " + bi.GoVersion
		for _, kv := range bi.Settings {
			if kv.Key == "vcs.revision" && len(kv.Value) >= 12 {
				s += " " + kv.Value[:12]
			}
		}
	}
	return s
}

// newFlagSet returns a flag set that reports errors to stderr and does not
// exit, with the -c flag every command has.
func newFlagSet(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("etld "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv("ETLD_CONFIG")
	if def == "" {
		def = "/etc/etld/pipelines"
	}
	path := fs.String("c", def, "pipeline file or directory of pipeline files ($ETLD_CONFIG)")
	withHelp(fs, name)
	return fs, path
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}

func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

// load loads the config and prints its diagnostics; ok is false when there
// are errors.
func load(path string, stderr io.Writer) ([]*config.Pipeline, bool) {
	pipes, diags := config.Load(path, config.Options{Registry: builtin.Registry()})
	for _, d := range diags {
		fmt.Fprintln(stderr, d.String())
	}
	return pipes, !diags.HasErrors()
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlagSet("validate", stderr)
	if err := parseFlags(fs, args); err != nil {
		return flagExit(err)
	}
	pipes, ok := load(*path, stderr)
	if !ok {
		return exitUsage
	}
	var nSrc, nWrk, nSink int
	for _, p := range pipes {
		nSrc += len(p.Sources())
		nWrk += len(p.Workers())
		nSink += len(p.Sinks())
	}
	fmt.Fprintf(stdout, "%s: ok: %s (%s, %s, %s)\n", *path, plural(len(pipes), "pipeline"),
		plural(nSrc, "source"), plural(nWrk, "worker"), plural(nSink, "sink"))
	return exitOK
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func cmdGraph(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlagSet("graph", stderr)
	format := fs.String("format", "dot", "output format: dot or mermaid")
	if err := parseFlags(fs, args); err != nil {
		return flagExit(err)
	}
	write := map[string]func(io.Writer, []*config.Pipeline) error{
		"dot": config.WriteDOT, "mermaid": config.WriteMermaid,
	}[strings.ToLower(*format)]
	if write == nil {
		fmt.Fprintf(stderr, "etld graph: unknown --format %q (valid: dot, mermaid)\n", *format)
		return exitUsage
	}
	pipes, ok := load(*path, stderr)
	if !ok {
		return exitUsage
	}
	if err := write(stdout, pipes); err != nil {
		fmt.Fprintf(stderr, "etld graph: %v\n", err)
		return exitFailure
	}
	return exitOK
}
