package jsonrec

import (
	"errors"
	"strings"
	"testing"
)

func TestDocument(t *testing.T) {
	cases := []struct {
		in   string
		want string // elements joined by |, or the error's type
	}{
		{`{"a":1}`, `{"a":1}`},
		{" [ {\"a\": [1, 2]} ,\n 3, \"x\" , [] ] \n", `{"a": [1, 2]}|3|"x"|[]`},
		{`[]`, ``},
		{`"s"`, `"s"`},
		{``, `syntax`},
		{`[{"a":1},]`, `syntax`},
		{`{"a":1} {"b":2}`, `syntax`},
		{"[\"\xff\"]", `utf8`},
	}
	for _, c := range cases {
		var got []string
		err := Document([]byte(c.in), func(v []byte, off int) {
			if !strings.HasPrefix(c.in[off:], string(v)) {
				t.Errorf("%q: offset %d does not point at %q", c.in, off, v)
			}
			got = append(got, string(v))
		})
		res := strings.Join(got, "|")
		if se := (*SyntaxError)(nil); errors.As(err, &se) {
			res = "syntax"
		} else if ue := (*UTF8Error)(nil); errors.As(err, &ue) {
			res = "utf8"
		}
		if err != nil && len(got) > 0 {
			t.Errorf("%q: elements passed along with error %v", c.in, err)
		}
		if res != c.want {
			t.Errorf("Document(%q) = %q (%v), want %q", c.in, res, err, c.want)
		}
	}
}

func TestAppendCompact(t *testing.T) {
	in := "{\n  \"a b\" : [ 1 ,\t2 ],\r\n  \"s\": \"keep  \\\" spaces \",\n  \"o\": { }\n}"
	want := `{"a b":[1,2],"s":"keep  \" spaces ","o":{}}`
	if got := string(AppendCompact([]byte("x"), []byte(in))); got != "x"+want {
		t.Errorf("AppendCompact = %s, want x%s", got, want)
	}
}
