// Package builtin holds etld's built-in stage types, one file per type:
// source_*.go, step_*.go and sink_*.go. Each file declares its config (with
// defaults in NewConfig, `yaml` and `doc` struct tags, and Validate), its
// implementation, and registers its Factory from init, so adding a type
// touches nothing else.
//
// Registry returns a fresh registry holding all of them; tests build their
// own registries of fakes with stages.NewRegistry.
package builtin

import (
	"fmt"

	"github.com/etld/etld/internal/stages"
)

var factories []stages.Factory

// register is called from the init function of each type's file.
func register(f stages.Factory) { factories = append(factories, f) }

// Registry returns a new registry with every built-in stage type.
func Registry() *stages.Registry {
	r := stages.NewRegistry()
	for _, f := range factories {
		if err := r.Add(f); err != nil {
			// Two built-ins with one name is a programming error caught by
			// every test that builds the registry.
			panic(fmt.Sprintf("builtin: %v", err))
		}
	}
	return r
}
