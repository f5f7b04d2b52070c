package config

import (
	"fmt"
	"testing"
)

// TestUpstreamCheckWarns: a sink whose options depend on the sources
// that feed it (stages.UpstreamChecker) is checked against their types
// through workers, and what it says is a warning at the option: a
// transactional kafka sink fed by a file source only, or by a file and a
// kafka source, gets one; behind kafka sources only, or not
// transactional, it gets none.
func TestUpstreamCheckWarns(t *testing.T) {
	const head = `version: 1
sources:
  bus: {type: kafka, brokers: [127.0.0.1:9092], topics: [t], group: g}
  logs: {type: file, path: /var/log/app.log}
workers:
  w: {inputs: [%s], steps: [parse_json: {}]}
sinks:
  screen: {type: stdout, inputs: [bus, logs]}
  out:
    type: kafka
    brokers: [127.0.0.1:9092]
    topic: o
    inputs: [w]
    transactional: %s
`
	for _, c := range []struct {
		name, inputs, transactional string
		want                        []string
	}{
		{"kafka only", "bus", "true", nil},
		{"not transactional", "logs", "false", nil},
		{"file only", "logs", "true", []string{
			"p.yaml:14:20: warning: sinks.out.transactional: no kafka source feeds this sink (only file): the transactions commit no consumed offsets, so a crash can produce records again, as without transactional (exactly once needs a kafka source upstream)"}},
		{"file and kafka", "bus, logs", "true", []string{
			"p.yaml:14:20: warning: sinks.out.transactional: records from the file sources upstream of this sink are produced at least once across a crash: only a kafka source's consumed offsets commit with the transaction"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := fmt.Sprintf(head, c.inputs, c.transactional)
			p, ds := Parse("p.yaml", []byte(src), testOptions())
			if p == nil || ds.HasErrors() {
				t.Fatalf("Parse failed: %v", diagLines(ds))
			}
			equalLines(t, "diagnostics", diagLines(ds), c.want)
		})
	}
}

// TestUpstreamCheckDeadLetter: a dead-letter sink has no inputs but gets
// the rejects of every stage, so it is checked against every source.
func TestUpstreamCheckDeadLetter(t *testing.T) {
	const src = `version: 1
dead_letter: bad
sources:
  bus: {type: kafka, brokers: [127.0.0.1:9092], topics: [t], group: g}
  logs: {type: file, path: /var/log/app.log}
sinks:
  out: {type: stdout, inputs: [bus, logs]}
  bad: {type: kafka, brokers: [127.0.0.1:9092], topic: dl, transactional: true}
`
	p, ds := Parse("p.yaml", []byte(src), testOptions())
	if p == nil || ds.HasErrors() {
		t.Fatalf("Parse failed: %v", diagLines(ds))
	}
	equalLines(t, "diagnostics", diagLines(ds), []string{
		"p.yaml:8:75: warning: sinks.bad.transactional: records from the file sources upstream of this sink are produced at least once across a crash: only a kafka source's consumed offsets commit with the transaction"})
}
