// Package syslog is the `syslog` source: a TCP, UDP or unix socket
// listener that receives syslog messages (RFC 6587 octet counting or
// newline framing over streams, one message per datagram) and parses them
// with the parse_syslog step.
package syslog

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/steps"
	"github.com/etld/etld/internal/tlsconf"
)

const (
	defaultAddress        = "127.0.0.1:5514"
	defaultMaxMessage     = 64 << 10
	maxMaxMessage         = 16 << 20
	defaultMaxConnections = 256
)

// Config is the config of the `syslog` source.
type Config struct {
	Mode            string               `yaml:"mode" doc:"tcp, udp or unix (a stream socket at path, framed like tcp)"`
	Address         string               `yaml:"address" doc:"host:port to listen on (tcp and udp); a loopback address unless you name another"`
	Path            string               `yaml:"path" doc:"socket file to create (unix mode); a stale socket left by a crash is replaced"`
	MaxMessageBytes stages.ByteSize      `yaml:"max_message_bytes" doc:"longest message; a longer one is a bad record (over tcp with a declared length, the connection is closed too)"`
	MaxConnections  int                  `yaml:"max_connections" doc:"connections open at once (tcp and unix); a connection over it is closed at once and counted"`
	Parse           bool                 `yaml:"parse" doc:"parse messages as parse_syslog does (RFC 5424 or 3164) and add peer, the sender's address; false: the record is the message as received"`
	Timezone        string               `yaml:"timezone" doc:"IANA time zone of RFC 3164 times, which have none (as parse_syslog's timezone)"`
	TLS             tlsconf.ServerConfig `yaml:"tls" doc:"TLS for tcp mode: {cert, key, client_ca}; files are re-read when they change"`
}

// NewConfig returns a Config with its defaults.
func NewConfig() *Config {
	return &Config{
		Mode:            "tcp",
		Address:         defaultAddress,
		MaxMessageBytes: defaultMaxMessage,
		MaxConnections:  defaultMaxConnections,
		Parse:           true,
		Timezone:        "UTC",
	}
}

// Validate implements stages.Validator.
func (c *Config) Validate() error {
	var errs []error
	switch c.Mode {
	case "tcp", "udp":
		if _, _, err := net.SplitHostPort(c.Address); err != nil {
			errs = append(errs, stages.FieldErr("address", fmt.Errorf("want host:port: %w", err)))
		}
		if c.Path != "" {
			errs = append(errs, stages.FieldErr("path", fmt.Errorf("is for mode unix, not %s", c.Mode)))
		}
	case "unix":
		if c.Path == "" {
			errs = append(errs, stages.FieldErr("path", errors.New("mode unix needs the path of the socket")))
		}
	default:
		errs = append(errs, stages.FieldErr("mode", fmt.Errorf("want tcp, udp or unix, got %q", c.Mode)))
	}
	if c.MaxMessageBytes <= 0 || c.MaxMessageBytes > maxMaxMessage {
		errs = append(errs, stages.FieldErr("max_message_bytes",
			fmt.Errorf("must be between 1 and %v, got %d", stages.ByteSize(maxMaxMessage), int64(c.MaxMessageBytes))))
	}
	if c.MaxConnections <= 0 {
		errs = append(errs, stages.FieldErr("max_connections", fmt.Errorf("must be at least 1, got %d", c.MaxConnections)))
	}
	if err := c.TLS.Validate(); err != nil {
		errs = append(errs, err)
	} else if c.TLS.On() && c.Mode != "tcp" {
		errs = append(errs, stages.FieldErr("tls", fmt.Errorf("is for mode tcp, not %s", c.Mode)))
	}
	if _, err := c.parser(); err != nil {
		var fe *stages.FieldError
		if errors.As(err, &fe) {
			err = fe.Err
		}
		errs = append(errs, stages.FieldErr("timezone", err))
	}
	return errors.Join(errs...)
}

// parser is the parse_syslog step that parses messages.
func (c *Config) parser() (stages.Step, error) {
	return steps.NewParseSyslog(&steps.ParseSyslogConfig{Timezone: c.Timezone})
}

// ResolvePaths implements stages.PathResolver.
func (c *Config) ResolvePaths(dir string) {
	if c.Path != "" && !filepath.IsAbs(c.Path) {
		c.Path = filepath.Join(dir, c.Path)
	}
	c.TLS.ResolvePaths(dir)
}

// CheckFiles implements stages.FileChecker: the TLS files.
func (c *Config) CheckFiles() error { return c.TLS.CheckFiles() }

// ProducesFields implements stages.FieldsProducer.
func (c *Config) ProducesFields() bool { return c.Parse }

// Finite implements stages.Finiter: a listener never ends by itself.
func (c *Config) Finite() bool { return false }

// Factories returns the factory of the syslog source.
func Factories() []stages.Factory {
	return []stages.Factory{{
		Kind: stages.KindSource,
		Type: "syslog",
		Doc: "Receives syslog messages over TCP (RFC 6587 octet counting or newline framing, detected per message; " +
			"optionally TLS), UDP or a unix socket, and parses them like parse_syslog, adding peer. " +
			"There is no acknowledgement: messages received but not yet committed are lost if etld crashes.",
		NewConfig: func() any { return NewConfig() },
		NewSource: func(s stages.Settings, cfg any) (stages.Source, error) {
			c, ok := cfg.(*Config)
			if !ok {
				return nil, fmt.Errorf("syslog source %q: config is %T, want *Config", s.ID, cfg)
			}
			return newSource(s, c)
		},
	}}
}
