package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/engine"
	"github.com/etld/etld/internal/stages/builtin"
	"github.com/etld/etld/internal/watch"
	"github.com/rs/zerolog"
)

// daemon keeps the runtime in step with the config path: it reloads on
// file changes (unless watching is off) and on SIGHUP, and decides when
// `run` ends (SPEC §1).
type daemon struct {
	path     string
	rt       *engine.Runtime
	log      zerolog.Logger
	debounce time.Duration
	watch    bool
	// hup receives SIGHUP; cmdRun subscribes before the pipelines start,
	// so a reload asked for as soon as READY=1 is not lost.
	hup <-chan os.Signal

	// Hooks around every reload, for sd_notify and the admin API; nil
	// means none.
	beforeReload func()
	afterReload  func(changes []engine.Change, invalid map[string][]string, err error)
}

// serve runs until ctx is done or, unless the config is a directory being
// watched (a daemon waiting for pipeline files), until every pipeline has
// finished. The error is about watching only; reload failures are logged.
func (d *daemon) serve(ctx context.Context) error {
	var changed <-chan struct{}
	var werr error
	if d.watch {
		w, err := watch.New(d.path, watch.Options{Debounce: d.debounce, Logger: d.log})
		if err != nil {
			werr = err // keep running without watching; SIGHUP still works
		} else {
			defer w.Close()
			changed = w.C
		}
	}
	fi, err := os.Stat(d.path)
	waitForFiles := d.watch && err == nil && fi.IsDir()

	idle := d.rt.Idle()
	for {
		select {
		case <-ctx.Done():
			return werr
		case <-idle:
			if !waitForFiles {
				return werr
			}
			idle = nil // re-armed by the next reload
		case <-changed:
			d.reload(ctx, "file change")
			idle = d.rt.Idle()
		case <-d.hup:
			d.reload(ctx, "SIGHUP")
			idle = d.rt.Idle()
		}
	}
}

// reload loads the config and applies what is valid: a file with errors
// keeps its running pipeline untouched (SPEC §3.2).
func (d *daemon) reload(ctx context.Context, why string) {
	start := time.Now()
	if d.beforeReload != nil {
		d.beforeReload()
	}
	l := config.LoadEach(d.path, config.Options{Registry: builtin.Registry()})
	for _, diag := range l.Diags {
		ev := d.log.Warn()
		if diag.Severity != config.Warning {
			ev = d.log.Error()
		}
		ev.Str("diagnostic", diag.String()).Msg("config problem")
	}
	running := d.rt.Configs()
	metrics := d.rt.Metrics()
	invalid := l.Failed
	desired := l.Pipelines
	if _, err := os.Stat(d.path); err != nil {
		// The path itself is gone (a delete-then-create save, or an
		// unmounted volume): keep everything as it is.
		d.log.Error().Err(err).Msg("config path unreadable; every running pipeline is kept")
		invalid = nil
		desired = nil
		for name, cfg := range running {
			invalid = append(invalid, name)
			desired = append(desired, cfg)
		}
	} else {
		for _, name := range l.Failed {
			if cfg := running[name]; cfg != nil {
				desired = append(desired, cfg) // keep the running version
			}
		}
	}
	problems := map[string][]string{} // by invalid pipeline, for /api/pipelines
	for _, name := range invalid {
		metrics.Reload(name, engine.ActionInvalid.Result())
		d.log.Error().Str("pipeline", name).Msg("invalid config: the running pipeline is kept as it is")
		problems[name] = nil
		for _, diag := range l.Diags {
			if diag.Severity != config.Warning && (pipelineOfFile(diag.File) == name || diag.File == d.path) {
				problems[name] = append(problems[name], diag.String())
			}
		}
	}
	changes, err := d.rt.Apply(ctx, desired)
	var added, replaced, removed, kept []string
	for _, c := range changes {
		res := c.Result()
		if res == engine.ResultUnchanged {
			kept = append(kept, c.Pipeline)
			continue
		}
		metrics.Reload(c.Pipeline, res)
		if res.Failed() {
			continue
		}
		switch c.Action {
		case engine.ActionStarted:
			added = append(added, c.Pipeline)
		case engine.ActionReplaced, engine.ActionReconfigured:
			replaced = append(replaced, c.Pipeline)
		case engine.ActionStopped:
			removed = append(removed, c.Pipeline)
		}
	}
	ev := d.log.Info()
	if err != nil {
		ev = d.log.Error().Err(err)
	}
	ev.Str("trigger", why).Strs("started", added).Strs("replaced", replaced).
		Strs("stopped", removed).Strs("unchanged", kept).Strs("invalid", l.Failed).
		Dur("took", time.Since(start)).Msg("config reloaded")
	if d.afterReload != nil {
		d.afterReload(changes, problems, err)
	}
}

// pipelineOfFile is the name of the pipeline a config file defines: its
// base name without extension.
func pipelineOfFile(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base))
}
