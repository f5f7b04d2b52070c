package sinks

import (
	"math/rand"
	"syscall"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// runsOf is a batch of lines as line runs (stages.Batch.AddLines) of
// 1 to 12 lines each, in one buffer the batch owns.
func runsOf(rng *rand.Rand, lines []string) *stages.Batch {
	size := 0
	for _, l := range lines {
		size += len(l) + 1
	}
	buf := stages.NewBuffer(size)[:0]
	b := &stages.Batch{}
	o := &stages.Origin{Path: "in"}
	for i := 0; i < len(lines); {
		n := min(1+rng.Intn(12), len(lines)-i)
		lo := len(buf)
		for _, l := range lines[i : i+n] {
			buf = append(append(buf, l...), '\n')
		}
		b.AddLines(buf[lo:len(buf):len(buf)], n, o, int64(lo))
		i += n
	}
	b.Own(buf)
	return b
}

// TestFileSinkLineRunsFaults is TestFileSinkWriteFaultsThenRecover with
// batches of line runs: small runs through the buffer, large ones
// straight to the file, and with rotation (which splits them into
// Records) too. Writes fail in bursts and are retried with what Write
// left in the batch: every line is written once, in order, and the
// sink never counts a byte the file lacks.
func TestFileSinkLineRunsFaults(t *testing.T) {
	for _, rot := range []string{"no rotation", "rotate+gzip"} {
		t.Run(rot, func(t *testing.T) {
			fs := newFaultSink(t, func(c *FileConfig) {
				c.BufferSize = 100
				if rot != "no rotation" {
					c.Rotate = RotateConfig{MaxSize: 700, Gzip: true}
				}
			})
			fs.write.err = syscall.ENOSPC
			fs.fsync.err = syscall.EIO
			rng := rand.New(rand.NewSource(int64(len(rot))))
			lines := numbered("rec", 0, 2000, 19) // 20 bytes a line
			runs := 0
			sealed := fs.writeAll(rng, lines, 60, func(l []string) *stages.Batch {
				b := runsOf(rng, l)
				if b.LineRuns() == 0 || b.Len() != len(l) {
					t.Fatalf("the test batch has %d runs, %d records; want runs of %d", b.LineRuns(), b.Len(), len(l))
				}
				runs += b.LineRuns()
				return b
			})
			t.Logf("%d runs, %d injected write failures, %d retries, %d sealed segments", runs, fs.write.failed, fs.tries, len(sealed))
		})
	}
}
