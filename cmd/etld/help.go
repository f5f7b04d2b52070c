package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// command is one subcommand's help: what `etld COMMAND -h` and `etld help
// COMMAND` print above the flags.
type command struct {
	synopsis string // the usage line after "etld NAME"
	summary  string // one sentence
	example  string // shell lines, each with a comment saying what it does
}

var commands = map[string]command{
	"run": {
		synopsis: "[-c PATH] [flags]",
		summary:  "Runs the pipelines of PATH until stopped (or until every source is finite and done), reloading a pipeline when its file changes.",
		example: `etld run -c examples/quickstart.yaml               # run one pipeline; exits when its files are read
etld run -c /etc/etld/pipelines --admin 127.0.0.1:9300   # the service: every *.yaml in the directory`,
	},
	"validate": {
		synopsis: "[-c PATH]",
		summary:  "Checks pipeline files without running them: every problem at FILE:LINE:COL, exit 2 when there is one.",
		example:  `etld validate -c examples/                          # all pipelines of a directory`,
	},
	"graph": {
		synopsis: "[-c PATH] [--format dot|mermaid]",
		summary:  "Prints the graph of stages (sources, workers with their routes, sinks) as DOT or Mermaid.",
		example:  `etld graph -c examples/timeline-text.yaml | dot -Tsvg > timeline.svg`,
	},
	"status": {
		synopsis: "[--admin ADDR] [--watch] [--interval DURATION]",
		summary:  "Shows the running daemon's pipelines, stages, counters and health.",
		example:  `etld status --watch                                 # refresh every 2s, with rates`,
	},
	"test": {
		synopsis: "[-c PATH] [--timeout DURATION] [FILE|DIR...]",
		summary:  "Runs the pipeline tests (*.test.yaml) next to the pipelines, in memory: nothing is read from or written to disk.",
		example:  `etld test -c examples/                              # every test file next to the example pipelines`,
	},
	"plan": {
		synopsis: "[-c PATH] [--admin ADDR] [--admin-token-file FILE]",
		summary:  "Asks the running daemon what a reload of PATH would do (stages kept, replaced, added, removed; checkpoints kept or reset), changing nothing.",
		example:  `etld plan -c /etc/etld/pipelines/orders.yaml        # before saving an edit over the live file`,
	},
	"tap": {
		synopsis: "PIPELINE STAGE[.ROUTE] [flags]  |  etld tap PIPELINE [STAGE] --dead-letter [flags]",
		summary:  `Prints, one JSON value a line, the records leaving a stage of the running etld (or one route of a worker, or the dead letters). A slow reader is sent a sample, with {"_tap_missed":N} lines counting what it missed; the pipeline never waits for a tap.`,
		example:  `etld tap orders parse.errors --limit 10 --filter 'amount > 100'`,
	},
	"version": {
		summary: "Prints the version, the Go version and the commit.",
		example: `etld version`,
	},
}

// withHelp makes fs print the command's summary and example before its
// flags on -h/--help.
func withHelp(fs *flag.FlagSet, name string) {
	fs.Usage = func() { printHelp(fs.Output(), name, fs) }
}

func printHelp(w io.Writer, name string, fs *flag.FlagSet) {
	c := commands[name]
	fmt.Fprintf(w, "Usage: etld %s %s\n\n%s\n\nExample:\n", name, c.synopsis, c.summary)
	for _, l := range strings.Split(c.example, "\n") {
		fmt.Fprintf(w, "  %s\n", l)
	}
	if fs != nil {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// cmdHelp is `etld help [COMMAND]`.
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	if _, ok := commands[args[0]]; !ok {
		fmt.Fprintf(stderr, "etld help: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	// The command's own -h prints its flags too.
	return run([]string{args[0], "-h"}, stdout, stdout)
}
