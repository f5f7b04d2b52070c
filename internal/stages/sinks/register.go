// Package sinks holds etld's built-in sink types, one file per type. Each
// file declares its config (defaults in NewConfig, `yaml` and `doc` struct
// tags, Validate), its implementation, and registers its stages.Factory from
// init, so adding a type touches nothing else.
package sinks

import (
	"slices"

	"github.com/etld/etld/internal/stages"
)

var factories []stages.Factory

func register(f stages.Factory) { factories = append(factories, f) }

// All returns the factories of every built-in sink type.
func All() []stages.Factory { return slices.Clone(factories) }
