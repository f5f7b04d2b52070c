package sources

import (
	"io"

	"github.com/etld/etld/internal/stages"
)

// NewReaderSource returns a finite source that reads the lines of r and
// frames them as the source of config cfg would: max_line_bytes and
// multiline of a file or stdin source (the stdin defaults for any other
// type). Its records' origin path is path. `etld test` feeds a pipeline's
// test input through it, so that a test sees the same records as the
// real source.
func NewReaderSource(s stages.Settings, cfg any, r io.Reader, path string) stages.Source {
	c := NewStdinConfig()
	switch oc := cfg.(type) {
	case *FileConfig:
		c.MaxLineBytes, c.Multiline = oc.MaxLineBytes, oc.Multiline
	case *StdinConfig:
		*c = *oc
	}
	src := newStdinSource(s, c, r, realClock{})
	src.origin.Path = path
	return src
}
