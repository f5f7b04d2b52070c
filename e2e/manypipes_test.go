package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestManyPipelinesSaveReloadsOnlyThatPipeline runs a directory of 50
// pipeline files, each following its own input into its own output,
// while lines are appended to every input. One file is saved with a
// changed step in the middle of it. Only that pipeline reloads: its
// reload counter is 1 and every other's 0, it alone logs a reload, the
// others log no start or restart after the first and /api/pipelines
// calls them unchanged by the last reload. Every line of
// every input reaches its output exactly once, and the edited pipeline
// switches from the old step to the new one.
func TestManyPipelinesSaveReloadsOnlyThatPipeline(t *testing.T) {
	const (
		pipes  = 50
		edited = "p07"
	)
	dir := t.TempDir()
	confDir := filepath.Join(dir, "conf")
	name := func(i int) string { return fmt.Sprintf("p%02d", i) }
	input := func(n string) string { return filepath.Join(dir, "in", n+".jsonl") }
	output := func(n string) string { return filepath.Join(dir, "out", n+".jsonl") }
	conf := func(n, rev string) string {
		return `version: 1
sources:
  in: {type: file, path: "` + input(n) + `", follow: true}
workers:
  w:
    inputs: [in]
    steps:
      - parse_json: {}
      - set: {rev: ` + rev + `}
sinks:
  out: {type: file, inputs: [w], path: "` + output(n) + `"}
`
	}
	for _, d := range []string{"conf", "in", "out"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range pipes {
		writeFile(t, dir, filepath.Join("in", name(i)+".jsonl"), nil)
		writeConfig(t, confDir, name(i)+".yaml", conf(name(i), "old"))
	}

	p := startEtld(t, dir, nil, "run", "-c", confDir, "--state-dir", filepath.Join(dir, "state"),
		"--admin", "127.0.0.1:0", "--log-format", "json")
	addr := rlAdminAddr(p)
	p.eventually("/readyz 200", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	// READY can come before the test has read the last start lines.
	p.eventually(fmt.Sprintf("%d pipelines logging their start", pipes), func() bool {
		return rlCount(p, "pipeline started") >= pipes
	})
	before := pipelineEvents(p)

	// One writer appends a few lines to every input every few
	// milliseconds until stopped: lines flow while the file is saved.
	w := startManyWriter(t, pipes, name, input)
	p.eventually("a first line in every output", func() bool {
		for i := range pipes {
			if fi, err := os.Stat(output(name(i))); err != nil || fi.Size() == 0 {
				return false
			}
		}
		return true
	})

	rlSaveRename(t, filepath.Join(confDir, edited+".yaml"), conf(edited, "new"))
	p.eventually(func() string {
		return fmt.Sprintf("etld_config_reloads_total{pipeline=%q,result=\"success\"} = 1 (now %v)", edited,
			rlMetric(addr, "etld_config_reloads_total", `pipeline="`+edited+`"`, `result="success"`))
	}, func() bool {
		return rlMetric(addr, "etld_config_reloads_total", `pipeline="`+edited+`"`, `result="success"`) == 1
	})
	// Lines written after the reload carry the new step's field.
	p.eventually(edited+" writes a record with rev new", func() bool {
		return bytes.Contains(readFile(t, output(edited)), []byte(`"rev":"new"`))
	})
	written := w.halt()

	for i := range pipes {
		n := name(i)
		want := make([]string, written[i])
		for seq := range written[i] {
			want[seq] = key(n, seq)
		}
		p.waitForLines(output(n), len(want), want)
		checkExactlyOnce(t, n, want, outputKeys(t, output(n)))
	}
	checkRevSwitch(t, edited, readFile(t, output(edited)))

	// Only the edited pipeline was touched.
	after := pipelineEvents(p)
	for i := range pipes {
		n := name(i)
		success := rlMetric(addr, "etld_config_reloads_total", `pipeline="`+n+`"`, `result="success"`)
		failure := rlMetric(addr, "etld_config_reloads_total", `pipeline="`+n+`"`, `result="failure"`)
		_, last := rlLastReloads(t, addr, n)
		if n == edited {
			if success != 1 || failure != 0 {
				t.Errorf("%s: reloads success %v failure %v, want 1 and 0", n, success, failure)
			}
			if last == nil || last.Result != "success" || (last.Action != "reconfigured" && last.Action != "replaced") {
				t.Errorf("%s: last reload %+v, want a successful reconfiguration", n, last)
			}
			if after[n] == before[n] {
				t.Errorf("%s: no reload logged (events %q)", n, after[n])
			}
			continue
		}
		if success != 0 || failure != 0 {
			t.Errorf("%s: reloads success %v failure %v, want none: its file was not saved", n, success, failure)
		}
		if last == nil || last.Action != "unchanged" {
			t.Errorf("%s: last reload %+v, want unchanged", n, last)
		}
		if after[n] != before[n] {
			t.Errorf("%s: its file was not saved, but it logged %q after the save (before: %q)", n, after[n], before[n])
		}
	}
	reloads := rlLogged(p, "config reloaded")
	if len(reloads) != 1 {
		t.Fatalf("logged %d reloads, want 1", len(reloads))
	}
	if got := rlStrs(reloads[0], "replaced"); len(got) != 1 || got[0] != edited {
		t.Errorf("the reload replaced %q, want [%s]", got, edited)
	}
	if got, _ := reloads[0]["unchanged"].(float64); int(got) != pipes-1 {
		t.Errorf("the reload kept %v pipelines unchanged, want %d", reloads[0]["unchanged"], pipes-1)
	}
	p.expectExit(p.stop(), 0, "graceful stop")
}

// pipelineEvents lists, by pipeline, the log messages that start,
// restart or reconfigure a pipeline, in order.
func pipelineEvents(p *proc) map[string]string {
	events := map[string]string{}
	for line := range strings.Lines(p.stderr.String()) {
		for _, msg := range []string{"pipeline started", "pipeline replaced", "pipeline reconfigured",
			"pipeline reconfigured in place", "restarting the pipeline with its new config", "resuming from checkpoint"} {
			if !strings.Contains(line, `"message":"`+msg+`"`) {
				continue
			}
			_, rest, ok := strings.Cut(line, `"pipeline":"`)
			if !ok {
				continue
			}
			pipe, _, _ := strings.Cut(rest, `"`)
			events[pipe] += msg + ";"
		}
	}
	return events
}

// checkRevSwitch checks that the edited pipeline's output has old records,
// then new ones, never old after new: the new step applies from the
// reload on.
func checkRevSwitch(t *testing.T, what string, out []byte) {
	t.Helper()
	sawNew, olds, news := false, 0, 0
	for _, line := range splitLines(t, what, out) {
		switch {
		case bytes.Contains(line, []byte(`"rev":"new"`)):
			sawNew = true
			news++
		case bytes.Contains(line, []byte(`"rev":"old"`)):
			if sawNew {
				t.Fatalf("%s: an old-step record after a new-step one: %s", what, line)
			}
			olds++
		default:
			t.Fatalf("%s: a record without rev: %s", what, line)
		}
	}
	if olds == 0 || news == 0 {
		t.Errorf("%s: %d old-step and %d new-step records, want both", what, olds, news)
	}
}

// manyWriter appends records (seq 0, 1, ...) to n inputs, a few to each
// every tick, until halted.
type manyWriter struct {
	t    *testing.T
	stop chan struct{}
	done chan struct{}
	seqs []int // read once done is closed
	err  error
}

func startManyWriter(t *testing.T, n int, name func(int) string, input func(string) string) *manyWriter {
	t.Helper()
	files := make([]*os.File, n)
	for i := range n {
		f, err := os.OpenFile(input(name(i)), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		files[i] = f
	}
	w := &manyWriter{t: t, stop: make(chan struct{}), done: make(chan struct{}), seqs: make([]int, n)}
	go func() {
		defer close(w.done)
		defer func() {
			for _, f := range files {
				f.Close()
			}
		}()
		tick := time.NewTicker(5 * time.Millisecond) // a steady trickle, not a synchronisation
		defer tick.Stop()
		var buf []byte
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			for i, f := range files {
				seq := w.seqs[i]
				buf = buf[:0]
				for s := seq; s < seq+3; s++ {
					buf = appendRecord(buf, name(i), s)
					buf = append(buf, '\n')
				}
				if _, err := f.Write(buf); err != nil {
					w.err = err
					return
				}
				w.seqs[i] = seq + 3
			}
		}
	}()
	t.Cleanup(func() { w.halt() })
	return w
}

// halt stops the writer and returns how many records each input got.
func (w *manyWriter) halt() []int {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	if w.err != nil {
		w.t.Fatalf("appending to the inputs: %v", w.err)
	}
	return w.seqs
}
