package journald

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/stages"
)

// Restarting journalctl: the delay doubles from backoffMin to backoffMax,
// and starts over once a journalctl has worked (printed an entry, or run
// for healthyAfter without failing). Tests shorten them.
var (
	backoffMin   = time.Second
	backoffMax   = 30 * time.Second
	healthyAfter = 2 * time.Second
)

// A batch holds up to batchRecords entries or about batchBytes of JSON,
// or what journalctl had printed when the pipe ran dry.
const (
	batchRecords = 1024
	batchBytes   = 256 << 10
	readBuffer   = 64 << 10
	stderrTail   = 1 << 10 // how much of journalctl's stderr an error quotes
)

// source reads the journal through a journalctl child process:
//
//	journalctl --output=json --show-cursor --no-pager [--follow]
//	  [--directory=D] --boot|--merge [--unit=U]... POSITION
//
// Each line journalctl prints is one entry as a JSON object, which
// becomes a record as is (already parsed: Raw is the object). Every
// object carries the entry's __CURSOR; the checkpoint (State) is the
// cursor of the last entry Read returned.
//
// POSITION is --cursor=C when there is a cursor (restored, or of the last
// entry taken when journalctl is restarted), and the entry C itself,
// which journalctl prints first, is dropped. --after-cursor=C would be
// the obvious choice, but journalctl (252) skips one entry too many with
// it when C does not match the filters: after a reboot, with --boot, the
// first entry of the new boot would be lost. Without a cursor POSITION
// is --no-tail (start_at: beginning), or --lines=0 (start_at: end) and,
// for a restart before any entry came, --since the first start.
//
// One goroutine (run, started by Open, ended by Close) starts journalctl,
// reads its output into batches and hands them to Read over an unbuffered
// channel, so that journalctl is held back by the pipe when the pipeline
// is. A batch is only taken from the channel by a Read that returns it:
// a Read whose ctx is done takes nothing, and nothing pulled is lost. When
// journalctl exits (or cannot start), run logs it, reports it through
// Health and starts it again after a backoff, at the entry after the last
// one it took.
type source struct {
	cfg      Config
	log      zerolog.Logger
	origin   *stages.Origin
	restarts prometheus.Counter
	health   atomic.Pointer[error] // nil while journalctl works

	// The Read goroutine's.
	cursor string // cursor of the last entry Read returned, or restored
	out    chan chunk
	cancel context.CancelFunc
	done   chan struct{} // closed when run has returned
	ended  bool
	closed bool
}

// chunk is what run hands to Read.
type chunk struct {
	b      *stages.Batch
	cursor string // of the batch's last entry that had one; "" if none
	end    bool   // journalctl (follow: false) printed everything and exited
}

// state is the checkpoint.
type state struct {
	Cursor string `json:"cursor"`
}

func newSource(s stages.Settings, c *Config) *source {
	path := c.Directory
	if path == "" {
		path = "journal"
	}
	return &source{
		cfg:      *c,
		log:      s.Logger,
		origin:   &stages.Origin{Source: s.ID, Path: path},
		restarts: s.Counter("etld_journald_restarts_total", "Times a journald source started journalctl again after it exited or failed to start."),
	}
}

// Open starts the goroutine that runs journalctl. A journalctl that cannot
// start is not an error here: it is retried like one that exits.
func (s *source) Open(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed || s.done != nil {
		return errors.New("journald source: opened twice or after close")
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.out, s.done, s.cancel = make(chan chunk), make(chan struct{}), cancel
	go s.run(runCtx, &pump{cursor: s.cursor})
	return nil
}

// Read returns the next batch of entries, waiting for one; ctx.Err() when
// ctx is done first; stages.ErrEndOfInput once journalctl ended (follow:
// false).
func (s *source) Read(ctx context.Context) (*stages.Batch, error) {
	if s.closed {
		return nil, errors.New("journald source: read after close")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.ended {
		return nil, stages.ErrEndOfInput
	}
	select {
	case c := <-s.out:
		if c.end {
			s.ended = true
			return nil, stages.ErrEndOfInput
		}
		if c.cursor != "" {
			s.cursor = c.cursor
		}
		return c.b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops journalctl and waits for the goroutine. Idempotent.
func (s *source) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
	return nil
}

// State implements stages.Stateful: the cursor of the last entry Read
// returned.
func (s *source) State() ([]byte, error) { return json.Marshal(state{Cursor: s.cursor}) }

// Restore implements stages.Stateful.
func (s *source) Restore(b []byte) error {
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("journald source: checkpoint: %w", err)
	}
	if st.Cursor != "" && !isCursor(st.Cursor) {
		return fmt.Errorf("journald source: checkpoint holds %q, which is not a journal cursor", st.Cursor)
	}
	s.cursor = st.Cursor
	return nil
}

// Health implements stages.HealthReporter.
func (s *source) Health() error {
	if e := s.health.Load(); e != nil {
		return *e
	}
	return nil
}

// isCursor reports whether c looks like a journal cursor
// (s=...;i=...;b=...;m=...;t=...;x=...): key=value pairs separated by
// semicolons, nothing journalctl could take for an option.
func isCursor(c string) bool {
	if c == "" || strings.HasPrefix(c, "-") {
		return false
	}
	for kv := range strings.SplitSeq(c, ";") {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return false
		}
	}
	return true
}

// pump is run's state.
type pump struct {
	cursor string      // of the last entry handed to Read: where a restart resumes
	skip   string      // the entry --cursor starts at, already delivered; "" once past it
	since  time.Time   // start_at: end, no cursor yet: when journalctl first started
	stable atomic.Bool // this journalctl has worked (see healthyAfter)
	long   []byte      // an over-long line being read
}

// run starts journalctl, again after a backoff each time it ends, until
// ctx is done or, with follow: false, one ends cleanly.
func (s *source) run(ctx context.Context, p *pump) {
	defer close(s.done)
	delay := backoffMin
	for {
		p.stable.Store(false)
		err := s.runOnce(ctx, p)
		if ctx.Err() != nil {
			return
		}
		if err == nil && !s.cfg.Follow {
			s.health.Store(nil)
			select {
			case s.out <- chunk{end: true}:
			case <-ctx.Done():
			}
			return
		}
		if p.stable.Load() {
			delay = backoffMin
		}
		herr := fmt.Errorf("%w; restarting it in %v", err, delay)
		s.health.Store(&herr)
		s.restarts.Inc()
		s.log.Warn().Err(err).Stringer("retry_in", delay).Msg("journalctl failed; restarting it with backoff")
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		delay = min(2*delay, backoffMax)
	}
}

// args are journalctl's arguments for a start at p's position.
func (s *source) args(p *pump) []string {
	a := []string{"--output=json", "--show-cursor", "--no-pager"}
	if s.cfg.Follow {
		a = append(a, "--follow")
	}
	if s.cfg.Directory != "" {
		a = append(a, "--directory="+s.cfg.Directory)
	}
	// --follow alone keeps to one boot too; --merge is what reads them all.
	if s.cfg.CurrentBootOnly {
		a = append(a, "--boot")
	} else {
		a = append(a, "--merge")
	}
	for _, u := range s.cfg.Units {
		a = append(a, "--unit="+u)
	}
	switch {
	case p.cursor != "":
		a = append(a, "--no-tail", "--cursor="+p.cursor)
	case s.cfg.StartAt == StartAtEnd && !p.since.IsZero():
		a = append(a, "--no-tail", fmt.Sprintf("--since=@%d", p.since.Unix()))
	case s.cfg.StartAt == StartAtEnd:
		a = append(a, "--lines=0")
	default:
		a = append(a, "--no-tail")
	}
	return a
}

// runOnce runs one journalctl until it exits or ctx is done. It returns
// nil when journalctl printed everything and exited with status 0.
func (s *source) runOnce(ctx context.Context, p *pump) error {
	cmd := exec.CommandContext(ctx, s.cfg.JournalctlPath, s.args(p)...)
	setProcAttr(cmd)
	cmd.WaitDelay = time.Second // a child that keeps the pipes open
	stderr := &tailWriter{max: stderrTail}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("journalctl: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start journalctl: %w", err)
	}
	s.log.Debug().Strs("args", cmd.Args).Msg("journalctl started")
	p.skip = p.cursor
	if s.cfg.StartAt == StartAtEnd && p.since.IsZero() {
		p.since = time.Now()
	}
	fired := make(chan struct{})
	works := time.AfterFunc(healthyAfter, func() {
		defer close(fired)
		s.working(p)
	})
	rerr := s.pump(ctx, out, p)
	if !works.Stop() {
		<-fired // so that it cannot mark this journalctl working after run reported it failed
	}
	if rerr != nil && ctx.Err() == nil {
		_ = killProc(cmd)
	}
	werr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case rerr != nil:
		return fmt.Errorf("reading journalctl's output: %w", rerr)
	case werr != nil:
		return fmt.Errorf("journalctl exited: %w%s", werr, stderr.quote())
	case s.cfg.Follow:
		return fmt.Errorf("journalctl exited with status 0 while following the journal%s", stderr.quote())
	}
	return nil
}

// working marks the current journalctl as working: the stage is healthy
// again and the next failure starts the backoff over.
func (s *source) working(p *pump) {
	p.stable.Store(true)
	if s.health.Swap(nil) != nil {
		s.log.Info().Msg("journalctl works again")
	}
}

// pump reads journalctl's output into batches and sends them to Read,
// until the output ends (nil) or ctx is done.
func (s *source) pump(ctx context.Context, r io.Reader, p *pump) error {
	br := bufio.NewReaderSize(r, readBuffer)
	var bb builder
	for {
		line, full, err := p.readLine(br, int(s.cfg.MaxLineBytes))
		if err == nil {
			s.add(&bb, p, line, full)
		} else if len(line) > 0 {
			// A line cut by journalctl's end: the restart prints it again.
			s.log.Debug().Int("bytes", len(line)).Msg("journalctl ended in the middle of a line")
		}
		if err != nil || bb.full() || br.Buffered() == 0 {
			if serr := s.send(ctx, &bb, p); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// readLine returns the next line without its newline. A line longer than
// max is cut to its first max bytes, and full is its length; full is 0
// for a line that fits. The line is valid until the next call.
func (p *pump) readLine(br *bufio.Reader, max int) (line []byte, full int, err error) {
	line, err = br.ReadSlice('\n')
	if err == nil && len(line)-1 <= max {
		return line[:len(line)-1], 0, nil
	}
	if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
		return line, 0, err
	}
	// Slow path: longer than the read buffer or than max.
	p.long = p.long[:0]
	n := 0
	for {
		chunk := line
		if err == nil {
			chunk = chunk[:len(chunk)-1]
		}
		n += len(chunk)
		if room := max - len(p.long); room > 0 {
			p.long = append(p.long, chunk[:min(room, len(chunk))]...)
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			break
		}
		line, err = br.ReadSlice('\n')
	}
	if err != nil {
		return p.long, 0, err
	}
	if n > max {
		return p.long, n, nil
	}
	return p.long, 0, nil
}

var (
	cursorKey = []byte(`"__CURSOR":"`)
	notePfx   = []byte("-- ")
)

// add adds one line of journalctl's output to bb: an entry as a parsed
// record, or a reject.
func (s *source) add(bb *builder, p *pump, line []byte, full int) {
	if len(line) == 0 || full == 0 && bytes.HasPrefix(line, notePfx) {
		return // journalctl's notes, such as --show-cursor's "-- cursor: ..." at exit
	}
	cursor := cursorOf(line)
	if skip := p.skip; skip != "" {
		p.skip = ""
		if string(cursor) == skip {
			return // the entry --cursor starts at: already delivered
		}
	}
	raw := bb.copy(line)
	if cursor != nil {
		bb.cursor = cursor // copied at send, before the batch leaves
	}
	rec := stages.Record{Raw: raw, Origin: s.origin, Offset: -1}
	switch {
	case full > 0:
		bb.reject(rec, fmt.Errorf("journal entry of %d bytes of JSON is over max_line_bytes (%v)", full, s.cfg.MaxLineBytes), int64(full))
	case raw[0] != '{' || !json.Valid(raw):
		bb.reject(rec, errors.New("journalctl printed a line that is not a JSON object"), 0)
	default:
		rec.SetParsed(raw)
		bb.b.Records = append(bb.b.Records, rec)
	}
}

// cursorOf returns the value of an entry's __CURSOR field, or nil. A
// cursor has no quote or backslash, and inside a JSON string the key's
// quotes would be escaped, so the first match is the field.
func cursorOf(line []byte) []byte {
	if i := bytes.Index(line, cursorKey); i >= 0 {
		v := line[i+len(cursorKey):]
		if j := bytes.IndexByte(v, '"'); j > 0 && bytes.IndexByte(v[:j], '\\') < 0 {
			return v[:j]
		}
		return nil
	}
	// Not journalctl's compact form: decode (rare).
	var e struct {
		Cursor string `json:"__CURSOR"`
	}
	if json.Unmarshal(line, &e) != nil || e.Cursor == "" {
		return nil
	}
	return []byte(e.Cursor)
}

// send hands bb's batch to Read, unless it is empty.
func (s *source) send(ctx context.Context, bb *builder, p *pump) error {
	if bb.b == nil {
		return nil
	}
	c := chunk{b: bb.b}
	if bb.cursor != nil {
		c.cursor = string(bb.cursor)
	}
	*bb = builder{}
	entries := len(c.b.Records) > 0 // c.b is Read's once sent
	select {
	case s.out <- c:
	case <-ctx.Done():
		c.b.Release()
		return ctx.Err()
	}
	if c.cursor != "" {
		p.cursor = c.cursor
	}
	if entries && s.health.Load() != nil {
		s.working(p)
	}
	return nil
}

// builder fills a batch.
type builder struct {
	b      *stages.Batch
	buf    []byte // the batch's current buffer
	size   int
	cursor []byte // of the last entry, in buf
}

// copy copies line into the batch's memory, starting a batch if needed.
func (bb *builder) copy(line []byte) []byte {
	if bb.b == nil {
		bb.b = &stages.Batch{Records: stages.NewRecords(batchRecords)}
	}
	if cap(bb.buf)-len(bb.buf) < len(line) {
		bb.buf = stages.NewBuffer(max(batchBytes, len(line)))
		bb.b.Own(bb.buf)
	}
	start := len(bb.buf)
	bb.buf = append(bb.buf, line...)
	bb.size += len(line)
	return bb.buf[start:len(bb.buf):len(bb.buf)]
}

func (bb *builder) reject(rec stages.Record, err error, length int64) {
	bb.b.Rejects = append(bb.b.Rejects, stages.Reject{Record: rec, Err: err, Length: length})
}

func (bb *builder) full() bool {
	return bb.b != nil && (len(bb.b.Records)+len(bb.b.Rejects) >= batchRecords || bb.size >= batchBytes)
}

// tailWriter keeps the last max bytes written to it: journalctl's
// stderr, quoted in the error when it exits. Read it after cmd.Wait.
type tailWriter struct {
	max int
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	if over := len(w.buf) - w.max; over > 0 {
		w.buf = append(w.buf[:0], w.buf[over:]...)
	}
	return len(p), nil
}

// quote is ": " and the last line of stderr, or "" when it is empty.
func (w *tailWriter) quote() string {
	s := strings.TrimSpace(string(w.buf))
	if s == "" {
		return ""
	}
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return ": " + s
}
