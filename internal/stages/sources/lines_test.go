package sources

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/etld/etld/internal/stages"
)

// reference splits data the obvious way: lines, over-long lines as
// (prefix, length) rejects, a final line without newline included.
func reference(data []byte, max int) (lines []string, offsets []int64, rejects [][3]int64) {
	off := int64(0)
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		n := i
		if i < 0 {
			n = len(data)
		}
		if n > max {
			rejects = append(rejects, [3]int64{off, int64(n), int64(max)})
		} else {
			lines = append(lines, string(data[:n]))
			offsets = append(offsets, off)
		}
		if i < 0 {
			break
		}
		data = data[i+1:]
		off += int64(i + 1)
	}
	return lines, offsets, rejects
}

// chunkReader returns data in random-sized chunks.
type chunkReader struct {
	data []byte
	rng  *rand.Rand
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.data), 1+r.rng.IntN(300))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// TestSplitterMatchesReference feeds random text through the stdin source
// (the splitter and batch builder shared with the file source) in random
// chunks and compares with a naive splitter.
func TestSplitterMatchesReference(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		max := 1 + rng.IntN(60)
		var sb strings.Builder
		for range 200 + rng.IntN(400) {
			n := rng.IntN(2 * max)
			if rng.IntN(10) == 0 {
				n = 0
			}
			for i := range n {
				sb.WriteByte('a' + byte(i%26))
			}
			sb.WriteByte('\n')
		}
		if rng.IntN(2) == 0 {
			sb.WriteString(strings.Repeat("z", rng.IntN(2*max)))
		}
		data := []byte(sb.String())
		t.Run(fmt.Sprintf("seed%d_max%d", seed, max), func(t *testing.T) {
			cfg := &StdinConfig{MaxLineBytes: stages.ByteSize(max)}
			src := newStdinSource(testSettings(t), cfg, &chunkReader{data: data, rng: rng}, realClock{})
			defer src.Close()
			g := readToEnd(t, src)
			wantLines, wantOffsets, wantRejects := reference(data, max)
			if !reflect.DeepEqual(g.lines, wantLines) && !(len(g.lines) == 0 && len(wantLines) == 0) {
				t.Fatalf("lines differ: got %d, want %d", len(g.lines), len(wantLines))
			}
			if !reflect.DeepEqual(g.offsets, wantOffsets) && len(wantOffsets) > 0 {
				t.Fatalf("offsets differ")
			}
			if len(g.rejects) != len(wantRejects) {
				t.Fatalf("got %d rejects, want %d", len(g.rejects), len(wantRejects))
			}
			for i, r := range g.rejects {
				w := wantRejects[i]
				if r.Record.Offset != w[0] || r.Length != w[1] || int64(len(r.Record.Raw)) != w[2] {
					t.Errorf("reject %d: offset %d length %d raw %d; want %v", i, r.Record.Offset, r.Length, len(r.Record.Raw), w)
				}
				if !bytes.Equal(r.Record.Raw, data[w[0]:w[0]+w[2]]) {
					t.Errorf("reject %d: raw is not the line's prefix", i)
				}
			}
		})
	}
}

// TestRecordsDoNotShareCapacity checks that appending to one record's Raw
// cannot overwrite the next record.
func TestRecordsDoNotShareCapacity(t *testing.T) {
	src := newStdinSource(testSettings(t), NewStdinConfig(), strings.NewReader("aaa\nbbb\n"), realClock{})
	defer src.Close()
	b, err := src.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = append(b.Records[0].Raw, "XYZ"...)
	if got := string(b.Records[1].Raw); got != "bbb" {
		t.Fatalf("second record = %q after appending to the first", got)
	}
}

func TestStdin(t *testing.T) {
	const input = "one\n\nthree\nlast"
	tests := []struct {
		name string
		r    func() io.Reader
	}{
		{"whole", func() io.Reader { return strings.NewReader(input) }},
		{"one byte", func() io.Reader { return iotest.OneByteReader(strings.NewReader(input)) }},
		{"data with EOF", func() io.Reader { return iotest.DataErrReader(strings.NewReader(input)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newStdinSource(testSettings(t), NewStdinConfig(), tt.r(), realClock{})
			if err := src.Open(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			g := readToEnd(t, src)
			if want := []string{"one", "", "three", "last"}; !reflect.DeepEqual(g.lines, want) {
				t.Errorf("lines = %q, want %q", g.lines, want)
			}
			if want := []int64{0, 4, 5, 11}; !reflect.DeepEqual(g.offsets, want) {
				t.Errorf("offsets = %v, want %v", g.offsets, want)
			}
			for _, p := range g.paths {
				if p != "-" {
					t.Fatalf("origin path %q, want -", p)
				}
			}
		})
	}
}

func TestStdinReadError(t *testing.T) {
	r := io.MultiReader(strings.NewReader("ok\n"), iotest.ErrReader(io.ErrUnexpectedEOF))
	src := newStdinSource(testSettings(t), NewStdinConfig(), r, realClock{})
	defer src.Close()
	ctx := context.Background()
	b, err := src.Read(ctx)
	if err != nil || len(b.Records) != 1 {
		t.Fatalf("first Read = %v, %v; want the good line", b, err)
	}
	if _, err := src.Read(ctx); err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Fatalf("second Read error = %v, want the read error", err)
	}
}

// TestStdinCancel: a Read parked on an empty stream returns when ctx is
// cancelled; the pending read is picked up by the next Read; Close ends it.
func TestStdinCancel(t *testing.T) {
	pr, pw := io.Pipe()
	src := newStdinSource(testSettings(t), NewStdinConfig(), pr, realClock{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := src.Read(ctx)
		errc <- err
	}()
	cancel()
	if err := <-errc; err != context.Canceled {
		t.Fatalf("Read after cancel = %v, want context.Canceled", err)
	}
	// The read still pending in the background gets this data.
	go func() {
		pw.Write([]byte("late\n"))
	}()
	b, err := src.Read(context.Background())
	if err != nil || len(b.Records) != 1 || string(b.Records[0].Raw) != "late" {
		t.Fatalf("Read = %v, %v; want the line written after the cancel", b, err)
	}
	// Park another read, cancel it, and let Close end it.
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := src.Read(ctx2); err != context.Canceled {
		t.Fatalf("Read = %v, want context.Canceled", err)
	}
	ctx3, cancel3 := context.WithCancel(context.Background())
	go func() { errc <- func() error { _, err := src.Read(ctx3); return err }() }()
	cancel3()
	<-errc
	if err := src.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	pw.Close()
}
