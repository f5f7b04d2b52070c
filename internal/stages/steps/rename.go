package steps

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"unsafe"

	"gopkg.in/yaml.v3"

	"github.com/etld/etld/internal/jsonrec"
	"github.com/etld/etld/internal/stages"
)

// RenameConfig is the config of rename, a mapping of old name to new
// name applied in the order written: `rename: {remote_addr: client, msg:
// message}`.
type RenameConfig struct {
	// Pairs are the renames in order: Pairs[i][0] becomes Pairs[i][1].
	Pairs [][2]string `yaml:"-" doc:"old: new pairs, applied in the order written; a missing field is left alone, an existing field with the new name is replaced"`
}

// UnmarshalYAML accepts a mapping of strings and keeps its order.
func (c *RenameConfig) UnmarshalYAML(n *yaml.Node) error {
	keys, vals, err := mappingPairs(n, "rename", "a mapping of old: new field names")
	if err != nil {
		return err
	}
	c.Pairs = c.Pairs[:0]
	for i, k := range keys {
		v := resolve(vals[i])
		if v.Kind != yaml.ScalarNode || isNull(v) {
			return fmt.Errorf("rename: line %d: the new name of %q must be a string", v.Line, k)
		}
		c.Pairs = append(c.Pairs, [2]string{k, v.Value})
	}
	return nil
}

// Validate checks that there is at least one rename and no empty name.
func (c *RenameConfig) Validate() error {
	if len(c.Pairs) == 0 {
		return stages.FieldErr("", errors.New("rename: want at least one old: new pair"))
	}
	var errs []error
	for _, p := range c.Pairs {
		switch {
		case p[1] == "":
			errs = append(errs, stages.FieldErr(p[0], errors.New("empty new name")))
		case strings.Contains(p[0], removedName) || strings.Contains(p[1], removedName):
			errs = append(errs, stages.FieldErr(p[0], errors.New("field names cannot hold NUL bytes")))
		}
	}
	return errors.Join(errs...)
}

// rename renames top-level fields.
type rename struct {
	pairs [][2]string
	pool  sync.Pool // of *renameScratch
}

type renameScratch struct {
	members []jsonrec.Member
	names   []string // current name of each member; "\x00" once removed
	out     []byte
	outMs   []jsonrec.Member // out's members
}

// removedName marks a member that a rename replaced; Validate keeps NUL
// out of the names renames look for.
const removedName = "\x00"

// Process applies the renames to every parsed record, in order: when a
// field named old exists, a field already named new is removed and old
// takes its place under the new name, keeping its position. A record none
// of whose fields is renamed is left as is. Records not Parsed are
// rejected. It finds the fields, and indexes its output, with the
// batch's field index (stages.FieldIndex).
func (st *rename) Process(b *stages.Batch) {
	s := st.pool.Get().(*renameScratch)
	defer st.pool.Put(s)
	a := arena{b: b}
	c := compactor{b: b}
	var x *stages.FieldIndex
	if b.IndexFields {
		x = stages.NewFieldIndex(len(b.Records))
	}
	for i := range b.Records {
		r := &b.Records[i]
		if !r.Parsed {
			c.reject(r, errNotParsed("rename"))
			continue
		}
		ms, closeBrace, err := members(b, i, &s.members)
		if err != nil {
			c.reject(r, rejectErr("rename", fmt.Errorf("malformed JSON record: %w", err)))
			continue
		}
		if !st.plan(r.Raw, ms, s) {
			x.Add(c.w, r.Raw, ms, closeBrace)
			c.keep(r)
			continue
		}
		s.out = append(s.out[:0], '{')
		outMs := s.outMs[:0]
		first := true
		for k := range ms {
			m := &ms[k]
			name := s.names[k]
			if name == removedName {
				continue
			}
			if !first {
				s.out = append(s.out, ',')
			}
			first = false
			key := len(s.out)
			renamed := m.Escaped || name != unsafe.String(unsafe.SliceData(m.RawKey(r.Raw)), m.KeyEnd-m.Key-2)
			if renamed {
				s.out = jsonrec.AppendKey(s.out, name)
			} else {
				s.out = append(s.out, r.Raw[m.Key:m.Val]...)
			}
			val := len(s.out)
			s.out = append(s.out, r.Raw[m.Val:m.End]...)
			if x == nil {
				continue
			}
			outMs = append(outMs, jsonrec.Member{})
			o := &outMs[len(outMs)-1]
			o.Key, o.Val, o.End, o.ValEscaped = key, val, len(s.out), m.ValEscaped
			if renamed {
				o.KeyEnd = val - 1 // before the colon AppendKey wrote
				o.Escaped = bytes.IndexByte(s.out[key:o.KeyEnd], '\\') >= 0
			} else {
				o.KeyEnd, o.Escaped = key+m.KeyEnd-m.Key, m.Escaped
			}
		}
		s.out = append(s.out, '}')
		a.reserve(len(s.out), len(s.out)*(len(b.Records)-i))
		start := len(a.buf)
		a.buf = append(a.buf, s.out...)
		r.Raw = a.since(start)
		x.Add(c.w, r.Raw, outMs, len(r.Raw)-1)
		s.outMs = outMs
		c.keep(r)
	}
	c.done()
	b.SetFieldIndex(x)
}

// plan sets s.names to the final name of each member and reports whether
// any member was renamed or removed.
func (st *rename) plan(obj []byte, ms []jsonrec.Member, s *renameScratch) bool {
	s.names = s.names[:0]
	for k := range ms {
		m := &ms[k]
		raw := m.RawKey(obj)
		switch {
		case m.Escaped:
			v, err := jsonrec.DecodeValue(obj[m.Key:m.KeyEnd], false)
			if err != nil {
				s.names = append(s.names, string(raw))
				continue
			}
			s.names = append(s.names, v.(string))
		case len(raw) == 0:
			s.names = append(s.names, "")
		default:
			s.names = append(s.names, unsafe.String(&raw[0], len(raw)))
		}
	}
	changed := false
	for _, p := range st.pairs {
		old, nu := p[0], p[1]
		if old == nu {
			continue
		}
		found := false
		for _, n := range s.names {
			if n == old {
				found = true
				break
			}
		}
		if !found {
			continue
		}
		changed = true
		for k, n := range s.names {
			switch n {
			case nu:
				s.names[k] = removedName
			case old:
				s.names[k] = nu
			}
		}
	}
	return changed
}

func init() {
	register(stepFactory("rename",
		"Renames top-level fields (`rename: {remote_addr: client}`), in the order written, keeping their position; "+
			"a missing field is left alone and an existing field with the new name is replaced.",
		stages.Caps{NeedsFields: true},
		func(_ stages.Settings, c *RenameConfig) (stages.Step, error) {
			st := &rename{pairs: c.Pairs}
			st.pool.New = func() any { return new(renameScratch) }
			return st, nil
		}))
}
