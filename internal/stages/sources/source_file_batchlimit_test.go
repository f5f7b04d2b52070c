package sources

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/stagetest"
)

// limitGate is a fakeGate that asks for small batches
// (stages.FeedBatchLimiter), as a merge of many feeds does.
type limitGate struct {
	*fakeGate
	records, bytes int
}

func (g limitGate) BatchLimit() (int, int) { return g.records, g.bytes }

// TestGatedBatchLimit: a finite gated source reads each file in batches
// no larger than the gate's limit (records, or bytes: at least one line),
// and still reads every line once.
func TestGatedBatchLimit(t *testing.T) {
	for _, tc := range []struct {
		records, bytes, max int
	}{{37, 1 << 20, 37}, {1000, 100, 17}, {1000, 1, 1}} { // lines of 6 bytes: 17 reach 100
		dir := t.TempDir()
		for _, name := range []string{"a", "b"} {
			var sb strings.Builder
			for i := range 500 {
				fmt.Fprintf(&sb, "%s %04d\n", name, i) // 6 bytes and the newline
			}
			writeFile(t, filepath.Join(dir, name+".log"), sb.String())
		}
		g := limitGate{newFakeGate(), tc.records, tc.bytes}
		cfg := NewFileConfig()
		cfg.Path, cfg.Follow = filepath.Join(dir, "*.log"), false
		src := newGatedFile(t, cfg, g)
		n, biggest := 0, 0
		stagetest.ReadToEnd(t, src, testTimeout, func(b *stages.Batch) {
			checkOneFeed(t, g.fakeGate, b)
			n += len(b.Records)
			biggest = max(biggest, len(b.Records))
		})
		if n != 1000 || biggest != tc.max {
			t.Errorf("limit %d records, %d bytes: read %d lines, biggest batch %d; want 1000, %d", tc.records, tc.bytes, n, biggest, tc.max)
		}
	}
}
