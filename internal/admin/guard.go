package admin

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// readToken reads a bearer token file: its content, surrounding white
// space removed, must not be empty.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin token: %s is empty", path)
	}
	return tok, nil
}

// requireToken guards an endpoint that exposes record contents (the tap):
// with a token file (Options.TokenFile) a request needs
// "Authorization: Bearer TOKEN", compared in constant time (401
// otherwise); without one the endpoint is served on a loopback address
// only and answers 403 elsewhere. The file is read on every request, so
// that a new token takes effect without a restart.
func (s *Server) requireToken(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.opts.TokenFile == "" {
			if s.exposed.Load() {
				text(w, http.StatusForbidden, "disabled: the admin address is not a loopback address; "+
					"start etld with --admin-token-file to enable it with a bearer token")
				return
			}
			h(w, r)
			return
		}
		want, err := readToken(s.opts.TokenFile)
		if err != nil {
			s.log.Error().Err(err).Msg("cannot read the admin token")
			text(w, http.StatusServiceUnavailable, "admin token unavailable (see the log)")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(want)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="etld"`)
			text(w, http.StatusUnauthorized, "unauthorized: a bearer token is required (Authorization: Bearer TOKEN)")
			return
		}
		h(w, r)
	}
}
