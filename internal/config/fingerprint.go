package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"

	"gopkg.in/yaml.v3"
)

// fingerprint hashes a stage's own options (after interpolation; comments,
// quoting and layout do not count) plus the ids of its inputs.
func fingerprint(kind StageKind, n *yaml.Node, inputs []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00", kind)
	writeCanonical(h, n, true)
	fmt.Fprintf(h, "\x00inputs:%s", strings.Join(inputs, "\x00"))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// hashNode hashes a whole document canonically.
func hashNode(n *yaml.Node) string {
	h := sha256.New()
	writeCanonical(h, n, false)
	return hex.EncodeToString(h.Sum(nil))
}

// writeCanonical writes a layout-independent form of n. With skipInputs,
// the top-level "inputs" key is left out (inputs are hashed as ids).
func writeCanonical(h hash.Hash, n *yaml.Node, skipInputs bool) {
	n = resolveAlias(n)
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			writeCanonical(h, c, false)
		}
	case yaml.MappingNode:
		h.Write([]byte("{"))
		for i := 0; i+1 < len(n.Content); i += 2 {
			if skipInputs && n.Content[i].Value == "inputs" {
				continue
			}
			fmt.Fprintf(h, "%q:", n.Content[i].Value)
			writeCanonical(h, n.Content[i+1], false)
			h.Write([]byte(","))
		}
		h.Write([]byte("}"))
	case yaml.SequenceNode:
		h.Write([]byte("["))
		for _, c := range n.Content {
			writeCanonical(h, c, false)
			h.Write([]byte(","))
		}
		h.Write([]byte("]"))
	case yaml.ScalarNode:
		fmt.Fprintf(h, "%s%q", n.ShortTag(), n.Value)
	}
}
