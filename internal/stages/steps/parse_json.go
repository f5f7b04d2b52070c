package steps

import (
	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// ParseJSONConfig is the config of parse_json: `parse_json: {}` parses
// the line, `parse_json: {field: payload}` the JSON object held as a
// string in a field of a parsed record.
type ParseJSONConfig struct {
	Field string `yaml:"field" doc:"parse the JSON object held as a string in this field of a parsed record, and merge its fields into the record (a field of the same name is replaced); without it the line itself is the object"`
}

// parseJSON validates each record as one JSON object. It is stateless.
type parseJSON struct{}

// Process marks every record whose Raw is one valid JSON object in valid
// UTF-8 as Parsed, trimming surrounding whitespace (a subslice: the JSON
// text itself is kept byte for byte), and moves every other record to
// b.Rejects with an "invalid JSON: ..." or "invalid UTF-8 ..." error.
// When the batch asks for it (IndexFields), the same pass indexes each
// record's members for the steps after it, so that a filter or set finds
// its field without walking the record again. It allocates nothing for
// good records.
func (parseJSON) Process(b *stages.Batch) {
	c := compactor{b: b}
	if !b.IndexFields {
		for i := range b.Records {
			r := &b.Records[i]
			obj, err := jsonrec.ValidObject(r.Raw)
			if err != nil {
				c.reject(r, err)
				continue
			}
			r.SetParsed(obj)
			c.keep(r)
		}
		c.done()
		return
	}
	x := stages.NewFieldIndex(len(b.Records))
	for i := range b.Records {
		r := &b.Records[i]
		spans := x.Spans()
		lo := len(spans)
		obj, spans, closeBrace, err := jsonrec.ValidObjectSpans(r.Raw, spans)
		if err != nil {
			x.AddSpans(c.w, nil, spans, lo, -1)
			c.reject(r, err)
			continue
		}
		r.SetParsed(obj)
		x.AddSpans(c.w, obj, spans, lo, closeBrace)
		c.keep(r)
	}
	c.done()
	b.SetFieldIndex(x)
}

// parseJSONField parses the JSON object in a string field and merges its
// members into the record.
type parseJSONField struct{ src fieldSource }

// parse checks it is one JSON object in valid
// UTF-8, and merges its members (copied as they are) into the record: a
// member with the name of an existing field replaces it; of duplicate
// members the last wins. A record that is not parsed, lacks the field, or
// whose field is not a string holding an object is a bad record.
func (st *parseJSONField) parse(text []byte, s *parseScratch) error {
	obj, err := jsonrec.ValidObject(text)
	if err != nil {
		return st.src.in(err)
	}
	s.members, _, err = jsonrec.Members(obj, s.members[:0])
	if err != nil {
		return st.src.in(err)
	}
	for k := range s.members {
		m := &s.members[k]
		key := m.RawKey(obj)
		if m.Escaped {
			v, err := jsonrec.DecodeValue(obj[m.Key:m.KeyEnd], false)
			if err != nil {
				return st.src.in(err)
			}
			key = []byte(v.(string))
		}
		s.out.addRaw(key, obj[m.Val:m.End])
	}
	return nil
}

func init() {
	register(stepFactory("parse_json",
		"Checks that each record is one JSON object in valid UTF-8 and gives it fields, keeping its text as is; "+
			"anything else (an empty line, an array, a bare value, bad UTF-8) is a bad record. Written `parse_json: {}`, "+
			"or `parse_json: {field: NAME}` to merge in the object held as a string in a field.",
		stages.Caps{Parses: true},
		func(_ stages.Settings, c *ParseJSONConfig) (stages.Step, error) {
			if c.Field == "" {
				return parseJSON{}, nil
			}
			st := &parseJSONField{src: fieldSource{Name: c.Field}}
			return newTextStep("parse_json", c.Field, st.parse), nil
		}))
}
