package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/etld/etld/internal/pipetest"
	"github.com/etld/etld/internal/stages/builtin"
)

// cmdTest is `etld test [-c PATH] [--timeout DURATION] [FILE|DIR...]`:
// it runs test files (*.test.yaml) against their pipelines, without
// touching their sources or sinks. Exit 0 when every test passes, 1 when
// one fails, 2 when a test or pipeline file is invalid.
func cmdTest(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlagSet("test", stderr)
	timeout := fs.Duration("timeout", pipetest.DefaultTimeout, "bound on one test: a pipeline that has not finished by then fails it")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: etld test [-c PATH] [--timeout DURATION] [FILE|DIR...]

Runs test files (*.test.yaml): input lines per source, expected lines per
sink, through the pipeline's real steps, routes, encodings and merges;
nothing is read from or written to its files. Without FILE or DIR, runs
the test files next to the pipelines of -c.

Example:
  etld test -c examples/

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "etld test: --timeout must be positive, got %v\n", *timeout)
		return exitUsage
	}
	var files []string
	var err error
	where := *path
	if fs.NArg() > 0 {
		files, err = pipetest.Find(fs.Args())
		where = fmt.Sprint(fs.Args())
	} else {
		files, err = pipetest.NextTo(*path)
	}
	if err != nil {
		fmt.Fprintf(stderr, "etld test: %v\n", err)
		return exitUsage
	}
	if len(files) == 0 {
		fmt.Fprintf(stdout, "%s: no test files (*.test.yaml)\n", where)
		return exitOK
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runTests(ctx, files, pipetest.Options{Registry: builtin.Registry(), Timeout: *timeout}, stdout, stderr)
}

// runTests runs every test of files and prints their results, then a
// summary; it returns the exit code.
func runTests(ctx context.Context, files []string, opts pipetest.Options, stdout, stderr io.Writer) int {
	var passed, failed, invalid int
	start := time.Now()
	for _, file := range files {
		src, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", file, err)
			invalid++
			continue
		}
		f, diags := pipetest.Parse(file, src)
		if f != nil {
			var results []pipetest.Result
			results, diags = pipetest.RunFile(ctx, f, opts)
			for _, r := range results {
				pipetest.Report(stdout, r)
				if r.Passed() {
					passed++
				} else {
					failed++
				}
			}
		}
		for _, d := range diags {
			fmt.Fprintln(stderr, d.String())
		}
		if diags.HasErrors() {
			invalid++
		}
	}
	took := time.Since(start).Round(time.Millisecond)
	switch {
	case invalid > 0:
		fmt.Fprintf(stdout, "FAIL: %s invalid; %d passed, %d failed (%v)\n", plural(invalid, "test file"), passed, failed, took)
		return exitUsage
	case failed > 0:
		fmt.Fprintf(stdout, "FAIL: %d of %s failed (%v)\n", failed, plural(passed+failed, "test"), took)
		return exitFailure
	case ctx.Err() != nil:
		fmt.Fprintf(stdout, "FAIL: interrupted after %s (%v)\n", plural(passed, "test"), took)
		return exitFailure
	}
	fmt.Fprintf(stdout, "ok: %s passed in %s (%v)\n", plural(passed, "test"), plural(len(files), "file"), took)
	return exitOK
}
