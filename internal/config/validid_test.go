package config

import (
	"regexp"
	"testing"
)

// validID accepts exactly what the pattern it replaced accepted.
func TestValidIDMatchesPattern(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)
	for _, id := range []string{"", "a", "_", "A9", "in_1-x", "1st", "-a", "in.put", "a b", "é", "a\n", "x-", "Z_z-0", "9", "a$", "_-_"} {
		if got, want := validID(id), re.MatchString(id); got != want {
			t.Errorf("validID(%q) = %v, want %v", id, got, want)
		}
	}
	for c := 0; c < 256; c++ {
		for _, id := range []string{string(rune(c)), "a" + string([]byte{byte(c)})} {
			if got, want := validID(id), re.MatchString(id); got != want {
				t.Errorf("validID(%q) = %v, want %v", id, got, want)
			}
		}
	}
}
