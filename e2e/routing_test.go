package e2e

import (
	"path/filepath"
	"testing"
)

// routingPipeline follows two files through a worker with two overlapping
// routes into three sinks: one per route and one for the unmatched.
const routingPipeline = `version: 1
checkpoint_interval: 100ms
sources:
  alpha: { type: file, path: in/alpha.jsonl, follow: true }
  beta:  { type: file, path: in/beta.jsonl, follow: true }
workers:
  classify:
    inputs: [alpha, beta]
    concurrency: 2
    steps:
      - parse_json: {}
    routes:
      debug: 'level == "debug"'
      big: 'amount > 900'
sinks:
  debug: { type: file, inputs: [classify.debug], path: out/debug.jsonl }
  big:   { type: file, inputs: [classify.big], path: out/big.jsonl }
  rest:  { type: file, inputs: [classify._unmatched], path: out/rest.jsonl }
`

// routeSets splits keys into the set each sink must hold, computed from
// the record generator's rules (not by evaluating the routes): debug is
// one seq in ten, big an amount over 900, rest neither.
func routeSets(keys []string) map[string][]string {
	sets := map[string][]string{}
	for _, k := range keys {
		_, seq := splitKey(k)
		debug, big := isDebug(seq), amount(seq) > 900
		if debug {
			sets["debug"] = append(sets["debug"], k)
		}
		if big {
			sets["big"] = append(sets["big"], k)
		}
		if !debug && !big {
			sets["rest"] = append(sets["rest"], k)
		}
	}
	return sets
}

// TestRoutesExactlyOncePerSink: every sink gets exactly the records of its
// route, a record of both routes once in each of the two sinks, also when
// etld is killed with -9 twice while it writes and restarted with the
// same state dir (lines appended while it is down are read too).
func TestRoutesExactlyOncePerSink(t *testing.T) {
	t.Parallel()
	const perFile = 60000
	dir := t.TempDir()
	keys := writeAlphaBeta(t, dir, perFile)
	cfg := writeConfig(t, dir, "routes.yaml", routingPipeline)
	state := filepath.Join(dir, "state")
	ckpt := filepath.Join(state, "routes.json")
	out := func(sink string) string { return filepath.Join(dir, "out", sink+".jsonl") }

	next := perFile
	for round := range 2 {
		p := startEtld(t, dir, nil, runArgs(cfg, state)...)
		before := fileMTime(ckpt)
		c := &lineCounter{path: out("rest")}
		base := c.count()
		p.eventually("a new checkpoint and more output", func() bool {
			return fileMTime(ckpt) != before && c.count() > base
		})
		p.kill()
		t.Logf("round %d: killed with %d lines in rest.jsonl", round, (&lineCounter{path: out("rest")}).count())
		for _, name := range []string{"alpha", "beta"} {
			data, more := feed(name, next, 1000)
			appendFile(t, filepath.Join(dir, "in", name+".jsonl"), data)
			keys = append(keys, more...)
		}
		next += 1000
	}

	sets := routeSets(keys)
	if len(sets["debug"]) == 0 || len(sets["big"]) == 0 || len(sets["rest"]) == 0 {
		t.Fatalf("the data leaves a route empty: %d debug, %d big, %d rest", len(sets["debug"]), len(sets["big"]), len(sets["rest"]))
	}
	p := startEtld(t, dir, nil, runArgs(cfg, state)...)
	for _, sink := range []string{"debug", "big", "rest"} {
		p.waitForLines(out(sink), len(sets[sink]), sets[sink])
	}
	p.expectExit(p.stop(), 0, "SIGTERM after catching up")
	for _, sink := range []string{"debug", "big", "rest"} {
		checkExactlyOnce(t, sink+".jsonl after two kills", sets[sink], outputKeys(t, out(sink)))
	}
}
