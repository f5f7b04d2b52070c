package steps

import (
	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/stages"
)

// KeepConfig is the config of keep, the inverse of drop, written as a
// list of field names: `keep: [ts, level, msg]` (one name, `keep: msg`,
// works too).
type KeepConfig struct {
	// Fields are the top-level fields to keep.
	Fields []string `yaml:"-" doc:"top-level fields to keep; every other field is removed, missing ones are ignored"`
}

// UnmarshalYAML accepts a sequence of strings or one string.
func (c *KeepConfig) UnmarshalYAML(n *yaml.Node) (err error) {
	c.Fields, err = fieldList(n, "keep")
	return err
}

// Validate checks that there is at least one non-empty field name.
func (c *KeepConfig) Validate() error { return checkFieldList(c.Fields, "keep") }

func init() {
	register(stepFactory("keep",
		"Keeps only the named top-level fields (`keep: [ts, msg]`), in their order in the record, and removes every "+
			"other one; the inverse of `drop`.",
		stages.Caps{NeedsFields: true},
		func(_ stages.Settings, c *KeepConfig) (stages.Step, error) {
			return newFieldSelect("keep", c.Fields, true), nil
		}))
}
