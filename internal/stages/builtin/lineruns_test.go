package builtin

import (
	"path/filepath"
	"testing"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/stagetest"
)

// TestConformanceLineRuns runs the source suite on a file source that
// reads its files once (follow: false), the case whose lines come as
// line runs when the runtime asks for them: its ReadAllAsLineRuns and
// StateRoundTripAsLineRuns checks split them into Records, and fail if
// none came.
func TestConformanceLineRuns(t *testing.T) {
	file, _ := Registry().Lookup(stages.KindSource, "file")
	want := stagetest.Lines(3000)
	stagetest.Source(t, file, func(t *testing.T) stagetest.SourceCase {
		dir := t.TempDir()
		writeLines(t, filepath.Join(dir, "a.log"), want[:1000])
		writeLines(t, filepath.Join(dir, "b.log"), want[1000:])
		return stagetest.SourceCase{
			Config:   stagetest.Config(t, file, dir, "path: '*.log'\nfollow: false"),
			Want:     want,
			LineRuns: true,
		}
	})
}
