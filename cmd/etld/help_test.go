package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// TestEveryCommandHelpHasAnExample: `etld COMMAND -h`, `--help` and `etld
// help COMMAND` exit 0 and print the usage line and an example, for every
// command the usage text lists.
func TestEveryCommandHelpHasAnExample(t *testing.T) {
	listed := regexp.MustCompile(`(?m)^  etld (\w+)`).FindAllStringSubmatch(usage, -1)
	if len(listed) < 7 {
		t.Fatalf("usage lists %d commands: %q", len(listed), usage)
	}
	seen := map[string]bool{}
	for _, m := range listed {
		name := m[1]
		if seen[name] {
			continue // the Examples section repeats some
		}
		seen[name] = true
		if _, ok := commands[name]; !ok {
			t.Errorf("command %q has no help entry", name)
			continue
		}
		for _, args := range [][]string{{name, "-h"}, {name, "--help"}, {"help", name}} {
			var out, errb bytes.Buffer
			code := run(args, &out, &errb)
			text := out.String() + errb.String()
			if code != exitOK || !strings.Contains(text, "Usage: etld "+name) || !strings.Contains(text, "Example:\n  etld "+name) {
				t.Errorf("etld %s: exit %d, output:\n%s", strings.Join(args, " "), code, text)
			}
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"help", "nosuch"}, &out, &errb); code != exitUsage || !strings.Contains(errb.String(), `unknown command "nosuch"`) {
		t.Errorf("etld help nosuch: exit %d, stderr %q", code, errb.String())
	}
}
