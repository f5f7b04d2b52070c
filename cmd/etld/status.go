package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/etld/etld/internal/admin"
	"github.com/etld/etld/internal/engine"
)

// cmdStatus is `etld status [--admin ADDR] [--watch] [--interval 2s]`: it
// reads /api/pipelines from a running etld and prints every stage with its
// counters, rate and queue length; --watch refreshes like top.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("etld status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	withHelp(fs, "status")
	addr := fs.String("admin", "127.0.0.1:9300", "admin address of the running etld (host:port or URL)")
	watch := fs.Bool("watch", false, "refresh every --interval until interrupted, with rates")
	interval := fs.Duration("interval", 2*time.Second, "refresh period of --watch")
	if err := parseFlags(fs, args); err != nil {
		return flagExit(err)
	}
	if *interval <= 0 {
		fmt.Fprintf(stderr, "etld status: --interval must be positive, got %v\n", *interval)
		return exitUsage
	}
	c := &statusClient{url: adminURL(*addr) + "/api/pipelines", http: &http.Client{Timeout: 5 * time.Second}}
	defer c.http.CloseIdleConnections()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *watch {
		c.watch(ctx, *interval, stdout)
		return exitOK
	}
	snap, err := c.fetch(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "etld status: %v\n", err)
		return exitFailure
	}
	renderStatus(stdout, snap, nil)
	return exitOK
}

// adminURL accepts host:port or a URL.
func adminURL(addr string) string {
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		return strings.TrimSuffix(addr, "/")
	}
	return "http://" + addr
}

type statusClient struct {
	url  string
	http *http.Client
}

func (c *statusClient) fetch(ctx context.Context) (*admin.Snapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach etld: %w (is it running, with this --admin address?)", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s: %s: %s", c.url, resp.Status, strings.TrimSpace(string(b)))
	}
	var snap admin.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		return nil, fmt.Errorf("%s: not an etld status: %w", c.url, err)
	}
	return &snap, nil
}

// watch redraws the status every interval until ctx is done. A failed
// fetch is shown in place of the table and retried.
func (c *statusClient) watch(ctx context.Context, interval time.Duration, w io.Writer) {
	var prev *admin.Snapshot
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		snap, err := c.fetch(ctx)
		if ctx.Err() != nil {
			return
		}
		var frame strings.Builder
		frame.WriteString("\x1b[H\x1b[2J") // home, clear screen
		fmt.Fprintf(&frame, "etld status, every %v (Ctrl-C to quit)\n", interval)
		if err != nil {
			fmt.Fprintf(&frame, "%s  %v\n", time.Now().Format("15:04:05"), err)
		} else {
			renderStatus(&frame, snap, prev)
			prev = snap
		}
		io.WriteString(w, frame.String())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// renderStatus prints snap as a table; with prev (an earlier snapshot),
// the OUT/s column is the rate of records out between the two.
func renderStatus(w io.Writer, snap, prev *admin.Snapshot) {
	ready := "ready"
	if !snap.Ready {
		ready = "NOT READY: " + snap.NotReady
	}
	fmt.Fprintf(w, "etld %s at %s, %s\n", snap.Version, snap.Time.Local().Format("2006-01-02 15:04:05"), ready)
	if r := snap.LastReload; r != nil {
		fmt.Fprintf(w, "last config load %s: %s%s\n", r.Time.Local().Format("15:04:05"), r.Result, suffix(": ", r.Error))
	}
	if snap.ConfigWatch != "" {
		fmt.Fprintf(w, "config watch: %s\n", snap.ConfigWatch)
	}
	if len(snap.Pipelines) == 0 {
		fmt.Fprintln(w, "no pipelines")
		return
	}
	before := map[[2]string]uint64{}
	var dt float64
	if prev != nil {
		dt = snap.Time.Sub(prev.Time).Seconds()
		for _, p := range prev.Pipelines {
			for _, s := range p.Stages {
				before[[2]string{p.Name, s.ID}] = s.Out
			}
		}
	}

	tb := table{header: []string{"PIPELINE", "STATE", "STAGE", "KIND", "TYPE", "IN", "OUT", "OUT/s", "QUEUE", "HEALTH"},
		right: map[int]bool{5: true, 6: true, 7: true, 8: true}}
	var notes []string
	for _, p := range snap.Pipelines {
		for i, s := range p.Stages {
			row := []string{"", "", s.ID, s.Kind, stageType(s), strconv.FormatUint(s.In, 10), strconv.FormatUint(s.Out, 10), "-", strconv.Itoa(s.QueueLength), "ok"}
			if i == 0 {
				row[0], row[1] = p.Name, p.State.String()
			}
			if s.Kind == "source" {
				row[5], row[8] = "-", "-" // a source has no input counter or queue of its own
			}
			if old, ok := before[[2]string{p.Name, s.ID}]; ok && dt > 0 && s.Out >= old {
				row[7] = formatRate(float64(s.Out-old) / dt)
			}
			if !s.Healthy {
				row[9] = "FAILING"
			}
			if s.Problem != "" {
				row[9] = "UNHEALTHY"
				notes = append(notes, fmt.Sprintf("%s/%s: %s", p.Name, s.ID, s.Problem))
			}
			if m := s.Merge; m != nil {
				notes = append(notes, mergeNote(p.Name, s.ID, m))
			}
			if s.Dropped+s.DeadLettered+s.Errors > 0 {
				notes = append(notes, fmt.Sprintf("%s/%s: %d dropped, %d dead-lettered, %d errors",
					p.Name, s.ID, s.Dropped, s.DeadLettered, s.Errors))
			}
			tb.rows = append(tb.rows, row)
		}
		if p.Error != "" {
			notes = append(notes, fmt.Sprintf("%s: %s", p.Name, p.Error))
		}
		if r := p.LastReload; r != nil && r.Failed() {
			notes = append(notes, fmt.Sprintf("%s: reload at %s failed (%s)%s", p.Name, r.Time.Local().Format("15:04:05"), r.Action, suffix(": ", r.Error)))
		}
	}
	fmt.Fprintln(w)
	tb.write(w)
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
}

// mergeNote summarises an ordered merge: what it holds, how far it got,
// and which feeds sent late records or hold the others back.
func mergeNote(pipeline, stage string, m *engine.MergeStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s: merge by %s, %d buffered", pipeline, stage, m.OrderBy, m.Buffered)
	if m.Newest != "" {
		fmt.Fprintf(&b, ", newest written %s", m.Newest)
	}
	fmt.Fprintf(&b, ", %d late", m.Late)
	var feeds []string
	for _, f := range m.Feeds {
		wm := f.Watermark
		if wm == "" {
			wm = "nothing yet"
		}
		feed := fmt.Sprintf("%s at %s", filepath.Base(f.Feed), wm)
		if f.Late > 0 {
			feed += fmt.Sprintf(" (%d late)", f.Late)
		}
		feeds = append(feeds, feed)
	}
	if len(feeds) > 0 {
		fmt.Fprintf(&b, "; feeds: %s", strings.Join(feeds, ", "))
	}
	return b.String()
}

// stageType is a stage's type; for a worker (whose type is "worker"),
// its concurrency and steps: "x4 parse_json,filter".
func stageType(s engine.StageStatus) string {
	if s.Kind != "worker" {
		return s.Type
	}
	t := fmt.Sprintf("x%d %s", s.Concurrency, strings.Join(s.Steps, ","))
	if utf8.RuneCountInString(t) > 32 {
		t = string([]rune(t)[:31]) + "…"
	}
	return strings.TrimSpace(t)
}

func suffix(sep, s string) string {
	if s == "" {
		return ""
	}
	return sep + s
}

// table prints aligned columns, two spaces apart; right-aligned where
// right says so (numbers).
type table struct {
	header []string
	right  map[int]bool
	rows   [][]string
}

func (t *table) write(w io.Writer) {
	width := make([]int, len(t.header))
	for _, r := range append([][]string{t.header}, t.rows...) {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range append([][]string{t.header}, t.rows...) {
		var b strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i > 0 {
				b.WriteString("  ")
			}
			if t.right[i] {
				b.WriteString(pad + c)
			} else {
				b.WriteString(c + pad)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
