package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTapCommand: the arguments and flags, in any order, become the
// /api/tap query; the stream is printed line by line; the server's
// refusals become exit codes.
func TestTapCommand(t *testing.T) {
	var got []string // queries and Authorization headers received
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.RawQuery+" auth="+r.Header.Get("Authorization"))
		switch r.URL.Query().Get("stage") {
		case "nope":
			http.Error(w, `tap: pipeline "p" has no stage "nope"`, http.StatusNotFound)
		case "busy":
			http.Error(w, "tap: too many taps: at most 8 at once", http.StatusTooManyRequests)
		default:
			w.Write([]byte("{\"a\":1}\n{\"_tap_missed\":3}\n\"text line\"\n"))
		}
	}))
	defer srv.Close()
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args      []string
		code      int
		query     string
		stdout    string
		stderrHas string
	}{
		{[]string{"p", "w.errors", "--limit", "5", "--filter", "a > 1"}, 0,
			"filter=a+%3E+1&limit=5&pipeline=p&route=errors&stage=w auth=", "{\"a\":1}\n{\"_tap_missed\":3}\n\"text line\"\n", ""},
		{[]string{"--limit", "2", "p", "--admin-token-file", token, "w"}, 0, "limit=2&pipeline=p&stage=w auth=Bearer tok", "", ""},
		{[]string{"p", "--dead-letter"}, 0, "dead_letter=true&pipeline=p auth=", "", ""},
		{[]string{"p", "nope"}, 2, "pipeline=p&stage=nope auth=", "", `etld tap: pipeline "p" has no stage "nope" (HTTP 404)`},
		{[]string{"p", "busy"}, 1, "pipeline=p&stage=busy auth=", "", "too many taps"},
		{[]string{"p"}, 2, "", "", "want PIPELINE and STAGE"},
		{[]string{"p", "w", "x"}, 2, "", "", "want PIPELINE and STAGE"},
		{[]string{"p", "w", "--limit", "-1"}, 2, "", "", "--limit must not be negative"},
	} {
		got = nil
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"tap", "--admin", srv.URL}, c.args...), &stdout, &stderr)
		if code != c.code {
			t.Errorf("tap %s: exit %d, want %d (stderr %q)", strings.Join(c.args, " "), code, c.code, stderr.String())
		}
		if c.query != "" && (len(got) != 1 || got[0] != c.query) {
			t.Errorf("tap %s: requests %q, want %q", strings.Join(c.args, " "), got, c.query)
		}
		if c.query == "" && len(got) != 0 {
			t.Errorf("tap %s: sent %q, want no request", strings.Join(c.args, " "), got)
		}
		if c.stdout != "" && stdout.String() != c.stdout {
			t.Errorf("tap %s: stdout %q, want %q", strings.Join(c.args, " "), stdout.String(), c.stdout)
		}
		if !strings.Contains(stderr.String(), c.stderrHas) {
			t.Errorf("tap %s: stderr %q, want %q", strings.Join(c.args, " "), stderr.String(), c.stderrHas)
		}
	}
}
