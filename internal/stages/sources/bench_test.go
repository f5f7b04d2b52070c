package sources

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/etld/etld/internal/stages"
)

// BenchmarkFileReadOnce reads a file of 200k JSON lines of ~150 bytes to
// its end; MB/s is input bytes, allocs/op is per whole file.
func BenchmarkFileReadOnce(b *testing.B) {
	path := filepath.Join(b.TempDir(), "big.jsonl")
	var sb strings.Builder
	const lines = 200_000
	for i := range lines {
		fmt.Fprintf(&sb, `{"ts":"2024-05-01T12:00:00.%06dZ","level":"info","user":%d,"msg":"order accepted","amount":%d.25,"pad":"%s"}`+"\n",
			i%1000000, i%5000, i%997, strings.Repeat("x", 20))
	}
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(sb.Len()))
	b.ReportAllocs()
	ctx := context.Background()
	settings := stages.Settings{ID: "bench", Logger: zerolog.Nop()}
	for b.Loop() {
		cfg := NewFileConfig()
		cfg.Path, cfg.Follow = path, false
		src := NewFileSource(settings, cfg)
		if err := src.Open(ctx); err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			batch, err := src.Read(ctx)
			if errors.Is(err, stages.ErrEndOfInput) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n += len(batch.Records)
			batch.Release() // as the sink does: the read buffers come back
		}
		src.Close()
		if n != lines {
			b.Fatalf("read %d lines, want %d", n, lines)
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
