package syslog

import (
	"strconv"
	"strings"
	"testing"
)

type frame struct {
	kind frameKind
	msg  string
	n    int
}

// feed gives the framer input in chunks of size step and collects every
// frame, then what the end of the stream leaves.
func feed(f *framer, in string, step int) (got []frame, rest string) {
	for len(in) > 0 {
		sp := f.space()
		k := copy(sp, in[:min(step, len(in))])
		f.w += k
		in = in[k:]
		for {
			kind, msg, n, err := f.next()
			if kind == frameMore {
				break
			}
			got = append(got, frame{kind, string(msg), n})
			if kind == frameFatal {
				if err == nil {
					panic("fatal without error")
				}
				return got, ""
			}
		}
	}
	return got, string(f.rest())
}

func TestFramer(t *testing.T) {
	msg5424 := "<34>1 2024-12-04T10:00:00Z host app 12 ID47 - hello"
	counted := strconv.Itoa(len(msg5424)) + " " + msg5424
	cases := []struct {
		name string
		in   string
		want []frame
		rest string
	}{
		{"newline", "<13>Dec  4 10:00:00 h app: a\n<13>Dec  4 10:00:01 h app: b\r\n",
			[]frame{{frameMsg, "<13>Dec  4 10:00:00 h app: a", 0}, {frameMsg, "<13>Dec  4 10:00:01 h app: b", 0}}, ""},
		{"counted", counted + counted,
			[]frame{{frameMsg, msg5424, 0}, {frameMsg, msg5424, 0}}, ""},
		{"counted then newline then counted", counted + "\nx y\n" + counted,
			[]frame{{frameMsg, msg5424, 0}, {frameMsg, "x y", 0}, {frameMsg, msg5424, 0}}, ""},
		{"5424 without PRI is newline framed", "1 2024-12-04T10:00:00Z h a - - - m\n1 - h a - - - m\n",
			[]frame{{frameMsg, "1 2024-12-04T10:00:00Z h a - - - m", 0}, {frameMsg, "1 - h a - - - m", 0}}, ""},
		{"counted 5424 without PRI", "34 1 2024-12-04T10:00:00Z h a - - - m",
			[]frame{{frameMsg, "1 2024-12-04T10:00:00Z h a - - - m", 0}}, ""},
		{"digits without space are a line", "2024-12-04T10:00:00Z host tag: m\n",
			[]frame{{frameMsg, "2024-12-04T10:00:00Z host tag: m", 0}}, ""},
		{"empty lines carry nothing", "\n\r\na\n\n", []frame{{frameMsg, "a", 0}}, ""},
		{"over-long line is cut and skipped", strings.Repeat("x", 100) + "\nok\n",
			[]frame{{frameLong, strings.Repeat("x", 64), 100}, {frameMsg, "ok", 0}}, ""},
		{"declared length over the limit", "100 " + strings.Repeat("x", 100),
			[]frame{{frameFatal, "", 100}}, ""},
		{"absurd declared length", "99999999999 x", []frame{{frameFatal, "", 0}}, ""},
		{"half counted frame at the end", counted[:20], nil, counted[:20]},
		{"line without newline at the end", "a\nb", []frame{{frameMsg, "a", 0}}, "b"},
	}
	for _, c := range cases {
		for _, step := range []int{1, 7, 1 << 20} {
			f := newFramer(64)
			got, rest := feed(f, c.in, step)
			if len(got) != len(c.want) || rest != c.rest {
				t.Errorf("%s (chunks of %d): got %+v rest %q, want %+v rest %q", c.name, step, got, rest, c.want, c.rest)
				continue
			}
			for i := range got {
				if got[i].kind == frameFatal {
					got[i].msg = "" // the head of the frame: what was read so far
				}
				if got[i] != c.want[i] {
					t.Errorf("%s (chunks of %d): frame %d is %+v, want %+v", c.name, step, i, got[i], c.want[i])
				}
			}
		}
	}
}
