package journald

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/journald/journaltest"
)

// Following a journal file while entries are appended, then resuming
// from the checkpoint after more were appended: every entry once, in
// order.
func TestFollowAndResume(t *testing.T) {
	j := newJournal(t)
	j.add(journaltest.Boot1, 0, 1500)
	c := j.config(nil)
	src := open(t, c, nil)
	g := &got{}
	readN(t, src, g, 1500)
	j.add(journaltest.Boot1, 1500, 700)
	readN(t, src, g, 2200)
	if !slices.Equal(g.keys, journaltest.Keys(journaltest.Boot1, 0, 2200)) {
		t.Fatalf("read %d records, not entries 0..2199 in order: ...%v", len(g.keys), tailKeys(g.keys))
	}
	st, err := src.State()
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}

	j.add(journaltest.Boot1, 2200, 300)
	next := open(t, c, st)
	g2 := &got{}
	readN(t, next, g2, 300)
	if !slices.Equal(g2.keys, journaltest.Keys(journaltest.Boot1, 2200, 300)) {
		t.Fatalf("after Restore: %v..., want entries 2200..2499", g2.keys[:min(5, len(g2.keys))])
	}
	expectQuiet(t, next)
	if len(g.rejects)+len(g2.rejects) > 0 {
		t.Errorf("rejects: %v", append(g.rejects, g2.rejects...))
	}
}

// expectQuiet checks that a following source has nothing more: a Read
// that journalctl would have answered by now returns nothing. Only a
// missing failure can slip through if the machine is slow, never a false
// one.
func expectQuiet(t testing.TB, src stages.Source) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if b, err := src.Read(ctx); b != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Read returned %v, %v; want nothing more", b, err)
	}
}

// Two boots in one journal: current_boot_only reads the last one, false
// (--merge) reads both, followed or not.
func TestBoots(t *testing.T) {
	j := newJournal(t)
	j.add(journaltest.Boot1, 0, 10)
	j.add(journaltest.Boot2, 10, 10)
	both := append(journaltest.Keys(journaltest.Boot1, 0, 10), journaltest.Keys(journaltest.Boot2, 10, 10)...)
	for _, tc := range []struct {
		name        string
		currentBoot bool
		want        []string
	}{
		{"current_boot_only", true, journaltest.Keys(journaltest.Boot2, 10, 10)},
		{"all_boots", false, both},
	} {
		t.Run(tc.name+"/once", func(t *testing.T) {
			src := open(t, j.config(func(c *Config) { c.CurrentBootOnly, c.Follow = tc.currentBoot, false }), nil)
			if g := readToEnd(t, src); !slices.Equal(g.keys, tc.want) {
				t.Errorf("read %v, want %v", g.keys, tc.want)
			}
		})
		t.Run(tc.name+"/follow", func(t *testing.T) {
			src := open(t, j.config(func(c *Config) { c.CurrentBootOnly = tc.currentBoot }), nil)
			g := &got{}
			readN(t, src, g, len(tc.want))
			if !slices.Equal(g.keys, tc.want) {
				t.Errorf("read %v, want %v", g.keys, tc.want)
			}
		})
	}
}

// A checkpoint taken in one boot, then a reboot: with current_boot_only
// the source resumes at the first entry of the new boot. (journalctl
// --after-cursor loses that entry: its cursor is outside --boot.)
func TestResumeAfterReboot(t *testing.T) {
	for _, follow := range []bool{false, true} {
		t.Run(map[bool]string{false: "once", true: "follow"}[follow], func(t *testing.T) {
			j := newJournal(t)
			j.add(journaltest.Boot1, 0, 10)
			c := j.config(func(c *Config) { c.Follow = follow })
			first := open(t, c, nil)
			g := &got{}
			readN(t, first, g, 10)
			st, err := first.State()
			if err != nil {
				t.Fatal(err)
			}
			if err := first.Close(); err != nil {
				t.Fatal(err)
			}
			j.add(journaltest.Boot2, 10, 10)
			next := open(t, c, st)
			g2 := &got{}
			if follow {
				readN(t, next, g2, 10)
			} else {
				g2 = readToEnd(t, next)
			}
			if want := journaltest.Keys(journaltest.Boot2, 10, 10); !slices.Equal(g2.keys, want) {
				t.Errorf("after the reboot: read %v, want %v", g2.keys, want)
			}
		})
	}
}

// start_at: end skips what the journal holds: whatever comes first is an
// entry appended after the start, and nothing is skipped after it.
func TestStartAtEnd(t *testing.T) {
	j := newJournal(t)
	j.add(journaltest.Boot1, 0, 10)
	src := open(t, j.config(func(c *Config) { c.StartAt = StartAtEnd }), nil)
	g := &got{}
	next := 10
	for len(g.keys) == 0 {
		j.add(journaltest.Boot1, next, 5)
		next += 5
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		b, err := src.Read(ctx)
		cancel()
		if err == nil {
			g.add(t, b)
		}
	}
	j.add(journaltest.Boot1, next, 5)
	next += 5
	firstSeq := strings.TrimPrefix(g.keys[0], "b1-")
	var from int
	for i := 10; i < next; i++ {
		if journaltest.Keys(journaltest.Boot1, i, 1)[0] == g.keys[0] {
			from = i
		}
	}
	if from < 10 {
		t.Fatalf("start_at end: first record is entry %s, which was in the journal before the start", firstSeq)
	}
	readN(t, src, g, next-from)
	if want := journaltest.Keys(journaltest.Boot1, from, next-from); !slices.Equal(g.keys, want) {
		t.Errorf("read %v, want %v", g.keys, want)
	}
}

// script writes an executable shell script standing in for journalctl.
func script(t testing.TB, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journalctl")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// journalctl failing to run (here: exiting with status 3 until a file
// exists) makes the stage unhealthy, with journalctl's message, and
// restarted with backoff; once it runs, entries flow and the stage is
// healthy again.
func TestJournalctlFailsThenRecovers(t *testing.T) {
	j := newJournal(t)
	j.add(journaltest.Boot1, 0, 10)
	ok := filepath.Join(t.TempDir(), "ok")
	real, err := exec.LookPath("journalctl")
	if err != nil {
		t.Skip(err)
	}
	fake := script(t, `[ -e "`+ok+`" ] || { echo "fake journalctl: not yet" >&2; exit 3; }
exec `+real+` "$@"
`)
	src := open(t, j.config(func(c *Config) { c.JournalctlPath = fake }), nil)
	eventually(t, "the stage to be unhealthy after two failed starts", func() bool {
		return src.Health() != nil && restarts(src) >= 2
	})
	if msg := src.Health().Error(); !strings.Contains(msg, "exit status 3: fake journalctl: not yet") || !strings.Contains(msg, "restarting it in") {
		t.Errorf("Health() = %q, want journalctl's status and message", msg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := src.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read while journalctl fails: %v, want context.Canceled", err)
	}

	if err := os.WriteFile(ok, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	g := &got{}
	readN(t, src, g, 10)
	if want := journaltest.Keys(journaltest.Boot1, 0, 10); !slices.Equal(g.keys, want) {
		t.Errorf("read %v, want %v", g.keys, want)
	}
	eventually(t, "the stage to be healthy again", func() bool { return src.Health() == nil })
}

// journalctl exiting in the middle of following (here: the first run
// does not follow) is restarted at the next entry: nothing twice, nothing
// lost.
func TestJournalctlExitsResumesAtCursor(t *testing.T) {
	j := newJournal(t)
	j.add(journaltest.Boot1, 0, 100)
	real, err := exec.LookPath("journalctl")
	if err != nil {
		t.Skip(err)
	}
	once := filepath.Join(t.TempDir(), "once")
	fake := script(t, `if [ ! -e "`+once+`" ]; then
	: > "`+once+`"
	for a; do shift; [ "$a" = --follow ] || set -- "$@" "$a"; done
fi
exec `+real+` "$@"
`)
	src := open(t, j.config(func(c *Config) { c.JournalctlPath = fake }), nil)
	g := &got{}
	readN(t, src, g, 100)
	eventually(t, "journalctl to be restarted", func() bool { return restarts(src) >= 1 })
	j.add(journaltest.Boot1, 100, 50)
	readN(t, src, g, 150)
	if want := journaltest.Keys(journaltest.Boot1, 0, 150); !slices.Equal(g.keys, want) {
		t.Errorf("read ...%v, want entries 0..149 once each", tailKeys(g.keys))
	}
	expectQuiet(t, src)
}

// A journalctl_path that does not exist: unhealthy, Read waits, Close
// returns.
func TestJournalctlMissing(t *testing.T) {
	c := NewConfig()
	c.JournalctlPath = filepath.Join(t.TempDir(), "no-journalctl")
	src := open(t, c, nil)
	eventually(t, "the stage to be unhealthy", func() bool { return src.Health() != nil })
	if msg := src.Health().Error(); !strings.Contains(msg, "start journalctl") || !strings.Contains(msg, "no-journalctl") {
		t.Errorf("Health() = %q", msg)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
}

// What journalctl prints besides entries: its notes are skipped, a line
// that is not a JSON object and an entry over max_line_bytes are bad
// records.
func TestBadLines(t *testing.T) {
	long := `{"__CURSOR":"s=a;i=3","MESSAGE":"` + strings.Repeat("x", 200) + `"}`
	fake := script(t, `cat <<'EOF'
{"__CURSOR":"s=a;i=1","MESSAGE":"one"}
not json
`+long+`
{"MESSAGE":"four","__CURSOR":"s=a;i=4"}
-- cursor: s=a;i=4
EOF
`)
	c := NewConfig()
	c.JournalctlPath, c.Follow, c.MaxLineBytes = fake, false, 100
	src := open(t, c, nil)
	g := readToEnd(t, src)
	recs, rejects := g.raws, g.rejects
	want := []string{`{"__CURSOR":"s=a;i=1","MESSAGE":"one"}`, `{"MESSAGE":"four","__CURSOR":"s=a;i=4"}`}
	if !slices.Equal(recs, want) {
		t.Errorf("records %q, want %q", recs, want)
	}
	if len(rejects) != 2 {
		t.Fatalf("rejects %v, want 2", rejects)
	}
	if string(rejects[0].Record.Raw) != "not json" || !strings.Contains(rejects[0].Err.Error(), "not a JSON object") {
		t.Errorf("reject 0: %q %v", rejects[0].Record.Raw, rejects[0].Err)
	}
	if r := rejects[1]; len(r.Record.Raw) != 100 || r.Length != int64(len(long)) || !strings.Contains(r.Err.Error(), "max_line_bytes") {
		t.Errorf("reject 1: %d bytes, Length %d, %v", len(r.Record.Raw), r.Length, r.Err)
	}
	st, _ := src.State()
	if string(st) != `{"cursor":"s=a;i=4"}` {
		t.Errorf("State = %s", st)
	}
}

func TestArgs(t *testing.T) {
	for _, tc := range []struct {
		edit   func(*Config)
		cursor string
		want   string
	}{
		{nil, "", "--output=json --show-cursor --no-pager --follow --boot --no-tail"},
		{func(c *Config) { c.CurrentBootOnly, c.Directory = false, "/j" }, "", "--output=json --show-cursor --no-pager --follow --directory=/j --merge --no-tail"},
		{func(c *Config) { c.Units, c.StartAt = []string{"a.service", "b.service"}, StartAtEnd }, "", "--output=json --show-cursor --no-pager --follow --boot --unit=a.service --unit=b.service --lines=0"},
		{func(c *Config) { c.Follow, c.StartAt = false, StartAtEnd }, "s=1;i=2", "--output=json --show-cursor --no-pager --boot --no-tail --cursor=s=1;i=2"},
	} {
		c := NewConfig()
		if tc.edit != nil {
			tc.edit(c)
		}
		s := newSource(testSettings(t), c)
		if got := strings.Join(s.args(&pump{cursor: tc.cursor}), " "); got != tc.want {
			t.Errorf("args\n got %s\nwant %s", got, tc.want)
		}
	}
}

func TestValidate(t *testing.T) {
	c := NewConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c.JournalctlPath, c.StartAt, c.MaxLineBytes, c.Units = "", "middle", 0, []string{"ok.service", " "}
	var fields []string
	for _, e := range c.Validate().(interface{ Unwrap() []error }).Unwrap() {
		var fe *stages.FieldError
		if errors.As(e, &fe) {
			fields = append(fields, fe.Field)
		}
	}
	if want := []string{"journalctl_path", "units[1]", "start_at", "max_line_bytes"}; !slices.Equal(fields, want) {
		t.Errorf("fields %v, want %v", fields, want)
	}
	c = NewConfig()
	c.Directory, c.JournalctlPath = "journal", "bin/journalctl"
	c.ResolvePaths("/etc/etld")
	if c.Directory != "/etc/etld/journal" || c.JournalctlPath != "/etc/etld/bin/journalctl" {
		t.Errorf("ResolvePaths: %q %q", c.Directory, c.JournalctlPath)
	}
	c.JournalctlPath = "journalctl"
	c.ResolvePaths("/etc/etld")
	if c.JournalctlPath != "journalctl" {
		t.Errorf("ResolvePaths changed a bare name: %q", c.JournalctlPath)
	}
}

func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	c := NewConfig()
	if err := c.CheckFiles(); err != nil {
		t.Errorf("no directory: %v", err)
	}
	c.Directory = dir
	if err := c.CheckFiles(); err != nil {
		t.Errorf("%s: %v", dir, err)
	}
	for _, bad := range []string{filepath.Join(dir, "missing"), script(t, "")} {
		c.Directory = bad
		var fe *stages.FieldError
		if err := c.CheckFiles(); !errors.As(err, &fe) || fe.Field != "directory" {
			t.Errorf("directory %s: %v, want an error at directory", bad, err)
		}
	}
}

func TestRestoreRejectsGarbage(t *testing.T) {
	s := newSource(testSettings(t), NewConfig())
	for _, st := range []string{`{"cursor":"--boot"}`, `{"cursor":"nonsense"}`, `not json`} {
		if err := s.Restore([]byte(st)); err == nil {
			t.Errorf("Restore(%s) accepted it", st)
		}
	}
	if err := s.Restore([]byte(`{"cursor":""}`)); err != nil {
		t.Errorf("Restore of an empty cursor: %v", err)
	}
}

// restarts reads the source's restart counter.
func restarts(s *source) float64 {
	var m dto.Metric
	if err := s.restarts.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
