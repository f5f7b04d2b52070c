package journald

import (
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/journald/journaltest"
)

// BenchmarkReadJournal reads a journal file of 50,000 entries once
// (follow: false) through journalctl: the source's throughput, journalctl
// included, which does most of the work. BenchmarkJournalctl is
// journalctl alone on the same file, writing to a pipe nobody parses.
func BenchmarkReadJournal(b *testing.B) {
	const n = 50_000
	c := benchJournal(b, n)
	b.ResetTimer()
	for b.Loop() {
		src := newSource(testSettings(b), c)
		if err := src.Open(b.Context()); err != nil {
			b.Fatal(err)
		}
		if got := count(b, src); got != n {
			b.Fatalf("read %d entries, want %d", got, n)
		}
		_ = src.Close()
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
}

func BenchmarkJournalctl(b *testing.B) {
	const n = 50_000
	c := benchJournal(b, n)
	s := newSource(testSettings(b), c)
	b.ResetTimer()
	for b.Loop() {
		if err := exec.Command("journalctl", s.args(&pump{})...).Run(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "entries/s")
}

func benchJournal(b *testing.B, n int) *Config {
	b.Helper()
	remote, dir := journaltest.Remote(b), b.TempDir()
	for from := 0; from < n; from += 10_000 {
		journaltest.Append(b, remote, filepath.Join(dir, "bench.journal"), journaltest.Boot1, from, 10_000)
	}
	c := NewConfig()
	c.Directory, c.Follow = dir, false
	return c
}

// count reads a finite source to its end and returns how many records
// came.
func count(b *testing.B, src stages.Source) int {
	n := 0
	for {
		batch, err := src.Read(b.Context())
		if errors.Is(err, stages.ErrEndOfInput) {
			return n
		}
		if err != nil {
			b.Fatal(err)
		}
		n += len(batch.Records)
		batch.Release()
	}
}
