// Package admin is etld's admin HTTP server (SPEC §4):
//
//	GET /metrics        Prometheus text format: etld_* metrics, go_* and process_*
//	GET /healthz        200 "ok" while the process serves HTTP
//	GET /readyz         200 "ready" when every pipeline runs (or finished
//	                    cleanly) and no sink is failing, else 503 and the reason
//	GET /api/pipelines  JSON: every pipeline's graph, per-stage counters and
//	                    queue lengths, state, and last reload (see Snapshot)
//	POST /api/plan      JSON: what a reload of a config path would do (see
//	                    PlanResult); behind the Guard
//	GET /api/graph      JSON: every pipeline's graph drawn as SVG (live page)
//	GET /api/tap        NDJSON: records leaving a stage (see tap); behind the Guard
//	GET /               the live page: graphs and counters, refreshed
//
// It binds exactly the address it is given, which is a loopback address
// unless the operator says otherwise. Only the endpoints that reveal more
// than counters (the plan, the tap) have authentication (see Guard).
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"runtime"

	"github.com/etld/etld/internal/engine"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Runtime is what the server reads; *engine.Runtime implements it.
// Status is called concurrently from request goroutines; readiness is
// judged from its snapshot by engine.NotReady.
type Runtime interface {
	Status() []engine.PipelineStatus
}

// BuildInfo labels the etld_build_info gauge.
type BuildInfo struct {
	Version   string // etld's version (main.version)
	GoVersion string // "" means the running toolchain's
	Revision  string // VCS revision; "" means from the binary's build info, else "unknown"
}

// Options configure a Server.
type Options struct {
	Runtime Runtime
	// Registry is where /metrics reads from; New adds the Go runtime and
	// process collectors and etld_build_info to it.
	Registry *prometheus.Registry
	// Reloads, when set, adds the last reload to /api/pipelines.
	Reloads *ReloadTracker
	Build   BuildInfo
	Logger  zerolog.Logger
	// Plan, when set, serves POST /api/plan behind the Guard.
	Plan Planner
	// Token is the bearer token of guarded endpoints; TokenFile, when
	// set, holds it instead (--admin-token-file), read at every request.
	Token     []byte
	TokenFile string
}

// Phases of the process, as /readyz sees them.
const (
	phaseStarting int32 = iota // pipelines are not running yet
	phaseRunning
	phaseStopping
)

// Server is the admin HTTP server. Start binds it; Shutdown stops it.
type Server struct {
	opts  Options
	log   zerolog.Logger
	mux   *http.ServeMux
	phase atomic.Int32
	watch atomic.Value // string: Snapshot.ConfigWatch
	// exposed is set when the listener is not a loopback address.
	exposed atomic.Bool
	// streams is the context of long requests (the tap), cancelled when
	// Shutdown begins: they end instead of holding it up.
	streams    context.Context
	endStreams context.CancelFunc

	mu   sync.Mutex
	srv  *http.Server
	ln   net.Listener
	done chan struct{} // closed when Serve has returned
}

// New returns a server over opts.Runtime; it registers the process-wide
// collectors in opts.Registry, which fails if they are there already.
// /readyz answers 503 until SetRunning.
func New(opts Options) (*Server, error) {
	if opts.Runtime == nil || opts.Registry == nil {
		return nil, errors.New("admin: Runtime and Registry are required")
	}
	if opts.TokenFile != "" {
		if _, err := ReadToken(opts.TokenFile); err != nil {
			return nil, err
		}
	}
	if err := RegisterProcessMetrics(opts.Registry, opts.Build); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, log: opts.Logger.With().Str("component", "admin").Logger(), mux: http.NewServeMux()}
	s.streams, s.endStreams = context.WithCancel(context.Background())
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError, // a broken collector must not hide the others
		ErrorLog:      promLogger{s.log},
	}))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	s.mux.HandleFunc("GET /api/pipelines", s.pipelines)
	s.mux.HandleFunc("GET /api/graph", s.graphs)
	s.mux.Handle("GET /api/tap", s.Guard().Wrap(http.HandlerFunc(s.streaming(s.tap))))
	s.mux.HandleFunc("GET /{$}", s.index)
	if opts.Plan != nil {
		s.mux.Handle("POST /api/plan", s.Guard().Wrap(http.HandlerFunc(s.plan)))
	}
	s.mux.Handle("GET /live/", http.FileServerFS(liveFiles))
	return s, nil
}

// Guard is the guard of the server's protected endpoints: its token, and
// the address it listens on (once started; before, each request's).
func (s *Server) Guard() Guard {
	return Guard{Token: s.opts.Token, TokenFile: s.opts.TokenFile, Loopback: func(r *http.Request) bool {
		if s.exposed.Load() {
			return false
		}
		s.mu.Lock()
		ln := s.ln
		s.mu.Unlock()
		if ln == nil {
			return cameInOnLoopback(r)
		}
		return isLoopback(ln.Addr())
	}}
}

// RegisterProcessMetrics adds the Go runtime (go_*) and process
// (process_*) collectors and the etld_build_info gauge to reg.
func RegisterProcessMetrics(reg prometheus.Registerer, bi BuildInfo) error {
	bi = bi.complete()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "etld_build_info",
		Help:        "Always 1; the labels say which etld runs.",
		ConstLabels: prometheus.Labels{"version": bi.Version, "goversion": bi.GoVersion, "revision": bi.Revision},
	})
	info.Set(1)
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		info,
	} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("admin: register metrics: %w", err)
		}
	}
	return nil
}

func (bi BuildInfo) complete() BuildInfo {
	if bi.Version == "" {
		bi.Version = "dev"
	}
	if bi.GoVersion == "" {
		bi.GoVersion = runtime.Version()
	}
	if bi.Revision == "" {
		bi.Revision = "unknown"
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, kv := range info.Settings {
				if kv.Key == "vcs.revision" && kv.Value != "" {
					bi.Revision = kv.Value
				}
			}
		}
	}
	return bi
}

// Handler returns the server's routes, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.mux }

// SetRunning makes /readyz follow the runtime: call it once the
// pipelines run.
func (s *Server) SetRunning() { s.phase.Store(phaseRunning) }

// SetConfigWatch sets how the config is watched, for /api/pipelines.
func (s *Server) SetConfigWatch(mode string) { s.watch.Store(mode) }

// SetStopping makes /readyz answer 503 for the rest of the process: call
// it when a graceful stop begins.
func (s *Server) SetStopping() { s.phase.Store(phaseStopping) }

// Start binds addr, exactly as given, and serves in the background until
// Shutdown. A busy or invalid address is an error that names it.
func (s *Server) Start(ctx context.Context, addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("admin: already started")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("admin HTTP: invalid address %q: want host:port, e.g. 127.0.0.1:9300", addr)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return listenError(addr, err)
	}
	if !isLoopback(ln.Addr()) {
		s.exposed.Store(true)
		msg := "admin HTTP is reachable from other hosts and has no authentication; /api/tap is disabled"
		if s.opts.TokenFile != "" {
			msg = "admin HTTP is reachable from other hosts; /api/tap needs the bearer token, the rest has no authentication"
		}
		s.log.Warn().Str("addr", ln.Addr().String()).Msg(msg)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          newStdLogger(s.log),
	}
	s.done = make(chan struct{})
	srv, done := s.srv, s.done
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.log.Error().Err(err).Msg("admin HTTP server stopped")
		}
	}()
	s.log.Info().Str("addr", ln.Addr().String()).Msg("admin HTTP listening")
	return nil
}

// listenError names the address and the cause, without net's repetition
// of the address ("listen tcp 127.0.0.1:9300: bind: address already in use").
func listenError(addr string, err error) error {
	cause := err
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		cause = op.Err
	}
	hint := ""
	if strings.Contains(cause.Error(), "address already in use") {
		hint = " (is another etld running? choose another --admin ADDR, or --admin off)"
	}
	return fmt.Errorf("admin HTTP: cannot listen on %s: %w%s", addr, cause, hint)
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// Addr returns the bound address ("" before Start), useful with port 0.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops accepting connections and waits for the requests in
// flight until ctx is done, then closes what is left. It is safe to call
// before Start, and more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.mu.Unlock()
	s.endStreams()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		srv.Close()
	}
	<-done
	return err
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	text(w, http.StatusOK, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if ready, reason := s.ready(); !ready {
		text(w, http.StatusServiceUnavailable, "not ready: "+reason)
		return
	}
	text(w, http.StatusOK, "ready")
}

// ready reports readiness and, when not ready, why.
func (s *Server) ready() (bool, string) {
	return s.readyOf(s.opts.Runtime.Status())
}

// readyOf judges readiness from one status snapshot, so that
// /api/pipelines says ready from the very stages it shows.
func (s *Server) readyOf(status []engine.PipelineStatus) (bool, string) {
	switch s.phase.Load() {
	case phaseStarting:
		return false, "starting: the pipelines are not running yet"
	case phaseStopping:
		return false, "stopping"
	}
	if reason := engine.NotReady(status); reason != "" {
		return false, reason
	}
	return true, ""
}

// Snapshot is the body of /api/pipelines.
type Snapshot struct {
	Version string    `json:"version"`
	Time    time.Time `json:"time"` // when the snapshot was taken; rates divide by its differences
	Ready   bool      `json:"ready"`
	// NotReady is /readyz's reason when Ready is false.
	NotReady   string     `json:"not_ready,omitempty"`
	LastReload *Reload    `json:"last_reload,omitempty"`
	Pipelines  []Pipeline `json:"pipelines"`

	// ConfigWatch is how the config is watched: inotify, poll (no
	// inotify instance could be had, or --watch poll) or off (--no-watch).
	ConfigWatch string `json:"config_watch,omitempty"`
}

// Pipeline is one pipeline's status and its last reload.
type Pipeline struct {
	engine.PipelineStatus
	LastReload *Reload `json:"last_reload,omitempty"`
}

// Snapshot returns what /api/pipelines serves.
func (s *Server) Snapshot() Snapshot {
	snap := Snapshot{Version: s.opts.Build.complete().Version, Time: time.Now()}
	status := s.opts.Runtime.Status()
	snap.Ready, snap.NotReady = s.readyOf(status)
	snap.ConfigWatch, _ = s.watch.Load().(string)
	var reloads map[string]Reload
	if s.opts.Reloads != nil {
		if r, ok := s.opts.Reloads.Last(); ok {
			snap.LastReload = &r
		}
		reloads = s.opts.Reloads.Pipelines()
	}
	snap.Pipelines = make([]Pipeline, 0, len(status))
	for _, p := range status {
		pl := Pipeline{PipelineStatus: p}
		if r, ok := reloads[p.Name]; ok {
			pl.LastReload = &r
		}
		snap.Pipelines = append(snap.Pipelines, pl)
	}
	return snap
}

func (s *Server) pipelines(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, s.Snapshot())
}

// writeJSON answers v as indented JSON, never cached.
func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(b, '\n'))
}

// streaming runs h with a request context that also ends when Shutdown
// begins.
func (s *Server) streaming(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(s.streams, cancel)
		defer stop()
		h(w, r.WithContext(ctx))
	}
}

func text(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	fmt.Fprintln(w, body)
}
