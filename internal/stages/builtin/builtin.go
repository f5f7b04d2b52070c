// Package builtin assembles the registry of etld's built-in stage types
// from the sources, steps and sinks packages.
//
// Tests that need fakes build their own registry with stages.NewRegistry;
// there is no global registry.
package builtin

import (
	"fmt"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/httpsrc"
	"github.com/etld/etld/internal/stages/journald"
	"github.com/etld/etld/internal/stages/kafka"
	"github.com/etld/etld/internal/stages/nats"
	"github.com/etld/etld/internal/stages/sinks"
	"github.com/etld/etld/internal/stages/sources"
	"github.com/etld/etld/internal/stages/steps"
	"github.com/etld/etld/internal/stages/syslog"
)

// Registry returns a new registry with every built-in stage type.
func Registry() *stages.Registry {
	r := stages.NewRegistry()
	for _, list := range [][]stages.Factory{sources.All(), steps.All(), sinks.All(), httpsrc.All(), journald.All(), kafka.All(), nats.All(), syslog.Factories()} {
		for _, f := range list {
			if err := r.Add(f); err != nil {
				// Two built-ins with one name is a programming error that
				// every test building the registry catches.
				panic(fmt.Sprintf("builtin: %v", err))
			}
		}
	}
	return r
}
