package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etld/etld/internal/config"
	"github.com/etld/etld/internal/engine"
	"github.com/etld/etld/internal/fswatch"
	"github.com/etld/etld/internal/stages/builtin"
	"github.com/etld/etld/internal/watch"
	"github.com/rs/zerolog"
)

// daemon keeps the runtime in step with the config path: it reloads on
// file changes (unless watching is off) and on SIGHUP, and decides when
// `run` ends (SPEC §1).
type daemon struct {
	path string
	rt   *engine.Runtime
	log  zerolog.Logger
	// changed reports config changes (see openWatchers); nil when the
	// config is not watched.
	changed <-chan struct{}
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
// finished. Reload failures are logged.
func (d *daemon) serve(ctx context.Context) {
	fi, err := os.Stat(d.path)
	waitForFiles := d.changed != nil && err == nil && fi.IsDir()

	idle := d.rt.Idle()
	for {
		select {
		case <-ctx.Done():
			return
		case <-idle:
			if !waitForFiles {
				return
			}
			idle = nil // re-armed by the next reload
		case <-d.changed:
			d.reload(ctx, "file change")
			idle = d.rt.Idle()
		case <-d.hup:
			d.reload(ctx, "SIGHUP")
			idle = d.rt.Idle()
		}
	}
}

// Values of --watch.
const (
	watchAuto     = "auto"     // inotify read in paced batches (Linux), else polling
	watchFsnotify = "fsnotify" // inotify read by fsnotify event by event, else polling
	watchPoll     = "poll"
)

// openWatchers opens the daemon's inotify instance, shared by the config
// watcher and every file source, and, unless --no-watch, the config
// watcher. Without inotify (--watch poll, or newInotify fails: the
// per-user instance limit) the config's pipeline files are polled every
// watch.DefaultPollInterval and the file sources poll their files; that
// is logged here, at start. fs is never nil (inactive when polling); cw is
// nil when the config is not watched. mode is inotify, poll or off, for
// /api/pipelines.
func openWatchers(path string, f runFlags, newInotify func(zerolog.Logger) (*fswatch.Watcher, error), log zerolog.Logger) (fs *fswatch.Watcher, cw *watch.Watcher, mode string) {
	fs = fswatch.Disabled()
	if f.watchMode == watchPoll {
		log.Info().Dur("config_interval", watch.DefaultPollInterval).Msg("--watch poll: polling the config and the input files instead of using inotify")
	} else if w, err := newInotify(log); err != nil {
		log.Warn().Err(err).Dur("config_interval", watch.DefaultPollInterval).
			Msg("cannot use inotify (per-user limit fs.inotify.max_user_instances reached?): polling the config and the input files instead")
	} else {
		fs = w
	}
	if f.noWatch {
		return fs, nil, "off"
	}
	cw, err := watch.New(path, watch.Options{Debounce: f.reloadDebounce, FS: fs, Logger: log})
	if err != nil {
		log.Error().Err(err).Msg("cannot watch the config; SIGHUP still reloads")
		return fs, nil, "off"
	}
	log.Info().Str("mode", cw.Mode()).Msg("watching the config for changes")
	return fs, cw, cw.Mode()
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
	metrics := d.rt.Metrics()
	desired, invalid, err := desiredConfigs(d.path, l, d.rt.Configs())
	if err != nil {
		d.log.Error().Err(err).Msg("config path unreadable; every running pipeline is kept")
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
	var added, replaced, removed []string
	kept := 0 // a count: with hundreds of pipelines their names would fill the line
	for _, c := range changes {
		res := c.Result()
		if res == engine.ResultUnchanged {
			kept++
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
		Strs("stopped", removed).Int("unchanged", kept).Strs("invalid", l.Failed).
		Dur("took", time.Since(start)).Msg("config reloaded")
	if d.afterReload != nil {
		d.afterReload(changes, problems, err)
	}
}

// desiredConfigs is what a reload of path applies, given its load l and
// the running configs: the valid pipelines, plus the running version of
// every invalid one (listed in invalid). When the path itself is gone (a
// delete-then-create save, or an unmounted volume), everything is kept
// as it is, every running pipeline is invalid, and err says why.
func desiredConfigs(path string, l config.Loaded, running map[string]*config.Pipeline) (desired []*config.Pipeline, invalid []string, err error) {
	if _, err := os.Stat(path); err != nil {
		for name, cfg := range running {
			invalid = append(invalid, name)
			desired = append(desired, cfg)
		}
		return desired, invalid, err
	}
	desired = l.Pipelines
	for _, name := range l.Failed {
		if cfg := running[name]; cfg != nil {
			desired = append(desired, cfg) // keep the running version
		}
	}
	return desired, l.Failed, nil
}

// pipelineOfFile is the name of the pipeline a config file defines: its
// base name without extension.
func pipelineOfFile(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

// inotifyFor returns how --watch mode opens the shared inotify instance.
func inotifyFor(mode string) func(zerolog.Logger) (*fswatch.Watcher, error) {
	if mode == watchFsnotify {
		return fswatch.NewFsnotify
	}
	return fswatch.New
}
