package sources

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/etld/etld/internal/stages"
)

// GenerateConfig is the config of the `generate` source.
type GenerateConfig struct {
	Count    int           `yaml:"count" doc:"number of records to generate; 0 generates forever"`
	Interval time.Duration `yaml:"interval" doc:"pause between records; 0 generates as fast as possible"`
	Message  string        `yaml:"message" doc:"record template: {{seq}} is the record number from 0, {{ts}} the current time in RFC 3339 with nanoseconds"`
}

// defaultMessage is the default generate template.
const defaultMessage = `{"seq":{{seq}},"msg":"hello from etld"}`

// NewGenerateConfig returns a GenerateConfig with its defaults.
func NewGenerateConfig() *GenerateConfig { return &GenerateConfig{Message: defaultMessage} }

// Validate implements stages.Validator.
func (c *GenerateConfig) Validate() error {
	var errs []error
	if c.Count < 0 {
		errs = append(errs, stages.FieldErr("count", fmt.Errorf("must be >= 0 (0 generates forever), got %d", c.Count)))
	}
	if c.Interval < 0 {
		errs = append(errs, stages.FieldErr("interval", fmt.Errorf("must be >= 0, got %v", c.Interval)))
	}
	if _, err := parseTemplate(c.Message); err != nil {
		errs = append(errs, stages.FieldErr("message", err))
	}
	return errors.Join(errs...)
}

// Finite implements stages.Finiter: a generate source with a count ends.
func (c *GenerateConfig) Finite() bool { return c.Count > 0 }

func init() {
	register(stages.Factory{
		Kind:      stages.KindSource,
		Type:      "generate",
		Doc:       "Generates records from a template, for demos and tests.",
		NewConfig: func() any { return NewGenerateConfig() },
		NewSource: func(s stages.Settings, cfg any) (stages.Source, error) {
			c, ok := cfg.(*GenerateConfig)
			if !ok {
				return nil, fmt.Errorf("generate source %q: config is %T, want *GenerateConfig", s.ID, cfg)
			}
			parts, err := parseTemplate(c.Message)
			if err != nil {
				return nil, fmt.Errorf("generate source %q: message: %w", s.ID, err)
			}
			return &generateSource{cfg: *c, parts: parts, origin: &stages.Origin{Source: s.ID}}, nil
		},
	})
}

// Template parts.
type partKind uint8

const (
	partLiteral partKind = iota
	partSeq
	partTS
)

type templatePart struct {
	kind partKind
	lit  string
}

// parseTemplate splits a message into literals and {{seq}} / {{ts}}
// placeholders. Any other {{name}} is an error; a "{{" without "}}" is
// literal text.
func parseTemplate(msg string) ([]templatePart, error) {
	var parts []templatePart
	for msg != "" {
		i := strings.Index(msg, "{{")
		j := -1
		if i >= 0 {
			j = strings.Index(msg[i+2:], "}}")
		}
		if i < 0 || j < 0 {
			parts = append(parts, templatePart{kind: partLiteral, lit: msg})
			break
		}
		if i > 0 {
			parts = append(parts, templatePart{kind: partLiteral, lit: msg[:i]})
		}
		switch name := strings.TrimSpace(msg[i+2 : i+2+j]); name {
		case "seq":
			parts = append(parts, templatePart{kind: partSeq})
		case "ts":
			parts = append(parts, templatePart{kind: partTS})
		default:
			return nil, fmt.Errorf("unknown placeholder {{%s}} (want {{seq}} or {{ts}})", name)
		}
		msg = msg[i+2+j+2:]
	}
	return parts, nil
}

// generateSource generates records from a template. With an interval, Read
// returns one record per tick (the first one at once); without, up to
// batchMaxRecords per Read. Offset is the record's sequence number and
// Origin.Path is "". Read and Close are called from one goroutine.
type generateSource struct {
	cfg    GenerateConfig
	parts  []templatePart
	origin *stages.Origin
	seq    int64
	ticker *time.Ticker
}

// Open starts the interval ticker, if any.
func (g *generateSource) Open(context.Context) error {
	if g.cfg.Interval > 0 && g.ticker == nil {
		g.ticker = time.NewTicker(g.cfg.Interval)
	}
	return nil
}

// Read generates the next batch; see generateSource.
func (g *generateSource) Read(ctx context.Context) (*stages.Batch, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := int64(batchMaxRecords)
	if g.cfg.Count > 0 {
		n = min(n, int64(g.cfg.Count)-g.seq)
		if n <= 0 {
			return nil, stages.ErrEndOfInput
		}
	}
	if g.cfg.Interval > 0 {
		n = 1
		if g.seq > 0 {
			if g.ticker == nil {
				return nil, errors.New("generate source: read before open")
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-g.ticker.C:
			}
		}
	}
	// One buffer for all the lines: an upper bound of each line's size.
	per := 0
	withTS := false
	for _, p := range g.parts {
		switch p.kind {
		case partLiteral:
			per += len(p.lit)
		case partSeq:
			per += 20
		case partTS:
			per += len(time.RFC3339Nano) + 10
			withTS = true
		}
	}
	b := &stages.Batch{}
	arena := stages.NewBuffer(int(n) * per)
	b.Own(arena)
	recs := stages.NewRecords(int(n))[:n]
	var now time.Time
	for i := range recs {
		if withTS {
			now = time.Now()
		}
		start := len(arena)
		for _, p := range g.parts {
			switch p.kind {
			case partLiteral:
				arena = append(arena, p.lit...)
			case partSeq:
				arena = strconv.AppendInt(arena, g.seq, 10)
			case partTS:
				arena = now.AppendFormat(arena, time.RFC3339Nano)
			}
		}
		end := len(arena)
		recs[i] = stages.Record{Raw: arena[start:end:end], Origin: g.origin, Offset: g.seq}
		g.seq++
	}
	b.Records = recs
	return b, nil
}

// Close stops the ticker. Idempotent.
func (g *generateSource) Close() error {
	if g.ticker != nil {
		g.ticker.Stop()
	}
	return nil
}
