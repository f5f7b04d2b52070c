// Package kafka holds the `kafka` source and sink: a consumer group whose
// offsets are committed once the checkpoint covering them is saved, and
// an idempotent (optionally transactional) producer whose deliveries are
// confirmed before a checkpoint commits. Both use github.com/twmb/franz-go.
package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/tlsconf"
)

// SASLConfig is the `sasl:` option of the source and the sink.
type SASLConfig struct {
	Mechanism string `yaml:"mechanism" doc:"plain, scram-sha-256 or scram-sha-512; empty: no SASL"`
	User      string `yaml:"user" doc:"user name"`
	Password  string `yaml:"password" doc:"password; use ${VAR} to keep it out of the file"`
}

func (c *SASLConfig) validate() error {
	switch strings.ToLower(c.Mechanism) {
	case "":
		if c.User != "" || c.Password != "" {
			return stages.FieldErr("sasl.mechanism", errors.New("is required with a user or password"))
		}
		return nil
	case "plain", "scram-sha-256", "scram-sha-512":
		if c.User == "" {
			return stages.FieldErr("sasl.user", errors.New("is required"))
		}
		return nil
	default:
		return stages.FieldErr("sasl.mechanism", fmt.Errorf("unknown mechanism %q: want plain, scram-sha-256 or scram-sha-512", c.Mechanism))
	}
}

func (c *SASLConfig) mechanism() sasl.Mechanism {
	switch strings.ToLower(c.Mechanism) {
	case "plain":
		return plain.Auth{User: c.User, Pass: c.Password}.AsMechanism()
	case "scram-sha-256":
		return scram.Auth{User: c.User, Pass: c.Password}.AsSha256Mechanism()
	case "scram-sha-512":
		return scram.Auth{User: c.User, Pass: c.Password}.AsSha512Mechanism()
	}
	return nil
}

// ClusterConfig is what the source and the sink share: how to reach the
// cluster, inline in their configs (written next to their own options).
type ClusterConfig struct {
	Brokers []string             `yaml:"brokers" doc:"seed brokers, host:port (required)"`
	TLS     tlsconf.ClientConfig `yaml:"tls" doc:"TLS to the brokers"`
	SASL    SASLConfig           `yaml:"sasl" doc:"SASL authentication"`
}

// ResolvePaths implements stages.PathResolver (promoted to the configs).
func (c *ClusterConfig) ResolvePaths(dir string) { c.TLS.ResolvePaths(dir) }

// CheckFiles implements stages.FileChecker (promoted to the configs).
func (c *ClusterConfig) CheckFiles() error { return c.TLS.CheckFiles() }

func (c *ClusterConfig) validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, stages.FieldErr("brokers", errors.New("is required: list host:port seeds")))
	}
	for _, b := range c.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			errs = append(errs, stages.FieldErr("brokers", fmt.Errorf("%q is not host:port", b)))
		}
	}
	errs = append(errs, c.TLS.Validate(), c.SASL.validate())
	return errors.Join(errs...)
}

// opts are the client options of the connection; health gets told when
// a broker connection fails or succeeds.
func (c *ClusterConfig) opts(h *health, clientID string) ([]kgo.Opt, error) {
	t, err := c.TLS.Build()
	if err != nil {
		return nil, err
	}
	o := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(clientID),
		kgo.WithHooks(h),
		// Reconnects back off up to 5s, so that a broker that is down is
		// not hammered and one that returns is found again quickly.
		kgo.RetryBackoffFn(backoff),
	}
	if t != nil {
		o = append(o, kgo.DialTLSConfig(t))
	}
	if m := c.SASL.mechanism(); m != nil {
		o = append(o, kgo.SASL(m))
	}
	return o, nil
}

func backoff(tries int) time.Duration {
	d := 100 * time.Millisecond << min(tries, 6)
	return min(d, 5*time.Second)
}

// health follows the broker connections of one client (kgo hooks): the
// last dial error until a dial succeeds or records flow again.
type health struct {
	err    atomic.Pointer[error]
	auth   atomic.Pointer[error] // the last failed SASL authentication
	dnsErr atomic.Pointer[error] // a broker name that does not resolve
	// stop, when set, ends the start-up check at once on an
	// authentication failure.
	stop atomic.Pointer[context.CancelFunc]
}

var (
	_ kgo.HookBrokerConnect = (*health)(nil)
	_ kgo.HookBrokerRead    = (*health)(nil)
)

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (h *health) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		addr := net.JoinHostPort(meta.Host, fmt.Sprint(meta.Port))
		var dns *net.DNSError
		if errors.As(err, &dns) && dns.IsNotFound {
			// A wrong name rather than a broker that is down.
			derr := fmt.Errorf("broker %s: host name does not resolve: %w", addr, err)
			h.dnsErr.Store(&derr)
		}
		h.set(fmt.Errorf("cannot connect to broker %s: %w (retrying)", addr, err))
		return
	}
	h.set(nil)
}

// OnBrokerRead implements kgo.HookBrokerRead: a response read clears a
// connection error (a broker that came back).
func (h *health) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil && key == saslAuthenticateKey {
		// Some brokers close the connection on bad credentials rather
		// than answer with an error code.
		err = fmt.Errorf("SASL authentication failed: %w", err)
		h.auth.Store(&err)
		h.set(err)
		if stop := h.stop.Load(); stop != nil {
			(*stop)()
		}
		return
	}
	if err == nil && h.err.Load() != nil {
		h.set(nil)
	}
}

// saslAuthenticateKey is the Kafka API key of SASLAuthenticate.
const saslAuthenticateKey = 36

func (h *health) set(err error) {
	if err == nil {
		h.err.Store(nil)
		return
	}
	h.err.Store(&err)
}

func (h *health) get() error {
	if p := h.err.Load(); p != nil {
		return *p
	}
	return nil
}

// checkCluster asks the cluster for the metadata of topics, to turn a
// wrong credential or a missing topic into a start error (marked
// stages.Misconfigured: etld run exits 2). A cluster that
// cannot be reached is not an error: the client keeps trying (the stage
// is unhealthy meanwhile), as after a broker outage mid-run.
func checkCluster(ctx context.Context, cl *kgo.Client, h *health, topics []string, what string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	h.stop.Store(&cancel)
	defer h.stop.Store(nil)
	req := newMetadataRequest(topics)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		if isAuthError(err) {
			return stages.Misconfigured(fmt.Errorf("%s: %w", what, err))
		}
		if a := h.auth.Load(); a != nil {
			return stages.Misconfigured(fmt.Errorf("%s: %w (wrong user or password?)", what, *a))
		}
		if d := h.dnsErr.Load(); d != nil {
			return stages.Misconfigured(fmt.Errorf("%s: %w", what, *d))
		}
		if ctx.Err() != nil || isNetError(err) {
			h.set(fmt.Errorf("cluster not reachable yet: %w (retrying)", err))
			return nil
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	var missing []string
	for _, t := range resp.Topics {
		if t.ErrorCode != 0 && t.Topic != nil {
			missing = append(missing, *t.Topic)
		}
	}
	if len(missing) > 0 {
		return stages.Misconfigured(fmt.Errorf("%s: topic %s does not exist (or is not visible to this user)", what, strings.Join(missing, ", ")))
	}
	return nil
}

func isAuthError(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "SASL") || strings.Contains(msg, "sasl") || strings.Contains(msg, "uthentication") || isTLSError(err)
}

func isTLSError(err error) bool {
	var rec tls.RecordHeaderError
	var cert *tls.CertificateVerificationError
	return errors.As(err, &rec) || errors.As(err, &cert)
}

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, context.DeadlineExceeded)
}

func newMetadataRequest(topics []string) *kmsg.MetadataRequest {
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	return req
}
