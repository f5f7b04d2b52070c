package sources

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etld/etld/internal/stages"
)

func TestMultilineConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		cfg    MultilineConfig
		fields []string
	}{
		{"start", ml(MultilineConfig{Start: `^\d`}), nil},
		{"continue", MultilineConfig{Continue: `^\s`, MaxLines: 3, Timeout: time.Minute}, nil},
		{"off", newMultilineConfig(), nil},
		{"neither", MultilineConfig{MaxLines: 3, Timeout: time.Second}, []string{"multiline"}},
		{"both", ml(MultilineConfig{Start: "a", Continue: "b"}), []string{"multiline.continue"}},
		{"bad start", ml(MultilineConfig{Start: "("}), []string{"multiline.start"}},
		{"bad continue", ml(MultilineConfig{Continue: `\p{Nope}`}), []string{"multiline.continue"}},
		{"all wrong", MultilineConfig{Start: "[", MaxLines: -1, Timeout: -time.Second}, []string{"multiline.start", "multiline.max_lines", "multiline.timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cfg
			if got := fieldsOf(c.validate()); !reflect.DeepEqual(got, tt.fields) {
				t.Errorf("fields = %q, want %q", got, tt.fields)
			}
		})
	}
	if c := NewFileConfig().Multiline; c.on() || c.MaxLines != 500 || c.Timeout != time.Second {
		t.Errorf("defaults: %+v", c)
	}
	// The file and stdin configs report multiline's problems with theirs.
	fc := NewFileConfig()
	fc.Multiline = ml(MultilineConfig{Continue: "("})
	if got, want := fieldsOf(fc.Validate()), []string{"path", "multiline.continue"}; !reflect.DeepEqual(got, want) {
		t.Errorf("file: fields = %q, want %q", got, want)
	}
	sc := NewStdinConfig()
	sc.MaxLineBytes, sc.Multiline = 0, MultilineConfig{MaxLines: 500, Timeout: time.Minute}
	if got, want := fieldsOf(sc.Validate()), []string{"max_line_bytes", "multiline"}; !reflect.DeepEqual(got, want) {
		t.Errorf("stdin: fields = %q, want %q", got, want)
	}
}

// ml fills in the defaults of c's unset max_lines and timeout.
func ml(c MultilineConfig) MultilineConfig {
	d := newMultilineConfig()
	c.MaxLines = cmp.Or(c.MaxLines, d.MaxLines)
	c.Timeout = cmp.Or(c.Timeout, d.Timeout)
	return c
}

// mlRecord is a record or (long) a reject as the tests compare them.
type mlRecord struct {
	text   string
	off    int64
	long   bool
	length int64
}

func (g *got) records() []mlRecord {
	var out []mlRecord
	for i, l := range g.lines {
		out = append(out, mlRecord{text: l, off: g.offsets[i]})
	}
	for _, r := range g.rejects {
		out = append(out, mlRecord{text: string(r.Record.Raw), off: r.Record.Offset, long: true, length: r.Length})
	}
	slices.SortStableFunc(out, func(a, b mlRecord) int { return cmp.Compare(a.off, b.off) })
	return out
}

// referenceJoin joins data's lines the obvious way, with the same rules as
// the joiner: see MultilineConfig.
func referenceJoin(data []byte, max int, c *MultilineConfig) []mlRecord {
	var out []mlRecord
	has, first, end, lines := false, int64(0), int64(0), 0
	flush := func() {
		if !has {
			return
		}
		has = false
		if end-first > int64(max) {
			out = append(out, mlRecord{text: string(data[first : first+int64(max)]), off: first, long: true, length: end - first})
			return
		}
		out = append(out, mlRecord{text: string(data[first:end]), off: first})
	}
	re := regexp.MustCompile(c.Start + c.Continue)
	off := int64(0)
	for off < int64(len(data)) {
		rest := data[off:]
		n := bytes.IndexByte(rest, '\n')
		next := off + int64(n) + 1
		if n < 0 {
			n, next = len(rest), int64(len(data))
		}
		line := rest[:n]
		switch {
		case n > max:
			flush()
			out = append(out, mlRecord{text: string(line[:max]), off: off, long: true, length: int64(n)})
		case has && lines < c.MaxLines && re.Match(line) == (c.Continue != ""):
			lines++
			end = off + int64(n)
		default:
			flush()
			has, first, end, lines = true, off, off+int64(n), 1
		}
		off = next
	}
	flush()
	return out
}

// TestMultilineMatchesReference feeds random text in random chunks through
// the stdin source with multiline (the splitter and joiner the file source
// shares) and compares with referenceJoin: joined records, offsets, and
// over-long records and lines.
func TestMultilineMatchesReference(t *testing.T) {
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 13))
		max := 1 + rng.IntN(80)
		var sb strings.Builder
		for range 100 + rng.IntN(300) {
			if rng.IntN(3) == 0 {
				sb.WriteString("S")
			} else {
				sb.WriteString(" ")
			}
			n := rng.IntN(max)
			if rng.IntN(8) == 0 {
				n = rng.IntN(3 * max) // often over max: a long line
			}
			for i := range n {
				sb.WriteByte('a' + byte(i%26))
			}
			sb.WriteByte('\n')
		}
		if rng.IntN(2) == 0 {
			sb.WriteString(" tail without newline")
		}
		data := []byte(sb.String())
		c := ml(MultilineConfig{Start: "^S", MaxLines: 1 + rng.IntN(6)})
		if seed%2 == 1 {
			c.Start, c.Continue = "", `^\s`
		}
		t.Run(fmt.Sprintf("seed%d_max%d_lines%d", seed, max, c.MaxLines), func(t *testing.T) {
			if err := c.validate(); err != nil {
				t.Fatal(err)
			}
			cfg := &StdinConfig{MaxLineBytes: stages.ByteSize(max), Multiline: c}
			src := newStdinSource(testSettings(t), cfg, &chunkReader{data: data, rng: rng}, realClock{})
			defer src.Close()
			got := readToEnd(t, src).records()
			want := referenceJoin(data, max, &c)
			if !reflect.DeepEqual(got, want) {
				for i := range min(len(got), len(want)) {
					if got[i] != want[i] {
						t.Fatalf("record %d = %+v, want %+v (%d records, want %d)", i, got[i], want[i], len(got), len(want))
					}
				}
				t.Fatalf("got %d records, want %d", len(got), len(want))
			}
		})
	}
}

func TestMultilineFile(t *testing.T) {
	trace := "2026-01-02 ERROR boom\njava.lang.IllegalStateException: x\n\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)\n"
	tests := []struct {
		name string
		ml   MultilineConfig
		max  stages.ByteSize
		data string
		want []mlRecord
	}{
		{"start", MultilineConfig{Start: `^\d{4}-`}, 0,
			"preamble\n" + trace + "2026-01-02 INFO ok\n",
			[]mlRecord{{text: "preamble"}, {text: strings.TrimSuffix(trace, "\n"), off: 9}, {text: "2026-01-02 INFO ok", off: 9 + int64(len(trace))}}},
		{"continue", MultilineConfig{Continue: `^\s`}, 0,
			"a\n b\n c\nd\n\n e\nf",
			[]mlRecord{{text: "a\n b\n c"}, {text: "d", off: 8}, {text: "\n e", off: 10}, {text: "f", off: 14}}},
		{"max_lines", MultilineConfig{Continue: `^\s`, MaxLines: 2}, 0,
			"a\n 1\n 2\n 3\n 4\n 5\n",
			[]mlRecord{{text: "a\n 1"}, {text: " 2\n 3", off: 5}, {text: " 4\n 5", off: 11}}},
		{"over max_line_bytes", MultilineConfig{Continue: `^\s`}, 8,
			"a\n 1\n 2\n 3\nb\n",
			[]mlRecord{{text: "a\n 1\n 2\n", long: true, length: 10}, {text: "b", off: 11}}},
		{"long line ends the record", MultilineConfig{Continue: `^\s`}, 4,
			"a\n 1\n 23456\n 7\n",
			[]mlRecord{{text: "a\n 1"}, {text: " 234", off: 5, long: true, length: 6}, {text: " 7", off: 12}}},
		{"empty", MultilineConfig{Start: "^x"}, 0, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "app.log")
			writeFile(t, path, tt.data)
			cfg := NewFileConfig()
			cfg.Path, cfg.Follow, cfg.Multiline = path, false, ml(tt.ml)
			if tt.max > 0 {
				cfg.MaxLineBytes = tt.max
			}
			src := newFile(t, cfg)
			if got := readToEnd(t, src).records(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("records = %+v\nwant      %+v", got, tt.want)
			}
			if ps := src.Positions(); tt.data != "" && (len(ps) != 1 || ps[0].Offset != int64(len(tt.data))) {
				t.Errorf("positions = %+v, want offset %d", ps, len(tt.data))
			}
		})
	}
}

// fakeClock is a clock whose time moves only by Advance. armed receives a
// value each time a timer is started.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
	armed  chan struct{}
}

type fakeTimer struct {
	at time.Time
	c  chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), armed: make(chan struct{}, 1024)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ft := fakeTimer{at: c.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		ft.c <- c.now
	} else {
		c.timers = append(c.timers, ft)
	}
	select {
	case c.armed <- struct{}{}:
	default:
	}
	return ft.c, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, o := range c.timers {
			if o.c == ft.c {
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				return true
			}
		}
		return false
	}
}

// Advance moves the time on and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, ft := range c.timers {
		if ft.at.After(c.now) {
			kept = append(kept, ft)
			continue
		}
		ft.c <- c.now
	}
	c.timers = kept
}

// waitArmed waits until a timer has been started since the last call.
func (c *fakeClock) waitArmed(t *testing.T) {
	t.Helper()
	select {
	case <-c.armed:
	case <-time.After(testTimeout):
		t.Fatal("no timer was started")
	}
}

// readAsync runs src.Read in a goroutine.
func readAsync(ctx context.Context, src stages.Source) <-chan *got {
	out := make(chan *got, 1)
	go func() {
		g := &got{}
		b, err := src.Read(ctx)
		if err == nil {
			g.add(b)
		}
		out <- g
	}()
	return out
}

func TestMultilineTimeoutFollow(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "a\n b\nc\n d\n")
	cfg := NewFileConfig()
	cfg.Path, cfg.Multiline = path, ml(MultilineConfig{Continue: `^\s`, Timeout: 5 * time.Second})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	src := newFileSource(testSettings(t), cfg, clk)
	if err := src.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 1 })
	if want := []string{"a\n b"}; !reflect.DeepEqual(g.lines, want) {
		t.Fatalf("lines = %q, want %q", g.lines, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	res := readAsync(ctx, src)
	clk.waitArmed(t)
	clk.Advance(4 * time.Second) // not yet
	clk.waitArmed(t)             // the loop went round (a poll tick) or not; either way it waits again
	clk.Advance(time.Second)
	g = <-res
	if want := []string{"c\n d"}; !reflect.DeepEqual(g.lines, want) || g.offsets[0] != 5 {
		t.Fatalf("after the timeout: lines = %q at %v, want %q at 5", g.lines, g.offsets, want)
	}
	// A line joining after the timeout starts a record of its own.
	appendFile(t, path, " e\nf\n")
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 2 })
	if want := []string{"c\n d", " e"}; !reflect.DeepEqual(g.lines, want) {
		t.Fatalf("lines = %q, want %q", g.lines, want)
	}
}

func TestMultilineTimeoutStdin(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	cfg := NewStdinConfig()
	cfg.Multiline = ml(MultilineConfig{Start: "^S"})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	src := newStdinSource(testSettings(t), cfg, pr, clk)
	defer src.Close()
	go func() { pw.Write([]byte("S1\n x\nS2\n y\n")) }()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 1 })
	res := readAsync(ctx, src)
	clk.waitArmed(t)
	clk.Advance(time.Second)
	g2 := <-res
	if got, want := append(g.lines, g2.lines...), []string{"S1\n x", "S2\n y"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("lines = %q, want %q", got, want)
	}
	pw.Close()
	if g3 := readToEnd(t, src); len(g3.lines) != 0 {
		t.Errorf("after the end: %q", g3.lines)
	}
}

// TestMultilineStateWithPendingRecord checks that State never covers a
// pending record: a source restored from it reads the whole record again,
// once, with the lines appended since.
func TestMultilineStateWithPendingRecord(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	first := "2026-01-01 one\n\tat x\n"
	writeFile(t, path, first+"2026-01-01 two\n\tat y\n")
	cfg := NewFileConfig()
	cfg.Path, cfg.Multiline = path, ml(MultilineConfig{Start: `^\d`, Timeout: time.Hour})
	src := newFile(t, cfg)
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 1 })
	state, err := src.State()
	if err != nil {
		t.Fatal(err)
	}
	var ps []FilePosition
	if err := json.Unmarshal(state, &ps); err != nil || len(ps) != 1 || ps[0].Offset != int64(len(first)) {
		t.Fatalf("state = %s (%v), want the offset of the pending record, %d", state, err, len(first))
	}
	src.Close()

	appendFile(t, path, "\tat z\n2026-01-01 three\n")
	src2 := openFile(t, cfg, func(s *FileSource) {
		if err := s.Restore(state); err != nil {
			t.Fatal(err)
		}
	})
	g2 := &got{}
	readUntil(t, src2, g2, func(g *got) bool { return len(g.lines) >= 1 })
	if want := []string{"2026-01-01 two\n\tat y\n\tat z"}; !reflect.DeepEqual(g2.lines, want) || g2.offsets[0] != int64(len(first)) {
		t.Fatalf("restored: %q at %v, want %q at %d", g2.lines, g2.offsets, want, len(first))
	}
}

// BenchmarkMultiline reads a log of 2000 records of 5 lines through the
// stdin source, with the lines joined (start) and, as the baseline, not.
func BenchmarkMultiline(b *testing.B) {
	var sb strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&sb, "2026-01-01T00:00:00Z level=error msg=\"failed %d\"\n", i)
		for range 4 {
			sb.WriteString("\tat com.example.Service.handle(Service.java:42)\n")
		}
	}
	data := []byte(sb.String())
	for _, bc := range []struct {
		name    string
		ml      MultilineConfig
		records int
	}{
		{"off", newMultilineConfig(), 10000},
		{"start", ml(MultilineConfig{Start: `^\d{4}-`}), 2000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			if err := bc.ml.validate(); err != nil {
				b.Fatal(err)
			}
			cfg := &StdinConfig{MaxLineBytes: defaultMaxLineBytes, Multiline: bc.ml}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				src := newStdinSource(stages.Settings{}, cfg, bytes.NewReader(data), realClock{})
				n := 0
				for {
					batch, err := src.Read(context.Background())
					if err != nil {
						break
					}
					n += len(batch.Records)
					batch.Release()
				}
				if n != bc.records {
					b.Fatalf("%d records, want %d", n, bc.records)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*10000), "ns/line")
		})
	}
}

// TestMultilineRotation checks that a record pending when its file is
// rotated away takes the lines still written to the rotated file, is
// emitted when that file is closed, and never joins the new file's lines;
// with a feed gate (an ordered merge), it comes before them.
func TestMultilineRotation(t *testing.T) {
	for _, gated := range []bool{false, true} {
		t.Run(fmt.Sprintf("gated=%v", gated), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "app.log")
			writeFile(t, path, "x\na\n b\n")
			cfg := NewFileConfig()
			cfg.Path, cfg.Multiline = path, ml(MultilineConfig{Continue: `^\s`, Timeout: time.Hour})
			var src *FileSource
			if gated {
				src = newGatedFile(t, cfg, newFakeGate())
			} else {
				src = newFile(t, cfg)
			}
			g := &got{}
			readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 1 })
			if err := os.Rename(path, path+".1"); err != nil {
				t.Fatal(err)
			}
			appendFile(t, path+".1", " c\n")
			writeFile(t, path, " d\ne\n")
			readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 3 })
			want := []string{"x", "a\n b\n c", " d"}
			if !gated {
				// The two files are read side by side: the order between
				// them is not defined.
				slices.Sort(g.lines)
				slices.Sort(want)
			}
			if !reflect.DeepEqual(g.lines, want) {
				t.Fatalf("lines = %q, want %q", g.lines, want)
			}
		})
	}
}

// TestMultilineTruncation checks that a record pending when its file is
// truncated (copytruncate) is still emitted, and that the position then
// points into the new content.
func TestMultilineTruncation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, "xxxxxxxx\na\n b\n")
	cfg := NewFileConfig()
	cfg.Path, cfg.Multiline = path, ml(MultilineConfig{Continue: `^\s`, Timeout: time.Hour})
	src := newFile(t, cfg)
	g := &got{}
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 1 })
	writeFile(t, path, "n\n m\no\n")
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) >= 3 })
	if want := []string{"xxxxxxxx", "a\n b", "n\n m"}; !reflect.DeepEqual(g.lines, want) {
		t.Fatalf("lines = %q, want %q", g.lines, want)
	}
	if want := []int64{0, 9, 0}; !reflect.DeepEqual(g.offsets, want) {
		t.Errorf("offsets = %v, want %v", g.offsets, want)
	}
	if ps := src.Positions(); len(ps) != 1 || ps[0].Offset != 5 {
		t.Errorf("positions = %+v, want offset 5 (the pending record o)", ps)
	}
}

// TestMultilineLongLineAfterPendingRecord checks that a line far over
// max_line_bytes after a pending record neither grows the read buffer
// with it nor loses the record, and that the state never skips the record.
func TestMultilineLongLineAfterPendingRecord(t *testing.T) {
	const max = 64
	data := "a\n b\n" + strings.Repeat("x", 50*max) + "\n c\n"
	cfg := &StdinConfig{MaxLineBytes: max, Multiline: ml(MultilineConfig{Continue: `^\s`})}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	src := newStdinSource(testSettings(t), cfg, &chunkReader{data: []byte(data), rng: rng}, realClock{})
	defer src.Close()
	got := readToEnd(t, src).records()
	want := []mlRecord{{text: "a\n b"}, {text: strings.Repeat("x", max), off: 5, long: true, length: 50 * max}, {text: " c", off: 5 + 50*max + 1}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("records = %+v, want %+v", got, want)
	}
	if c := cap(src.sp.buf); c > 2*(max+1) {
		t.Errorf("the read buffer grew to %d bytes, want at most %d", c, 2*(max+1))
	}
}
