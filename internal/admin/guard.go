package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

// Guard protects the endpoints that reveal more than counters (a reload
// plan, record contents): on a loopback address they are open, as the
// rest of the admin API; on any other address they need the bearer
// token of --admin-token-file, and without one they are disabled.
// /metrics, /healthz and /readyz are never guarded.
type Guard struct {
	// Token is the bearer token; empty (and no TokenFile) disables
	// guarded endpoints off loopback.
	Token []byte
	// TokenFile, when set, holds the token instead: it is read at every
	// request, so that a new token takes effect without a restart.
	TokenFile string
	// Loopback reports whether the server listens on a loopback
	// address; nil judges each request by the address it came in on.
	Loopback func(*http.Request) bool
}

// Wrap returns h behind the guard.
func (g Guard) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.loopback(r) {
			h.ServeHTTP(w, r)
			return
		}
		want := g.Token
		if g.TokenFile != "" {
			tok, err := ReadToken(g.TokenFile)
			if err != nil {
				text(w, http.StatusServiceUnavailable, "admin token unavailable: "+err.Error())
				return
			}
			want = []byte(tok)
		}
		if len(want) == 0 {
			text(w, http.StatusForbidden, "disabled: the admin address is not a loopback address and etld runs without --admin-token-file")
			return
		}
		auth := r.Header.Get("Authorization")
		token, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || !matches(want, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="etld"`)
			text(w, http.StatusUnauthorized, "unauthorized: want the token of --admin-token-file as Authorization: Bearer TOKEN")
			return
		}
		h.ServeHTTP(w, r)
	})
}

// matches compares in constant time; hashing first hides the length too.
func matches(token []byte, given string) bool {
	want := sha256.Sum256(token)
	got := sha256.Sum256([]byte(strings.TrimSpace(given)))
	return subtle.ConstantTimeCompare(want[:], got[:]) == 1
}

// ReadToken reads a bearer token file (--admin-token-file): its content,
// surrounding white space removed, must not be empty. The daemon and the
// commands that talk to it (etld plan, etld tap) read it alike.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin token file %s is empty", path)
	}
	return tok, nil
}

func (g Guard) loopback(r *http.Request) bool {
	if g.Loopback != nil {
		return g.Loopback(r)
	}
	return cameInOnLoopback(r)
}

func cameInOnLoopback(r *http.Request) bool {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return ok && isLoopback(a)
}
