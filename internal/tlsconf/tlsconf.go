// Package tlsconf turns the `tls:` option of listeners (syslog,
// http_server) and broker clients (nats, kafka) into a *tls.Config.
//
// Files are checked when the config is loaded (CheckFiles), so a missing or bad
// certificate is a config error at its FILE:LINE:COL. A server config
// re-reads its files when they change on disk (checked at most once a
// second, on the next handshake), so a renewed certificate is picked up
// without a reload; a reload of the pipeline rebuilds it anyway. A
// renewal that leaves a bad pair keeps the last good one and reports
// the error through Server.Err.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/etld/etld/internal/stages"
)

// ServerConfig is the `tls:` option of a listener.
type ServerConfig struct {
	Cert     string `yaml:"cert" doc:"PEM certificate chain of the listener; setting cert and key turns TLS on"`
	Key      string `yaml:"key" doc:"PEM private key of cert"`
	ClientCA string `yaml:"client_ca" doc:"PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)"`
}

// On reports whether TLS is configured.
func (c *ServerConfig) On() bool {
	return c != nil && (c.Cert != "" || c.Key != "" || c.ClientCA != "")
}

// ResolvePaths makes the file names absolute against dir.
func (c *ServerConfig) ResolvePaths(dir string) {
	for _, p := range []*string{&c.Cert, &c.Key, &c.ClientCA} {
		*p = abs(dir, *p)
	}
}

// Validate checks the options without opening files (the stage config's
// Validate calls it; the files are checked by CheckFiles once their paths
// are resolved). Field names are relative to the stage ("tls.cert").
func (c *ServerConfig) Validate() error {
	if c.On() && (c.Cert == "" || c.Key == "") {
		return stages.FieldErr("tls", errors.New("needs both cert and key"))
	}
	return nil
}

// CheckFiles checks that the files exist and hold a usable pair and CA
// (the stage config's CheckFiles calls it, after ResolvePaths).
func (c *ServerConfig) CheckFiles() error {
	if !c.On() {
		return nil
	}
	var errs []error
	if _, err := tls.LoadX509KeyPair(c.Cert, c.Key); err != nil {
		errs = append(errs, stages.FieldErr("tls.cert", fmt.Errorf("cannot load the certificate and key: %w", err)))
	}
	if c.ClientCA != "" {
		if _, err := loadPool(c.ClientCA); err != nil {
			errs = append(errs, stages.FieldErr("tls.client_ca", err))
		}
	}
	return errors.Join(errs...)
}

// Server is a server-side TLS config that follows its files.
type Server struct {
	cfg ServerConfig

	mu      sync.Mutex
	checked time.Time
	stamp   string // size and mtime of the files when last loaded
	current *tls.Config
	err     error
}

// NewServer loads the files of c. It returns nil, nil when TLS is off.
func NewServer(c *ServerConfig) (*Server, error) {
	if !c.On() {
		return nil, nil
	}
	s := &Server{cfg: *c}
	cur, stamp, err := s.load()
	if err != nil {
		return nil, err
	}
	s.current, s.stamp, s.checked = cur, stamp, time.Now()
	return s, nil
}

// Config returns the *tls.Config to give a listener (tls.NewListener or
// http.Server.TLSConfig); each handshake gets the newest files.
func (s *Server) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.get(), nil
		},
	}
}

// Err is the error of the last failed re-read of the files, nil when the
// files in use are the newest.
func (s *Server) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Server) get() *tls.Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.checked) < time.Second {
		return s.current
	}
	s.checked = time.Now()
	if stamp := s.stampNow(); stamp == s.stamp {
		return s.current
	}
	cur, stamp, err := s.load()
	if err != nil {
		s.err = fmt.Errorf("TLS files changed but cannot be used, keeping the previous ones: %w", err)
		return s.current
	}
	s.current, s.stamp, s.err = cur, stamp, nil
	return s.current
}

func (s *Server) stampNow() string {
	var b []byte
	for _, p := range []string{s.cfg.Cert, s.cfg.Key, s.cfg.ClientCA} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(p); err == nil {
			b = fmt.Appendf(b, "%d.%d;", fi.Size(), fi.ModTime().UnixNano())
		} else {
			b = append(b, "missing;"...)
		}
	}
	return string(b)
}

func (s *Server) load() (*tls.Config, string, error) {
	stamp := s.stampNow()
	pair, err := tls.LoadX509KeyPair(s.cfg.Cert, s.cfg.Key)
	if err != nil {
		return nil, "", fmt.Errorf("tls: %w", err)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	if s.cfg.ClientCA != "" {
		pool, err := loadPool(s.cfg.ClientCA)
		if err != nil {
			return nil, "", err
		}
		c.ClientCAs, c.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return c, stamp, nil
}

// ClientConfig is the `tls:` option of a broker client.
type ClientConfig struct {
	Enabled            bool   `yaml:"enabled" doc:"use TLS with the system's CA pool (implied by any other tls option)"`
	CA                 string `yaml:"ca" doc:"PEM CA bundle that signed the server's certificate (default: the system pool)"`
	Cert               string `yaml:"cert" doc:"PEM client certificate, for mutual TLS"`
	Key                string `yaml:"key" doc:"PEM private key of cert"`
	ServerName         string `yaml:"server_name" doc:"name to verify the server's certificate against (default: the host dialled)"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" doc:"do not verify the server's certificate (tests only: anyone in the path can read and change the traffic)"`
}

// On reports whether TLS is configured.
func (c *ClientConfig) On() bool {
	return c != nil && (c.Enabled || c.CA != "" || c.Cert != "" || c.Key != "" || c.ServerName != "" || c.InsecureSkipVerify)
}

// ResolvePaths makes the file names absolute against dir.
func (c *ClientConfig) ResolvePaths(dir string) {
	for _, p := range []*string{&c.CA, &c.Cert, &c.Key} {
		*p = abs(dir, *p)
	}
}

// Validate checks the options without opening files.
func (c *ClientConfig) Validate() error {
	if c.On() && (c.Cert == "") != (c.Key == "") {
		return stages.FieldErr("tls", errors.New("cert and key go together"))
	}
	return nil
}

// CheckFiles checks that the files exist and parse (after ResolvePaths).
func (c *ClientConfig) CheckFiles() error {
	_, err := c.Build()
	return err
}

// Build returns the client *tls.Config, or nil when TLS is off. Errors
// are FieldErrors relative to the tls option.
func (c *ClientConfig) Build() (*tls.Config, error) {
	if !c.On() {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify}
	var errs []error
	if c.CA != "" {
		pool, err := loadPool(c.CA)
		if err != nil {
			errs = append(errs, stages.FieldErr("tls.ca", err))
		}
		t.RootCAs = pool
	}
	if (c.Cert == "") != (c.Key == "") {
		errs = append(errs, stages.FieldErr("tls", errors.New("cert and key go together")))
	} else if c.Cert != "" {
		pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			errs = append(errs, stages.FieldErr("tls.cert", fmt.Errorf("cannot load the certificate and key: %w", err)))
		}
		t.Certificates = []tls.Certificate{pair}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

func abs(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}
