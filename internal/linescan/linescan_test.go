package linescan

import "testing"

func TestString(t *testing.T) {
	for _, c := range []struct {
		line, key, want string
		ok              bool
	}{
		{`{"feed":"feed-3","seq":12}`, `"feed":"`, "feed-3", true},
		{`{"feed":"","seq":12}`, `"feed":"`, "", true},
		{`{"seq":12}`, `"feed":"`, "", false},
		{`{"feed":"unterminated`, `"feed":"`, "", false},
		{`{"feed":"a\"b"}`, `"feed":"`, "", false},
		{`{"a":"x","feed":"first","feed":"second"}`, `"feed":"`, "first", true},
	} {
		got, ok := String([]byte(c.line), c.key)
		if got != c.want || ok != c.ok {
			t.Errorf("String(%s, %s) = %q, %v; want %q, %v", c.line, c.key, got, ok, c.want, c.ok)
		}
	}
}

func TestInt(t *testing.T) {
	for _, c := range []struct {
		line, key string
		want      int64
		ok        bool
	}{
		{`{"seq":1234,"x":1}`, `"seq":`, 1234, true},
		{`{"seq":0}`, `"seq":`, 0, true},
		{`{"version":7}`, `"version":`, 7, true},
		{`{"seq":"12"}`, `"seq":`, 0, false},
		{`{"seq":-3}`, `"seq":`, 0, false},
		{`{"other":5}`, `"seq":`, 0, false},
	} {
		got, ok := Int([]byte(c.line), c.key)
		if got != c.want || ok != c.ok {
			t.Errorf("Int(%s, %s) = %d, %v; want %d, %v", c.line, c.key, got, ok, c.want, c.ok)
		}
	}
}
