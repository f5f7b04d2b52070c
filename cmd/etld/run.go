package main

import (
	"fmt"
	"io"
)

// cmdRun loads the config; the runtime lands in the next change.
func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlagSet("run", stderr)
	if err := parseFlags(fs, args); err != nil {
		return flagExit(err)
	}
	pipes, ok := load(*path, stderr)
	if !ok {
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s: config loaded: %s\n", *path, plural(len(pipes), "pipeline"))
	return exitOK
}
