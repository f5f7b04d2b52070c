// Package nats holds the `nats` source and sink: NATS JetStream, with
// acknowledgements tied to etld's checkpoints.
//
// The source pulls from a durable consumer with explicit acks and acks a
// message only once a checkpoint covering it has been saved; the sink
// publishes asynchronously with a Nats-Msg-Id stable per record and waits
// for every publish ack before a checkpoint commits. Both keep working
// while the server is away: the client reconnects by itself, the stage
// reports itself unhealthy meanwhile, nothing is dropped.
package nats

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/tlsconf"
)

// ConnConfig are the connection options both stages have, inline in
// their configs (the options are written next to the stage's own).
type ConnConfig struct {
	URL      string               `yaml:"url" doc:"server URL(s), comma-separated (nats://host:4222, tls://host:4222)"`
	Creds    string               `yaml:"creds" doc:"NATS credentials file (JWT and NKey seed); relative to the pipeline file's directory"`
	User     string               `yaml:"user" doc:"user name, with password"`
	Password string               `yaml:"password" doc:"password of user; write ${VAR} to keep it out of the file"`
	Token    string               `yaml:"token" doc:"authentication token; write ${VAR} to keep it out of the file"`
	TLS      tlsconf.ClientConfig `yaml:"tls" doc:"TLS to the server (on with any of its options, or with a tls:// URL)"`
	Timeout  time.Duration        `yaml:"timeout" doc:"bound on connecting and on each request to the server: stream and consumer lookups, the source's ack confirmations, the sink's first wait for publish acks (late acks are waited for twice as long at each flush, up to 32 timeouts; only then is a publish sent again)"`
}

const (
	defaultURL     = "nats://127.0.0.1:4222"
	defaultTimeout = 5 * time.Second
)

func (c *ConnConfig) validate() error {
	var errs []error
	if strings.TrimSpace(c.URL) == "" {
		errs = append(errs, stages.FieldErr("url", errors.New("required")))
	}
	for u := range strings.SplitSeq(c.URL, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		p, err := url.Parse(u)
		switch {
		case err != nil:
			errs = append(errs, stages.FieldErr("url", fmt.Errorf("%q: %v", u, err)))
		case p.Scheme != "nats" && p.Scheme != "tls" && p.Scheme != "ws" && p.Scheme != "wss":
			errs = append(errs, stages.FieldErr("url", fmt.Errorf("%q: the scheme must be nats, tls, ws or wss", u)))
		case p.Host == "":
			errs = append(errs, stages.FieldErr("url", fmt.Errorf("%q: no host", u)))
		}
	}
	n := 0
	for _, set := range []bool{c.Creds != "", c.User != "" || c.Password != "", c.Token != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, stages.FieldErr("creds", errors.New("creds, user/password and token are alternatives: set one")))
	}
	if (c.User == "") != (c.Password == "") {
		errs = append(errs, stages.FieldErr("user", errors.New("user and password go together")))
	}
	if c.Timeout <= 0 {
		errs = append(errs, stages.FieldErr("timeout", fmt.Errorf("must be positive, got %v", c.Timeout)))
	}
	return errors.Join(append(errs, c.TLS.Validate())...)
}

// resolvePaths makes the credentials and TLS file names absolute.
func resolvePaths(dir string, creds *string, tls *tlsconf.ClientConfig) {
	if *creds != "" && !filepath.IsAbs(*creds) {
		*creds = filepath.Join(dir, *creds)
	}
	tls.ResolvePaths(dir)
}

func (c *ConnConfig) checkFiles() error {
	var errs []error
	if c.Creds != "" {
		if _, err := os.ReadFile(c.Creds); err != nil {
			errs = append(errs, stages.FieldErr("creds", err))
		}
	}
	return errors.Join(append(errs, c.TLS.CheckFiles())...)
}

// conn is one client connection and the stage's view of its health.
type conn struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	health atomic.Pointer[error] // the connection's
	fault  atomic.Pointer[error] // the stage's (see setFault)
	what   string                // "nats source \"in\"", for errors
}

// setHealth records why the stage does not work (nil: it does).
func (c *conn) setHealth(err error) {
	if err == nil {
		c.health.Store(nil)
		return
	}
	c.health.Store(&err)
}

// setFault records why the stage's own work fails while the connection
// is up (a missing stream, a failing read or publish); nil: it works.
func (c *conn) setFault(err error) {
	if err == nil {
		if c.fault.Load() != nil {
			c.fault.Store(nil)
		}
		return
	}
	c.fault.Store(&err)
}

// report is the stage's Health: the connection's state first, then the
// stage's fault.
func (c *conn) report() error {
	if p := c.health.Load(); p != nil {
		return *p
	}
	if p := c.fault.Load(); p != nil {
		return *p
	}
	return nil
}

// dial connects. A server that cannot be reached is not an error: the
// connection keeps retrying in the background (reconnecting, with backoff)
// and the stage reports it as unhealthy until it is up. A server that
// answers but refuses (credentials, TLS) is an error: that is a
// configuration problem, not an outage.
func (c *conn) dial(ctx context.Context, cfg *ConnConfig, s stages.Settings, jsOpts ...jetstream.JetStreamOpt) error {
	what := c.what
	opts := []nats.Option{
		nats.Name("etld " + s.Pipeline + "/" + s.ID),
		nats.Timeout(cfg.Timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.ReconnectBufSize(32 << 20),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // closed by the stage
			}
			if err == nil {
				err = errors.New("connection closed")
			}
			c.setHealth(fmt.Errorf("disconnected from %s: %v; reconnecting", cfg.URL, err))
			s.Logger.Warn().Err(err).Str("url", cfg.URL).Msg("nats: disconnected; reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.setHealth(nil)
			s.Logger.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("nats: reconnected")
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			c.setHealth(nil)
			s.Logger.Info().Str("url", nc.ConnectedUrlRedacted()).Msg("nats: connected")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.Logger.Warn().Err(err).Msg("nats: asynchronous error")
		}),
	}
	switch {
	case cfg.Creds != "":
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	tc, err := cfg.TLS.Build()
	if err != nil {
		return fmt.Errorf("%s: tls: %w", what, err)
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if errors.Is(err, nats.ErrNoServers) || isDialError(err) {
		// Down: retry in the background.
		s.Logger.Warn().Err(err).Str("url", cfg.URL).Msg("nats: server unreachable; retrying")
		c.setHealth(fmt.Errorf("cannot reach %s: %v; retrying", cfg.URL, err))
		nc, err = nats.Connect(cfg.URL, append(opts, nats.RetryOnFailedConnect(true))...)
	}
	if err != nil {
		return fmt.Errorf("%s: connect to %s: %w", what, cfg.URL, err)
	}
	js, err := jetstream.New(nc, jsOpts...)
	if err != nil {
		nc.Close()
		return fmt.Errorf("%s: %w", what, err)
	}
	c.nc, c.js = nc, js
	return nil
}

// isDialError reports an error of reaching the server (as opposed to the
// server refusing us).
func isDialError(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	for _, s := range []string{"connection refused", "no route to host", "i/o timeout", "network is unreachable", "no such host", "connection reset"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// down reports whether err comes from the server being away (so the
// stage retries) rather than from what the server answered.
func down(nc *nats.Conn, err error) bool {
	if err == nil {
		return false
	}
	return !nc.IsConnected() || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) && !nc.IsConnected()
}

func (c *conn) close() {
	if c.nc != nil {
		c.nc.Close()
	}
}

// openErr is an Open failure: a configuration error (exit 2 at start)
// unless Open was cancelled.
func openErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return err
	}
	return stages.Misconfigured(err)
}

// backoff returns the wait before retry n (0-based): 100ms doubling to 5s.
func backoff(n int) time.Duration {
	d := 100 * time.Millisecond << min(n, 6)
	return min(d, 5*time.Second)
}
