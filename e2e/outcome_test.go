package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etld/etld/internal/notify/notifytest"
)

// TestReloadInPlaceReportedAsSuccess (issue 12, bug 1): a reload that
// changes a worker's `set` value reconfigures the pipeline in place, and
// every report says it succeeded: /api/pipelines (overall and for the
// pipeline, with action reconfigured), `etld status`, and systemd's
// READY=1/STATUS= lines. The records are each written once, the new
// value from a cut on.
//
// Not parallel: etld gets $NOTIFY_SOCKET from the test's environment.
func TestReloadInPlaceReportedAsSuccess(t *testing.T) {
	_, msgs := notifytest.Listen(t, true)
	t.Setenv("WATCHDOG_USEC", "")
	t.Setenv("WATCHDOG_PID", "")
	dir := t.TempDir()
	in, out := filepath.Join(dir, "logs", "app.log"), filepath.Join(dir, "out", "out.jsonl")
	// The config has a directory of its own: nothing else is written
	// next to it, so the only reload is the one the test makes.
	cfg := writeConfig(t, filepath.Join(dir, "conf"), "p.yaml", rlConfig(in, out, "v1"))
	r := rlStartRun(t, dir, cfg, in, out)
	if m := notifytest.Next(t, msgs, "READY=1 at start", notifytest.Lifecycle); !strings.HasPrefix(m, "READY=1") {
		t.Fatalf("first notification %q; want READY=1", m)
	}

	rlReloadInPlace(r, func() { rlSaveRename(t, cfg, rlConfig(in, out, "v2")) })
	after := r.w.n()
	r.awaitSeq(after + 300)

	if m := notifytest.Next(t, msgs, "RELOADING=1", notifytest.Lifecycle); !strings.HasPrefix(m, "RELOADING=1") {
		t.Errorf("notification after READY=1: %q; want RELOADING=1", m)
	}
	m := notifytest.Next(t, msgs, "READY=1 after the reload", notifytest.Lifecycle)
	if !strings.HasPrefix(m, "READY=1\nSTATUS=") || !strings.HasSuffix(m, ": ok") {
		t.Errorf("notification after the reload: %q; want READY=1 with a STATUS= ending in \": ok\"", m)
	}
	st := notifytest.Next(t, msgs, "STATUS= after the reload", func(m string) bool { return strings.HasPrefix(m, "STATUS=") })
	if strings.Contains(st, "FAILED") || !strings.Contains(st, "last config load") {
		t.Errorf("STATUS= after the reload: %q; want the last config load, not FAILED", st)
	}

	overall, pipe := rlLastReloads(t, r.addr, r.name)
	if overall == nil || overall.Result != "success" || overall.Error != "" {
		t.Errorf("/api/pipelines last_reload = %+v; want result success and no error", overall)
	}
	if pipe == nil || pipe.Result != "success" || pipe.Action != "reconfigured" || pipe.Error != "" {
		t.Errorf("/api/pipelines pipeline %s last_reload = %+v; want result success, action reconfigured, no error", r.name, pipe)
	}
	status, err := exec.Command(etldBin, "status", "--admin", r.addr).CombinedOutput()
	if err != nil {
		t.Errorf("etld status: %v\n%s", err, status)
	}
	if !strings.Contains(string(status), "last config load ") || strings.Contains(strings.ToLower(string(status)), "fail") {
		t.Errorf("etld status after a successful reload:\n%s\nwant the last config load and no failure", status)
	}

	total := r.finish()
	checkExactlyOnce(t, "output", r.w.keys(total), r.o.keys())
	rlCheckSwitch(t, "output", r.o.poll(), "v1", "v2", after)
	r.checkInPlace(1)
}
