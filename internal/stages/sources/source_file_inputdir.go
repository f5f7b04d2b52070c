package sources

import (
	"path/filepath"
	"strings"
)

// InputDir is the one directory whose files the source can read: the
// directory of its glob when that has no wildcard, else "". The config
// loader's own-output check uses it to compare a source with the sinks
// writing into that directory only, instead of with every sink of every
// pipeline (a directory of hundreds of pipelines).
func (c *FileConfig) InputDir() string {
	dir := filepath.Dir(c.Path)
	if strings.ContainsAny(dir, `*?[\`) {
		return ""
	}
	return dir
}
