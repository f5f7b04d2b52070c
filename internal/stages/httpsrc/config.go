// Package httpsrc is the `http_server` source: services POST records to
// it, and with `ack: checkpoint` the answer 200 means the records are
// durable in the pipeline's sinks.
package httpsrc

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/tlsconf"
)

// Acknowledgement modes.
const (
	AckCheckpoint = "checkpoint"
	AckReceived   = "received"
)

const (
	defaultAddress    = "127.0.0.1:8080"
	defaultMaxBody    = 10 << 20
	defaultMaxLine    = 1 << 20
	defaultMaxConns   = 256
	defaultAckTimeout = 30 * time.Second
	maxMaxBody        = 1 << 30
	defaultRetryAfter = 1 // seconds, in a 503's Retry-After
	maxBatchRecords   = 1024
	maxBatchBytes     = 256 << 10
	shutdownGrace     = 5 * time.Second
)

// Config is the config of the `http_server` source.
type Config struct {
	Address        string               `yaml:"address" doc:"host:port to listen on; the default binds loopback only, set 0.0.0.0:8080 (or a host's address) to take requests from other machines"`
	Path           string               `yaml:"path" doc:"URL path that takes records; other paths answer 404"`
	Ack            string               `yaml:"ack" doc:"when a request is answered 200: checkpoint (once a saved checkpoint covers every record of the body: acknowledged means durable) or received (once the pipeline took the records: a crash can lose them)"`
	AckTimeout     time.Duration        `yaml:"ack_timeout" doc:"longest wait for the pipeline to take a body and, with ack: checkpoint, for the checkpoint covering it; then the answer is 503 with Retry-After and the client should send the body again"`
	MaxBodyBytes   stages.ByteSize      `yaml:"max_body_bytes" doc:"largest request body; a larger one is answered 413 and nothing of it is written"`
	MaxLineBytes   stages.ByteSize      `yaml:"max_line_bytes" doc:"longest line of a text or NDJSON body; a longer line is a bad record that keeps its first max_line_bytes bytes (counted in the answer's rejected)"`
	MaxConnections int                  `yaml:"max_connections" doc:"most client connections open at once; more wait to be accepted"`
	Auth           AuthConfig           `yaml:"auth" doc:"client authentication (none by default)"`
	TLS            tlsconf.ServerConfig `yaml:"tls" doc:"serve HTTPS; the certificate files are re-read when they change"`
}

// AuthConfig is the `auth:` option.
type AuthConfig struct {
	BearerToken string `yaml:"bearer_token" doc:"token clients send as 'Authorization: Bearer TOKEN'; a request without it is answered 401 (use ${VAR} to keep it out of the file)"`
}

// NewConfig returns a Config with its defaults.
func NewConfig() *Config {
	return &Config{
		Address:        defaultAddress,
		Path:           "/",
		Ack:            AckCheckpoint,
		AckTimeout:     defaultAckTimeout,
		MaxBodyBytes:   defaultMaxBody,
		MaxLineBytes:   defaultMaxLine,
		MaxConnections: defaultMaxConns,
	}
}

// Validate implements stages.Validator.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, a ...any) {
		errs = append(errs, stages.FieldErr(field, fmt.Errorf(format, a...)))
	}
	if _, port, err := net.SplitHostPort(c.Address); err != nil {
		add("address", "want host:port (127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080), got %q", c.Address)
	} else if port == "" {
		add("address", "%q has no port", c.Address)
	}
	if !strings.HasPrefix(c.Path, "/") {
		add("path", "must start with /, got %q", c.Path)
	}
	if c.Ack != AckCheckpoint && c.Ack != AckReceived {
		add("ack", "must be %s or %s, got %q", AckCheckpoint, AckReceived, c.Ack)
	}
	if c.AckTimeout <= 0 {
		add("ack_timeout", "must be positive, got %v", c.AckTimeout)
	}
	if c.MaxBodyBytes <= 0 || c.MaxBodyBytes > maxMaxBody {
		add("max_body_bytes", "must be between 1 and %v, got %d", stages.ByteSize(maxMaxBody), int64(c.MaxBodyBytes))
	}
	if c.MaxLineBytes <= 0 {
		add("max_line_bytes", "must be positive, got %d", int64(c.MaxLineBytes))
	}
	if c.MaxConnections < 1 {
		add("max_connections", "must be at least 1, got %d", c.MaxConnections)
	}
	if c.Auth.BearerToken != "" && strings.ContainsAny(c.Auth.BearerToken, " \t\r\n") {
		add("auth.bearer_token", "must not contain white space")
	}
	if err := c.TLS.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ResolvePaths implements stages.PathResolver (the TLS files).
func (c *Config) ResolvePaths(dir string) { c.TLS.ResolvePaths(dir) }

// CheckFiles implements stages.FileChecker (the TLS files).
func (c *Config) CheckFiles() error { return c.TLS.CheckFiles() }

// Factory returns the `http_server` source type.
func Factory() stages.Factory {
	return stages.Factory{
		Kind: stages.KindSource,
		Type: "http_server",
		Doc: "Takes records POSTed over HTTP: text/plain or application/x-ndjson bodies of lines, " +
			"or application/json (one object or an array of objects, already parsed); with ack: checkpoint " +
			"a request is answered 200 once its records are durable.",
		NewConfig: func() any { return NewConfig() },
		NewSource: func(s stages.Settings, cfg any) (stages.Source, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("http_server source %q: config is %T, want *Config", s.ID, cfg)
			}
			return New(s, c), nil
		},
	}
}

// All returns the factories of this package, for the builtin registry.
func All() []stages.Factory { return []stages.Factory{Factory()} }
