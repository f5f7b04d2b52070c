package config

import (
	"fmt"
	"strings"
)

// suggest returns ` (did you mean "x"?)` when one of valid is close to
// got, else a list of the valid names, so that every "unknown" message
// tells the user what to write instead.
func suggest(got string, valid []string) string {
	if len(valid) == 0 {
		return ""
	}
	best, bestDist := "", -1
	for _, v := range valid {
		d := editDistance(strings.ToLower(got), strings.ToLower(v))
		if bestDist < 0 || d < bestDist {
			best, bestDist = v, d
		}
	}
	limit := len(got) / 3
	if limit < 2 {
		limit = 2
	}
	if bestDist <= limit {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return fmt.Sprintf(" (valid: %s)", strings.Join(valid, ", "))
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
