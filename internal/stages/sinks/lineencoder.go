package sinks

import "github.com/etld/etld/internal/stages"

// LineEncoder turns records into the lines a sink writes, with the
// sink's encoding: `etld test` compares what a pipeline would write
// without writing anything. Not safe for concurrent use.
type LineEncoder struct {
	enc *encoder // nil: json, Raw as is
}

// NewLineEncoder returns the encoder of a file or stdout sink's config;
// any other sink's records are encoded as json (Raw as is).
func NewLineEncoder(cfg any) (*LineEncoder, error) {
	c, ok := cfg.(interface{ encoding() encodingOptions })
	if !ok {
		return &LineEncoder{}, nil
	}
	enc, err := newEncoder(c.encoding())
	if err != nil {
		return nil, err
	}
	return &LineEncoder{enc: enc}, nil
}

// AppendLine appends r's line, without its newline, to dst.
func (e *LineEncoder) AppendLine(dst []byte, r *stages.Record) []byte {
	if e.enc == nil {
		return append(dst, r.Raw...)
	}
	return e.enc.appendLine(dst, r)
}

// Header is the line the sink writes before its first record (a CSV
// header), without its newline, or "" when there is none.
func (e *LineEncoder) Header() string {
	if e.enc == nil || len(e.enc.header) == 0 {
		return ""
	}
	return string(e.enc.header[:len(e.enc.header)-1])
}
