// Package steps holds etld's built-in worker step types, one file per type. Each
// file declares its config (defaults in NewConfig, `yaml` and `doc` struct
// tags, Validate), its implementation, and registers its stages.Factory from
// init, so adding a type touches nothing else.
package steps

import (
	"fmt"
	"slices"

	"github.com/etld/etld/internal/stages"
)

var factories []stages.Factory

func register(f stages.Factory) { factories = append(factories, f) }

// All returns the factories of every built-in worker step type.
func All() []stages.Factory { return slices.Clone(factories) }

// stepFactory is the Factory of a step type whose config is a *C, from
// new(C): every step type registers through it. New hands build the
// config validated (Validate runs again unless the config says, by a
// compiled() method, that the loader's Validate already compiled it).
func stepFactory[C any](typ, doc string, caps stages.Caps, build func(stages.Settings, *C) (stages.Step, error)) stages.Factory {
	return stages.Factory{
		Kind: stages.KindStep,
		Type: typ,
		Doc:  doc,
		Caps: caps,
		NewConfig: func() any {
			c := new(C)
			if d, ok := any(c).(defaulter); ok {
				d.setDefaults()
			}
			return c
		},
		NewStep: func(s stages.Settings, cfg any) (stages.Step, error) {
			c, ok := cfg.(*C)
			if !ok || c == nil {
				return nil, fmt.Errorf("%s: config is %T, want %T", typ, cfg, c)
			}
			if err := validate(c); err != nil {
				return nil, err
			}
			return build(s, c)
		},
	}
}

// defaulter is a config with defaults other than its zero value, which
// NewConfig sets (and the reference shows).
type defaulter interface{ setDefaults() }

// compiler is a config that keeps what Validate compiled (expressions,
// encoded values), so that building a step from a loaded config does not
// compile it twice.
type compiler interface{ compiled() bool }

// validate runs cfg's Validate unless it is compiled already.
func validate(cfg any) error {
	if c, ok := cfg.(compiler); ok && c.compiled() {
		return nil
	}
	if v, ok := cfg.(stages.Validator); ok {
		return v.Validate()
	}
	return nil
}
