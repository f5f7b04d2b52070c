package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/etld/etld/internal/admin"
	"github.com/etld/etld/internal/engine"
	"github.com/etld/etld/internal/stages"
	"github.com/rs/zerolog"
)

// runFlags are the flags of `etld run` (SPEC §1).
type runFlags struct {
	path            *string
	stateDir        string
	admin           string
	adminTokenFile  string
	noWatch         bool
	watchMode       string
	reloadDebounce  time.Duration
	shutdownTimeout time.Duration
	logLevel        string
	logFormat       string
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs, path := newFlagSet("run", stderr)
	f := runFlags{path: path}
	fs.StringVar(&f.stateDir, "state-dir", "", "checkpoint directory (default: $STATE_DIRECTORY, else .etld-state)")
	fs.StringVar(&f.admin, "admin", "127.0.0.1:9300", `admin HTTP address, or "off"`)
	fs.BoolVar(&f.noWatch, "no-watch", false, "do not watch the config for changes (SIGHUP still reloads)")
	fs.StringVar(&f.watchMode, "watch", watchAuto, `how to notice changes of the config and of followed files: "auto" (inotify, read in batches every 20 ms while events come; polling when it cannot be had), "fsnotify" (inotify read event by event through fsnotify: more CPU with many busy files) or "poll"`)
	fs.DurationVar(&f.reloadDebounce, "reload-debounce", 250*time.Millisecond, "quiet period after a config change before reloading")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "bound on a graceful stop")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "json or console")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "file holding the bearer token of the admin endpoints that show more than counters (etld plan, etld tap), read at each request; needed for them when --admin is not a loopback address")
	if err := parseFlags(fs, args); err != nil {
		return flagExit(err)
	}
	if f.adminTokenFile != "" {
		if _, err := admin.ReadToken(f.adminTokenFile); err != nil {
			fmt.Fprintf(stderr, "etld run: %v\n", err)
			return exitUsage
		}
	}
	log, err := newLogger(stderr, f.logLevel, f.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "etld run: %v\n", err)
		return exitUsage
	}
	if f.watchMode != watchAuto && f.watchMode != watchFsnotify && f.watchMode != watchPoll {
		fmt.Fprintf(stderr, "etld run: unknown --watch %q (valid: %s, %s, %s)\n", f.watchMode, watchAuto, watchFsnotify, watchPoll)
		return exitUsage
	}
	if f.shutdownTimeout <= 0 {
		fmt.Fprintf(stderr, "etld run: --shutdown-timeout must be positive, got %v\n", f.shutdownTimeout)
		return exitUsage
	}

	pipes, ok := load(*f.path, stderr)
	if !ok {
		return exitUsage
	}
	log.Info().Str("config", *f.path).Int("pipelines", len(pipes)).Str("version", version).Msg("config loaded")

	// ETLD_CPUPROFILE=FILE writes a CPU profile of the run (for
	// `go tool pprof`), the way the benchmarks' figures are explained.
	if prof := os.Getenv("ETLD_CPUPROFILE"); prof != "" {
		pf, err := os.Create(prof)
		if err != nil {
			fmt.Fprintf(stderr, "etld run: ETLD_CPUPROFILE: %v\n", err)
			return exitUsage
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			fmt.Fprintf(stderr, "etld run: ETLD_CPUPROFILE: %v\n", err)
			return exitUsage
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	var sigWG sync.WaitGroup
	defer sigWG.Wait()
	defer close(done)
	defer signal.Stop(sigs)
	sigWG.Go(func() {
		select {
		case sig := <-sigs:
			log.Info().Str("signal", sig.String()).Msg("stopping gracefully; send SIGINT again to exit at once")
			stop()
		case <-done:
			return
		}
		for {
			select {
			case sig := <-sigs:
				if sig == syscall.SIGINT {
					log.Error().Msg("second SIGINT: exiting at once; unfinished work is re-read from the last checkpoint")
					os.Exit(exitFailure)
				}
			case <-done:
				return
			}
		}
	})

	// SIGHUP from now on means "reload": subscribed before anything
	// starts so that none is lost or kills the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// Closed after the runtime has stopped (defers run last first): the
	// file sources use the shared watcher until then.
	fsw, cw, watchMode := openWatchers(*f.path, f, inotifyFor(f.watchMode), log)
	defer fsw.Close()
	var changed <-chan struct{}
	if cw != nil {
		defer cw.Close()
		changed = cw.C
	}

	rt, err := engine.New(engine.Options{
		Logger:          log,
		StateDir:        stateDir(f.stateDir),
		ShutdownTimeout: f.shutdownTimeout,
		Watcher:         fsw,
	})
	var o *ops // admin HTTP and systemd notify (ops.go)
	if err == nil {
		o, err = startOps(ctx, rt, f, log) // binds --admin before any pipeline runs
		if err == nil {
			defer o.Close()
			if o.admin != nil {
				o.admin.SetConfigWatch(watchMode)
			}
		}
	}
	var started []engine.Change
	if err == nil {
		started, err = rt.Apply(ctx, pipes)
	}
	if err != nil {
		code := exitFailure
		var mis *stages.MisconfiguredError
		if errors.As(err, &mis) {
			code = exitUsage // the config names something the outside world refuses
			log.Error().Err(err).Msg("cannot start: invalid configuration")
		} else {
			log.Error().Err(err).Msg("cannot start")
		}
		if rt != nil {
			rt.Stop()
		}
		return code
	}
	o.Started(started)
	d := &daemon{path: *f.path, rt: rt, log: log, changed: changed, hup: hup,
		beforeReload: o.Reloading, afterReload: o.Reloaded}
	d.serve(ctx)
	writeHeapProfile(stderr)
	o.Stopping()
	if err := rt.Stop(); err != nil {
		log.Error().Err(err).Msg("stopped with errors")
		return exitFailure
	}
	log.Info().Msg("stopped")
	return exitOK
}

// stateDir applies SPEC §1's precedence: the flag, then
// $STATE_DIRECTORY (set by systemd's StateDirectory=; the first entry when
// it lists several), then .etld-state in the working directory.
func stateDir(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); env != "" {
		return env
	}
	return ".etld-state"
}

// newLogger builds the zerolog logger of --log-level and --log-format.
func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" || lvl > zerolog.ErrorLevel || lvl < zerolog.DebugLevel {
		return zerolog.Logger{}, fmt.Errorf("unknown --log-level %q (valid: debug, info, warn, error)", level)
	}
	// Under journald (JOURNAL_STREAM is set when stderr goes to the
	// journal) every line already gets a precise timestamp: do not add a
	// second one.
	journal := os.Getenv("JOURNAL_STREAM") != ""
	switch strings.ToLower(format) {
	case "json":
	case "console":
		cw := zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
		if journal {
			cw.PartsExclude = []string{zerolog.TimestampFieldName}
		}
		w = cw
	default:
		return zerolog.Logger{}, fmt.Errorf("unknown --log-format %q (valid: json, console)", format)
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	// Stages log from many goroutines: serialise writes (os.Stderr is
	// safe, a test buffer is not).
	l := zerolog.New(zerolog.SyncWriter(w)).Level(lvl)
	if journal {
		return l, nil
	}
	return l.With().Timestamp().Logger(), nil
}

// writeHeapProfile writes the heap in use to ETLD_MEMPROFILE, when set,
// as the stop begins (while every pipeline still runs): what the
// per-pipeline memory of docs/scaling-pipelines.md is read from.
func writeHeapProfile(stderr io.Writer) {
	path := os.Getenv("ETLD_MEMPROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err == nil {
		runtime.GC() // the heap in use, not the garbage of the last cycle
		err = pprof.WriteHeapProfile(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "etld run: ETLD_MEMPROFILE: %v\n", err)
	}
}
