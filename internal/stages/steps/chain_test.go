package steps

import (
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/etld/etld/internal/stages"
)

// benchLines returns n lines shaped like the benchmark data; every tenth
// has level "debug".
func benchLines(n int) []string {
	words := []string{"login", "queue", "quebec", "alpha", "india", "kilo", "retry", "ok"}
	out := make([]string, n)
	for i := range out {
		level := "info"
		if i%10 == 3 {
			level = "debug"
		}
		out[i] = fmt.Sprintf(`{"ts":"2026-11-26T10:00:00.%06dZ","feed":"feed-%d","seq":%d,"level":%q,"user":"u%04d","amount":%d.%02d,"msg":"%s %s %s %s %s"}`,
			(i*1171)%1000000, i%4, i, level, (i*7577)%10000, (i*37)%1000, i%100,
			words[i%8], words[(i+1)%8], words[(i+3)%8], words[(i+5)%8], words[(i+6)%8])
	}
	return out
}

// chain is the steps of a worker, applied in order.
type chain []stages.Step

func (c chain) Process(b *stages.Batch) {
	for _, s := range c {
		s.Process(b)
	}
}

func fullChain(t testing.TB) chain {
	return chain{
		newStep(t, "parse_json", "{}"),
		newStep(t, "filter", `'level != "debug"'`),
		newStep(t, "set", `{pipeline: w2}`),
		newStep(t, "eval", `{cents: 'int(amount * 100)', tag: 'feed + "/" + user'}`),
		newStep(t, "drop", `[user, msg]`),
	}
}

// TestConcurrentProcess runs one set of steps from several goroutines on
// different batches (as a worker does) and checks every output against a
// sequential run; -race checks for shared mutable state.
func TestConcurrentProcess(t *testing.T) {
	lines := benchLines(200)
	lines[5] = `not json`
	lines[7] = `{"level":"info","amount":"x","feed":"f","user":"u"}`

	ref := readBatch(t, lines...)
	fullChain(t).Process(ref)
	want := rawLines(ref.Records)
	wantRejects := rejectErrors(ref.Rejects)
	if len(want) != 178 || len(wantRejects) != 2 {
		t.Fatalf("reference run: %d records, rejects %q", len(want), wantRejects)
	}
	for _, raw := range want {
		m := decodeRecord(t, []byte(raw))
		if m["pipeline"] != "w2" || m["level"] == "debug" || m["user"] != nil || m["msg"] != nil || m["cents"] == nil {
			t.Fatalf("unexpected output record %s", raw)
		}
	}

	steps := fullChain(t)
	const goroutines, rounds = 8, 20
	inputs := make([][]*stages.Batch, goroutines)
	for g := range inputs {
		for range rounds {
			inputs[g] = append(inputs[g], readBatch(t, lines...))
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range inputs[g] {
				steps.Process(b)
				if got := rawLines(b.Records); !reflect.DeepEqual(got, want) {
					errs <- fmt.Errorf("goroutine %d: output differs from the sequential run", g)
					return
				}
				if got := rejectErrors(b.Rejects); !reflect.DeepEqual(got, wantRejects) {
					errs <- fmt.Errorf("goroutine %d: rejects %q", g, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// benchInput holds pristine lines and rebuilds a batch from them for each
// iteration without allocating (steps edit batches in place).
type benchInput struct {
	data []byte
	ends []int
	buf  []byte
	b    stages.Batch
}

func newBenchInput(lines []string) *benchInput {
	in := &benchInput{}
	for _, l := range lines {
		in.data = append(in.data, l...)
		in.ends = append(in.ends, len(in.data))
	}
	in.buf = make([]byte, len(in.data))
	in.b.Records = make([]stages.Record, 0, len(lines))
	return in
}

func (in *benchInput) batch(parsed bool) *stages.Batch {
	copy(in.buf, in.data)
	// As the runtime does once a batch is written: the buffers the steps
	// took come back to the pools (else every iteration allocates them).
	in.b.Release()
	in.b.Records = stages.NewRecords(len(in.ends))
	in.b.Rejects = in.b.Rejects[:0]
	start := 0
	for _, end := range in.ends {
		in.b.Records = append(in.b.Records, stages.Record{Raw: in.buf[start:end:end], Parsed: parsed, Offset: int64(start)})
		start = end
	}
	return &in.b
}

// runBench processes a 1024-record batch per iteration and reports
// ns/record and allocs/record.
func runBench(b *testing.B, step stages.Step, parsed bool) {
	in := newBenchInput(benchLines(1024))
	b.SetBytes(int64(len(in.data)))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for b.Loop() {
		step.Process(in.batch(parsed))
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	n := float64(b.N) * 1024
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/record")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "allocs/record")
}

func BenchmarkParseJSON(b *testing.B) { runBench(b, newStep(b, "parse_json", "{}"), false) }
func BenchmarkFilter(b *testing.B)    { runBench(b, newStep(b, "filter", `'level != "debug"'`), true) }
func BenchmarkSet(b *testing.B)       { runBench(b, newStep(b, "set", `{pipeline: w2}`), true) }
func BenchmarkEval(b *testing.B) {
	runBench(b, newStep(b, "eval", `{cents: 'int(amount * 100)'}`), true)
}
func BenchmarkDrop(b *testing.B) { runBench(b, newStep(b, "drop", `[user, msg]`), true) }

// BenchmarkFilterVM is a filter that is not `field == literal` or
// `field != literal`, so it runs on the expression VM.
func BenchmarkFilterVM(b *testing.B) {
	runBench(b, newStep(b, "filter", `'level != "debug" && amount >= 0'`), true)
}

// workerChain runs steps as a worker does: every step but the last is
// asked to index the fields it writes, for the steps after it.
type workerChain []stages.Step

func (c workerChain) Process(b *stages.Batch) {
	for k, s := range c {
		b.IndexFields = k < len(c)-1
		s.Process(b)
	}
	b.IndexFields = false
	b.DropFields()
}

// BenchmarkW2Chain is the W2 worker: parse_json, filter, set.
func BenchmarkW2Chain(b *testing.B) {
	runBench(b, workerChain{
		newStep(b, "parse_json", "{}"),
		newStep(b, "filter", `'level != "debug"'`),
		newStep(b, "set", `{pipeline: w2}`),
	}, false)
}

// BenchmarkW2ChainEncodingJSON is the same chain done the naive way, for
// comparison: full encoding/json unmarshal, expression over the map, marshal.
func BenchmarkW2ChainEncodingJSON(b *testing.B) {
	f, err := loadConfig(b, "filter", `'level != "debug"'`)
	if err != nil {
		b.Fatal(err)
	}
	prog := f.(*FilterConfig).prog
	runBench(b, stepFunc(func(batch *stages.Batch) {
		s := newExprScratch(&envSpec{})
		w := 0
		for _, r := range batch.Records {
			var m map[string]any
			if err := json.Unmarshal(r.Raw, &m); err != nil {
				batch.Rejects = append(batch.Rejects, stages.Reject{Record: r, Err: err})
				continue
			}
			s.env = m
			out, err := s.run(prog)
			if err != nil || out != true {
				continue
			}
			m["pipeline"] = "w2"
			if r.Raw, err = json.Marshal(m); err != nil {
				b.Fatal(err)
			}
			r.Parsed = true
			batch.Records[w] = r
			w++
		}
		batch.Records = batch.Records[:w]
	}), false)
}

type stepFunc func(*stages.Batch)

func (f stepFunc) Process(b *stages.Batch) { f(b) }

// TestBenchLinesShape keeps the benchmark data honest.
func TestBenchLinesShape(t *testing.T) {
	lines := benchLines(1024)
	debug, size := 0, 0
	for _, l := range lines {
		m := decodeRecord(t, []byte(l))
		if m["level"] == "debug" {
			debug++
		}
		size += len(l)
	}
	if debug < 100 || debug > 105 || !strings.HasPrefix(lines[0], `{"ts":"2026-11-26T10:00:00.000000Z","feed":"feed-0","seq":0,"level":"info"`) {
		t.Fatalf("debug %d, first line %s", debug, lines[0])
	}
	t.Logf("average line %d bytes", size/len(lines))
}
