package sources

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFollowCoalescesPasses: after a pass that read lines without filling
// its batch, the next pass waits for the coalescing window even though
// lines are ready (a Read that ends before the window gives nothing); the
// lines written meanwhile come once the window is over, each once. A
// pass that fills its batch (a backlog) starts no window.
func TestFollowCoalescesPasses(t *testing.T) {
	defer func(d time.Duration) { coalesceWindow = d }(coalesceWindow)
	coalesceWindow = time.Hour
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	writeFile(t, a, "")
	writeFile(t, b, "")
	src := newFile(t, followConfig(filepath.Join(dir, "*.log")))
	g := &got{}
	appendFile(t, a, "a1\n")
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 1 }) // idle before: no wait
	appendFile(t, b, "b1\n")
	appendFile(t, a, "a2\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*pollInterval)
	batch, err := src.Read(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || batch != nil {
		t.Fatalf("Read within the window = %v, %v; want nothing until the window is over", batch, err)
	}
	src.paceUntil = time.Now() // the window is over
	readUntil(t, src, g, func(g *got) bool { return len(g.lines) == 3 })
	if got := strings.Join(g.lines, " "); got != "a1 b1 a2" && got != "a1 a2 b1" {
		t.Fatalf("lines %q, want a1 then a2 and b1 once each", got)
	}

	// A backlog fills the batch: no window after it.
	var sb strings.Builder
	for i := range 5000 {
		fmt.Fprintf(&sb, "line %d\n", i)
	}
	src.paceUntil = time.Time{}
	appendFile(t, a, sb.String())
	for len(g.lines) < 3+5000 {
		before := len(g.lines)
		readUntil(t, src, g, func(g *got) bool { return len(g.lines) > before })
		if len(g.lines) < 3+5000 && src.paceUntil.After(time.Now()) {
			t.Fatalf("a window started after a full batch (%d lines read of %d)", len(g.lines)-3, 5000)
		}
	}
}
