package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/etld/etld/internal/admin"
	"github.com/etld/etld/internal/engine"
	"github.com/etld/etld/internal/notify"
	"github.com/rs/zerolog"
)

// ops is what an operator sees of `etld run` (SPEC §4): the admin HTTP
// server, the systemd notifications and the record of the last reload.
// run.go calls, in this order:
//
//	startOps     before any pipeline runs (a busy admin address fails here)
//	Started      once the pipelines run: READY=1, /readyz follows the runtime
//	Reloading    before every reload: RELOADING=1 with MONOTONIC_USEC
//	Reloaded     after every reload, failed ones too: READY=1, STATUS=
//	Stopping     when a graceful stop begins: STOPPING=1, /readyz 503
//	Close        after the runtime stopped: stops the server and the loops
//
// Every method is safe on a nil *ops and from any goroutine.
type ops struct {
	rt      *engine.Runtime
	log     zerolog.Logger
	admin   *admin.Server // nil with --admin off
	reloads *admin.ReloadTracker

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// statusEvery is the period of the STATUS= line; kick asks for one now.
	statusEvery time.Duration
	kick        chan struct{}

	// beat is the time (UnixNano) of the heartbeat goroutine's last
	// round trip through the runtime; the watchdog pings only while it
	// is recent.
	beat atomic.Int64

	closeOnce sync.Once
}

// statusEvery is how often STATUS= is refreshed under systemd.
const statusEvery = 10 * time.Second

// startOps starts the admin server on f.admin (unless "off") and, under a
// systemd watchdog, the heartbeat and the pings. Its error names the
// admin address.
func startOps(ctx context.Context, rt *engine.Runtime, f runFlags, log zerolog.Logger) (*ops, error) {
	o := &ops{rt: rt, log: log, reloads: &admin.ReloadTracker{}, statusEvery: statusEvery,
		kick: make(chan struct{}, 1)}
	if f.admin != "off" {
		pl := &planner{rt: rt}
		if f.path != nil {
			pl.path = *f.path
		}
		srv, err := admin.New(admin.Options{
			Runtime:   rt,
			Registry:  rt.Metrics().Registry,
			Reloads:   o.reloads,
			Build:     admin.BuildInfo{Version: version},
			Logger:    log,
			Plan:      pl.plan,
			TokenFile: f.adminTokenFile,
		})
		if err == nil {
			err = srv.Start(ctx, f.admin)
		}
		if err != nil {
			return nil, err
		}
		o.admin = srv
	}
	o.ctx, o.cancel = context.WithCancel(context.Background())

	wd, err := notify.WatchdogInterval()
	if err != nil {
		log.Warn().Err(err).Msg("systemd watchdog setting ignored")
	}
	if wd > 0 {
		log.Info().Dur("timeout", wd).Msg("systemd watchdog: pinging at half the timeout while the runtime responds")
		o.beat.Store(time.Now().UnixNano())
		o.wg.Go(func() { o.heartbeat(min(time.Second, wd/4)) })
		o.wg.Go(func() { notify.Watchdog(o.ctx, wd, o.healthCheck(wd/2)) })
	}
	return o, nil
}

// Started records the initial load and tells systemd and /readyz that the
// pipelines run.
func (o *ops) Started(changes []engine.Change) {
	if o == nil {
		return
	}
	overall, per := reloadRecord(changes, nil, nil)
	o.reloads.Record(overall, per)
	if o.admin != nil {
		o.admin.SetRunning()
	}
	o.notifyErr("READY=1", notify.Ready(o.summary(nil)))
	if notify.Enabled() {
		o.wg.Go(o.statusLoop)
	}
}

// Reloading tells systemd that a reload starts.
func (o *ops) Reloading() {
	if o == nil {
		return
	}
	o.notifyErr("RELOADING=1", notify.Reloading())
}

// Reloaded records a reload's outcome and tells systemd it is over; it
// has the signature of daemon.afterReload.
func (o *ops) Reloaded(changes []engine.Change, invalid map[string][]string, err error) {
	if o == nil {
		return
	}
	overall, per := reloadRecord(changes, invalid, err)
	o.reloads.Record(overall, per)
	o.notifyErr("READY=1", notify.Ready(o.summary(nil)))
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// Stopping tells systemd and /readyz that a graceful stop has begun.
func (o *ops) Stopping() {
	if o == nil {
		return
	}
	if o.admin != nil {
		o.admin.SetStopping()
	}
	o.notifyErr("STOPPING=1", notify.Stopping())
	o.notifyErr("STATUS=", notify.Status("stopping: draining in-flight records to the sinks"))
}

// Close stops the loops and the admin server (requests in flight get a
// few seconds). Call it after the runtime stopped, so /metrics can be
// scraped during the drain.
func (o *ops) Close() {
	if o == nil {
		return
	}
	o.closeOnce.Do(func() {
		o.cancel()
		// The loops return at once, unless one is stuck in a wedged
		// runtime's Status: then it is left behind.
		loops := make(chan struct{})
		go func() {
			o.wg.Wait()
			close(loops)
		}()
		select {
		case <-loops:
		case <-time.After(2 * time.Second):
			o.log.Warn().Msg("status or watchdog loop stuck in the runtime; not waiting for it")
		}
		if o.admin != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := o.admin.Shutdown(ctx); err != nil {
				o.log.Warn().Err(err).Msg("admin HTTP server: requests cut short at shutdown")
			}
		}
	})
}

// reloadRecord turns what a load did into the tracker's records: each
// change has its Result (engine.Action says which actions succeed), an
// invalid file is a failure, and the whole load fails when a pipeline
// failed, succeeds when one changed, else is unchanged.
func reloadRecord(changes []engine.Change, invalid map[string][]string, err error) (admin.Reload, map[string]admin.Reload) {
	per := map[string]admin.Reload{}
	changed := false
	var failed []string
	for _, c := range changes {
		r := admin.Reload{Action: c.Action, Result: c.Result()}
		if c.Err != nil {
			r.Error = c.Err.Error()
		}
		switch r.Result {
		case engine.ResultSuccess:
			changed = true
		case engine.ResultFailure:
			failed = append(failed, c.Pipeline)
		}
		per[c.Pipeline] = r
	}
	for _, name := range slices.Sorted(maps.Keys(invalid)) {
		msg := "the pipeline file has errors; the running version, if any, is kept"
		if ps := invalid[name]; len(ps) > 0 {
			const show = 5
			msg += ": " + strings.Join(ps[:min(len(ps), show)], "; ")
			if len(ps) > show {
				msg += fmt.Sprintf("; and %d more (in the log)", len(ps)-show)
			}
		}
		per[name] = admin.Reload{Action: engine.ActionInvalid, Result: engine.ActionInvalid.Result(), Error: msg}
		if !slices.Contains(failed, name) {
			failed = append(failed, name)
		}
	}
	overall := admin.Reload{Result: engine.ResultSuccess}
	switch {
	case len(failed) > 0 || err != nil:
		overall.Result = engine.ResultFailure
		slices.Sort(failed)
		overall.Error = "failed: " + strings.Join(failed, ", ")
		if err != nil {
			overall.Error = err.Error()
		}
	case !changed && len(changes) > 0:
		overall.Result = engine.ResultUnchanged
	}
	return overall, per
}

// rates are the record totals behind the records/s of STATUS=.
type rates struct {
	at            time.Time
	read, written uint64 // sources' records out, sinks' records out
}

// summary is the one-line STATUS=: pipelines by state, records/s since
// prev (omitted when prev is nil), and the last reload.
func (o *ops) summary(prev *rates) string {
	st := o.rt.Status()
	now := rates{at: time.Now()}
	states := map[engine.State]int{}
	for _, p := range st {
		states[p.State]++
		for _, s := range p.Stages {
			switch s.Kind {
			case "source":
				now.read += s.Out
			case "sink":
				now.written += s.Out
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s running", plural(states[engine.StateRunning], "pipeline"))
	for _, s := range []engine.State{engine.StateStopping, engine.StateFinished, engine.StateFailed} {
		if states[s] > 0 {
			fmt.Fprintf(&b, ", %d %s", states[s], s)
		}
	}
	if prev != nil {
		if dt := now.at.Sub(prev.at).Seconds(); dt > 0 {
			fmt.Fprintf(&b, "; %s records/s read, %s records/s written",
				formatRate(delta(now.read, prev.read)/dt), formatRate(delta(now.written, prev.written)/dt))
		}
		*prev = now
	}
	if r, ok := o.reloads.Last(); ok {
		fmt.Fprintf(&b, "; last config load %s: %s", r.Time.Format("15:04:05"), statusWord(r.Result))
	}
	return b.String()
}

// statusWord is a load's result as STATUS= shows it.
func statusWord(r engine.Result) string {
	switch r {
	case engine.ResultSuccess:
		return "ok"
	case engine.ResultUnchanged:
		return "unchanged"
	default: // engine.ResultFailure, and anything undeclared
		return "FAILED"
	}
}

func delta(now, before uint64) float64 {
	if now < before {
		return 0
	}
	return float64(now - before)
}

// formatRate prints a rate with 3 significant digits at most: 0, 7.5,
// 950, 12.3k, 2.69M.
func formatRate(r float64) string {
	switch {
	case r >= 1e6:
		return trimFloat(r/1e6) + "M"
	case r >= 1e3:
		return trimFloat(r/1e3) + "k"
	default:
		return trimFloat(r)
	}
}

func trimFloat(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0")
	default:
		s := strings.TrimRight(fmt.Sprintf("%.2f", v), "0")
		return strings.TrimSuffix(s, ".")
	}
}

// statusLoop refreshes STATUS= every statusEvery, and at once after a
// reload, until Close.
func (o *ops) statusLoop() {
	t := time.NewTicker(o.statusEvery)
	defer t.Stop()
	prev := rates{at: time.Now()}
	for {
		select {
		case <-o.ctx.Done():
			return
		case <-t.C:
		case <-o.kick:
		}
		o.notifyErr("STATUS=", notify.Status(o.summary(&prev)))
	}
}

// heartbeat proves every period that the runtime answers: Status takes
// the runtime's lock and reads every pipeline. If it blocks, or this
// goroutine is starved, the beat gets old and the watchdog stops pinging.
func (o *ops) heartbeat(period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-o.ctx.Done():
			return
		case <-t.C:
			o.rt.Status()
			o.beat.Store(time.Now().UnixNano())
		}
	}
}

// healthCheck returns the watchdog's health function: healthy while the
// last heartbeat is younger than stale. It logs each change of health.
func (o *ops) healthCheck(stale time.Duration) func() bool {
	healthy := true
	return func() bool {
		age := time.Since(time.Unix(0, o.beat.Load()))
		ok := age < stale
		if ok != healthy {
			healthy = ok
			if ok {
				o.log.Info().Msg("runtime responds again: watchdog pings resume")
			} else {
				o.log.Error().Dur("unresponsive_for", age).
					Msg("runtime unresponsive: watchdog pings withheld, systemd will restart etld if this lasts")
			}
		}
		return ok
	}
}

// notifyErr logs a failed notification (a socket systemd closed, ...);
// etld keeps running.
func (o *ops) notifyErr(what string, err error) {
	if err != nil {
		o.log.Warn().Err(err).Str("message", what).Msg("systemd notification failed")
	}
}
