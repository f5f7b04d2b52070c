package stages

import (
	"path/filepath"
	"sync"

	"github.com/etld/etld/internal/rotate"
)

// OwnOutput is a file a sink of the daemon writes: its output path, whose
// rotated segments and temporary files are its own too (rotate.Owns).
type OwnOutput struct {
	Path     string // absolute, as configured
	Pipeline string // pipeline name
	Stage    string // sink id
}

// String names the writer as pipeline/stage.
func (o OwnOutput) String() string { return o.Pipeline + "/" + o.Stage }

// OwnOutputs is the set of files the daemon's sinks write, which its file
// sources never read (reading them back would write them again, growing
// without end). The runtime updates it at every change of the running
// pipelines; file sources consult it whenever they find a file. Safe for
// concurrent use; a nil *OwnOutputs is empty.
type OwnOutputs struct {
	mu   sync.RWMutex
	outs []OwnOutput // paths cleaned
}

// Set replaces the set.
func (o *OwnOutputs) Set(outs []OwnOutput) {
	cleaned := make([]OwnOutput, len(outs))
	for i, out := range outs {
		out.Path = filepath.Clean(out.Path)
		cleaned[i] = out
	}
	o.mu.Lock()
	o.outs = cleaned
	o.mu.Unlock()
}

// Match reports whether path (absolute) is, or may become, the output of a
// sink of the daemon: its path, a rotated segment or a temporary file of
// it; it returns that sink.
func (o *OwnOutputs) Match(path string) (OwnOutput, bool) {
	if o == nil {
		return OwnOutput{}, false
	}
	path = filepath.Clean(path)
	o.mu.RLock()
	defer o.mu.RUnlock()
	for _, out := range o.outs {
		if rotate.Owns(out.Path, path) {
			return out, true
		}
	}
	return OwnOutput{}, false
}
