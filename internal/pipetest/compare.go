package pipetest

import (
	"bytes"
	"encoding/json"
	"math/big"
	"slices"
)

// line is a line to compare, decoded once when it is JSON.
type line struct {
	text string
	json any
	ok   bool // text is a JSON object or array
}

func lines(ss []string) []line {
	out := make([]line, len(ss))
	for i, s := range ss {
		out[i].text = s
		out[i].json, out[i].ok = decodeJSON(s)
	}
	return out
}

// same reports whether an expected line and an actual one match: equal
// text, or both JSON with equal values (object member order and number
// spelling, such as 1.50 and 1.5, do not matter).
func same(want, got line) bool {
	return want.text == got.text || want.ok && got.ok && sameJSON(want.json, got.json)
}

func decodeJSON(s string) (any, bool) {
	b := bytes.TrimSpace([]byte(s))
	if len(b) == 0 || (b[0] != '{' && b[0] != '[') {
		return nil, false // a bare string or number is compared as text
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	return v, true
}

func sameJSON(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok || len(a) != len(bm) {
			return false
		}
		for k, av := range a {
			bv, ok := bm[k]
			if !ok || !sameJSON(av, bv) {
				return false
			}
		}
		return true
	case []any:
		bs, ok := b.([]any)
		if !ok || len(a) != len(bs) {
			return false
		}
		for i := range a {
			if !sameJSON(a[i], bs[i]) {
				return false
			}
		}
		return true
	case json.Number:
		bn, ok := b.(json.Number)
		if !ok {
			return false
		}
		x, okx := new(big.Float).SetPrec(256).SetString(string(a))
		y, oky := new(big.Float).SetPrec(256).SetString(string(bn))
		return okx && oky && x.Cmp(y) == 0
	default: // string, bool, nil
		return a == b
	}
}

// Op is what a line of a diff is.
type Op byte

// The ops of a diff line, as printed.
const (
	Same Op = ' ' // in both
	Want Op = '-' // expected, missing from the output
	Got  Op = '+' // in the output, not expected
)

// DiffLine is one line of a diff between expected and actual lines.
type DiffLine struct {
	Op   Op
	Text string
}

// diff returns the line diff of want and got (a longest common
// subsequence of matching lines, see same), and whether they match.
func diff(wantText, gotText []string) ([]DiffLine, bool) {
	want, got := lines(wantText), lines(gotText)
	// The common head and tail need no search: a passing test costs
	// one comparison a line.
	var head, tail []DiffLine
	for len(want) > 0 && len(got) > 0 && same(want[0], got[0]) {
		head = append(head, DiffLine{Same, got[0].text})
		want, got = want[1:], got[1:]
	}
	for len(want) > 0 && len(got) > 0 && same(want[len(want)-1], got[len(got)-1]) {
		tail = append(tail, DiffLine{Same, got[len(got)-1].text})
		want, got = want[:len(want)-1], got[:len(got)-1]
	}
	slices.Reverse(tail)
	n, m := len(want), len(got)
	eq := make([][]bool, n)
	// lcs[i][j] is the LCS length of want[i:] and got[j:].
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		eq[i] = make([]bool, m)
		for j := m - 1; j >= 0; j-- {
			eq[i][j] = same(want[i], got[j])
			if eq[i][j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	out := head
	ok := true
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && eq[i][j]:
			out = append(out, DiffLine{Same, got[j].text})
			i++
			j++
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			out = append(out, DiffLine{Want, want[i].text})
			i++
			ok = false
		default:
			out = append(out, DiffLine{Got, got[j].text})
			j++
			ok = false
		}
	}
	return append(out, tail...), ok
}
