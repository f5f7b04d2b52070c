package steps

import (
	"errors"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// ParseJSONConfig is the config of parse_json, which takes no options:
// it is written `parse_json: {}` (or `parse_json:` with a null value).
type ParseJSONConfig struct{}

// UnmarshalYAML accepts an empty mapping or null.
func (c *ParseJSONConfig) UnmarshalYAML(n *yaml.Node) error {
	n = resolve(n)
	if n == nil || isNull(n) || (n.Kind == yaml.MappingNode && len(n.Content) == 0) {
		return nil
	}
	return errors.New("parse_json: takes no options; write `parse_json: {}`")
}

// parseJSON validates each record as one JSON object. It is stateless.
type parseJSON struct{}

// Process marks every record whose Raw is one valid JSON object in valid
// UTF-8 as Parsed, trimming surrounding whitespace (a subslice: the JSON
// text itself is kept byte for byte), and moves every other record to
// b.Rejects with an "invalid JSON: ..." or "invalid UTF-8 ..." error.
// It allocates nothing for good records.
func (parseJSON) Process(b *stages.Batch) {
	c := compactor{b: b}
	for i := range b.Records {
		r := &b.Records[i]
		obj, err := jsonrec.ValidObject(r.Raw)
		if err != nil {
			c.reject(r, err)
			continue
		}
		r.Raw, r.Parsed = obj, true
		c.keep(r)
	}
	c.done()
}

func init() {
	register(stepFactory("parse_json",
		"Checks that each record is one JSON object in valid UTF-8 and gives it fields, keeping its text as is; "+
			"anything else (an empty line, an array, a bare value, bad UTF-8) is a bad record. Written `parse_json: {}`.",
		stages.Caps{Parses: true},
		func(stages.Settings, *ParseJSONConfig) (stages.Step, error) { return parseJSON{}, nil }))
}
