package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/etld/etld/internal/admin"
	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/engine"
	"github.com/etld/etld/internal/stages/builtin"
)

// planner answers POST /api/plan in the daemon: it loads a config path
// exactly as a reload does (config.LoadEach, desiredConfigs) and asks the
// runtime what Apply would do with it (engine.Runtime.Preview).
type planner struct {
	path string // the daemon's -c
	rt   *engine.Runtime
}

// plan is the admin.Planner of the daemon. path "" is the daemon's own
// config path, and a reload of it is planned: every pipeline file is
// considered, and a pipeline whose file is gone stops. Another directory
// stands for the daemon's config the same way; another single file is
// that one pipeline, the others staying as they are.
func (pl *planner) plan(_ context.Context, path string) (*admin.PlanResult, error) {
	own := path == "" || sameFile(path, pl.path)
	if path == "" {
		path = pl.path
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("config path %s: %w", path, unwrapPath(err))
	}
	l := config.LoadEach(path, config.Options{Registry: builtin.Registry()})
	running := pl.rt.Configs()
	desired, invalid, _ := desiredConfigs(path, l, running)
	if !own && !fi.IsDir() {
		for name, cfg := range running {
			if !slices.ContainsFunc(desired, func(c *config.Pipeline) bool { return c.Name == name }) {
				desired = append(desired, cfg) // not part of the file: as it runs
			}
		}
	}
	res := &admin.PlanResult{Path: path, Invalid: invalid, Diagnostics: admin.NewDiagnostics(l.Diags)}
	for _, pp := range pl.rt.Preview(desired) {
		res.Pipelines = append(res.Pipelines, admin.NewPlanPipeline(pp))
	}
	return res, nil
}

func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(fa, fb)
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// cmdPlan is `etld plan [-c PATH] [--admin ADDR] [--admin-token-file
// FILE]`: it asks the running etld what a reload of PATH would do and
// prints it. Exit 0 with the plan, 1 when the daemon cannot answer, 2 on
// a usage error or when PATH has errors (printed as FILE:LINE:COL; the
// plan of the valid pipelines is printed too).
func cmdPlan(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlagSet("plan", stderr)
	addr := fs.String("admin", "127.0.0.1:9300", "admin address of the running etld (host:port or URL)")
	tokenFile := fs.String("admin-token-file", "", "file holding the admin token (needed when etld's admin address is not loopback)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: etld plan [-c PATH] [--admin ADDR] [--admin-token-file FILE]

Asks the running etld what a reload of PATH would do, without changing
anything: per pipeline, the stages kept, replaced, added and removed, and
the checkpoints kept or reset. Without -c, PATH is the daemon's own.

Example:
  etld plan -c /etc/etld/pipelines

Flags:
`)
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return flagExit(err)
	}
	req := admin.PlanRequest{}
	given := *path
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "c" {
			abs, err := filepath.Abs(given)
			if err != nil {
				abs = given
			}
			req.Path = abs
		}
	})
	var token []byte
	if *tokenFile != "" {
		t, err := admin.ReadToken(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "etld plan: %v\n", err)
			return exitUsage
		}
		token = []byte(t)
	}
	res, err := requestPlan(adminURL(*addr)+"/api/plan", req, token)
	if err != nil {
		fmt.Fprintf(stderr, "etld plan: %v\n", err)
		return exitFailure
	}
	errs := 0
	for _, d := range res.Diagnostics {
		line := d.Rendered
		if req.Path != "" {
			// FILE as given on the command line, like etld validate.
			line = strings.Replace(line, req.Path, strings.TrimSuffix(given, string(filepath.Separator)), 1)
		}
		fmt.Fprintln(stderr, line)
		if !d.Warning {
			errs++
		}
	}
	for _, p := range res.Pipelines {
		fmt.Fprint(stdout, p.Text)
	}
	for _, name := range res.Invalid {
		fmt.Fprintf(stdout, "pipeline %s: invalid (see the errors above): a reload leaves it as it is\n", name)
	}
	if errs > 0 || len(res.Invalid) > 0 {
		return exitUsage
	}
	return exitOK
}

// requestPlan posts req to url and decodes the plan.
func requestPlan(url string, req admin.PlanRequest, token []byte) (*admin.PlanResult, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	if len(token) > 0 {
		hreq.Header.Set("Authorization", "Bearer "+string(token))
	}
	c := &http.Client{Timeout: 30 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("cannot reach etld: %w (is it running, with this --admin address?)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	var res admin.PlanResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return nil, fmt.Errorf("%s: not an etld plan: %w", url, err)
	}
	return &res, nil
}
