package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/etld/etld/internal/admin"
)

// cmdTap is `etld tap PIPELINE STAGE[.ROUTE]`: it streams /api/tap.
func cmdTap(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("etld tap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	withHelp(fs, "tap")
	addr := fs.String("admin", "127.0.0.1:9300", "admin address of the running etld (host:port or URL)")
	tokenFile := fs.String("admin-token-file", "", "file holding the bearer token (needed when etld's admin address is not loopback)")
	limit := fs.Int("limit", 0, "stop after N records (0: until interrupted)")
	filter := fs.String("filter", "", "only the records this expression (as in a filter step) holds for")
	dead := fs.Bool("dead-letter", false, "tap the dead letters (of STAGE, or of the whole pipeline without STAGE)")
	// Flags may come before, between or after the arguments.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) < 1 || len(pos) > 2 || (len(pos) == 1 && !*dead) {
		fmt.Fprint(stderr, "etld tap: want PIPELINE and STAGE[.ROUTE] (or PIPELINE --dead-letter)\n\n")
		fs.Usage()
		return exitUsage
	}
	if *limit < 0 {
		fmt.Fprintf(stderr, "etld tap: --limit must not be negative, got %d\n", *limit)
		return exitUsage
	}
	q := url.Values{"pipeline": {pos[0]}}
	if len(pos) == 2 {
		stage, route, _ := strings.Cut(pos[1], ".")
		q.Set("stage", stage)
		if route != "" {
			q.Set("route", route)
		}
	}
	if *dead {
		q.Set("dead_letter", "true")
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	if *filter != "" {
		q.Set("filter", *filter)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, adminURL(*addr)+"/api/tap?"+q.Encode(), nil)
	if err != nil {
		fmt.Fprintf(stderr, "etld tap: %v\n", err)
		return exitUsage
	}
	if *tokenFile != "" {
		tok, err := admin.ReadToken(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "etld tap: %v\n", err)
			return exitUsage
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		fmt.Fprintf(stderr, "etld tap: cannot reach etld: %v (is it running, with this --admin address?)\n", err)
		return exitFailure
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		msg := strings.TrimPrefix(strings.TrimSpace(string(body)), "tap: ")
		fmt.Fprintf(stderr, "etld tap: %s (HTTP %d)\n", msg, resp.StatusCode)
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest {
			return exitUsage
		}
		return exitFailure
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 64<<20)
	for sc.Scan() {
		out.Write(sc.Bytes())
		out.WriteByte('\n')
		out.Flush() // a line at a time: the reader may be a pipe into jq or grep
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		out.Flush()
		fmt.Fprintf(stderr, "etld tap: %v\n", err)
		return exitFailure
	}
	return exitOK
}
