package config

import (
	"fmt"
	"io"
	"strings"
)

// nodeLabel is the text shown for a stage in `etld graph`.
func nodeLabel(st *Stage, p *Pipeline, nl string) string {
	switch st.Kind {
	case Worker:
		conc := "auto"
		if st.Worker.Concurrency > 0 {
			conc = fmt.Sprint(st.Worker.Concurrency)
		}
		steps := make([]string, len(st.Worker.Steps))
		for i, s := range st.Worker.Steps {
			steps[i] = s.Type
		}
		label := fmt.Sprintf("%s%sworker x%s", st.ID, nl, conc)
		if st.Worker.Ordered {
			label += " ordered"
		}
		if len(steps) > 0 {
			label += nl + strings.Join(steps, ", ")
		}
		if rs := st.Worker.Routes; len(rs) > 0 {
			names := make([]string, len(rs))
			for i, r := range rs {
				names[i] = r.Name
			}
			label += nl + "routes: " + strings.Join(names, ", ")
		}
		return label
	case Sink:
		label := fmt.Sprintf("%s%ssink: %s", st.ID, nl, st.Type)
		if st.ID == p.DeadLetter {
			label += nl + "dead letter"
		}
		if st.Merge != nil {
			label += nl + "merge by " + st.Merge.OrderBy
		}
		return label
	default:
		label := fmt.Sprintf("%s%ssource: %s", st.ID, nl, st.Type)
		if st.Finite {
			label += " (finite)"
		}
		return label
	}
}

// dlEdge is a dashed edge of `etld graph` into the dead-letter sink.
type dlEdge struct {
	from  string // stage id
	label string // "" for a stage's bad records
}

// deadLetterEdges lists what can reach p's dead-letter sink: every source
// and worker (records they cannot decode or process), and each merging
// sink whose late records go there (merge.late: dead_letter).
func deadLetterEdges(p *Pipeline) []dlEdge {
	if p.DeadLetter == "" {
		return nil
	}
	var es []dlEdge
	for _, st := range p.Stages {
		switch {
		case st.Kind != Sink:
			es = append(es, dlEdge{from: st.ID})
		case st.ID != p.DeadLetter && st.Merge != nil && st.Merge.Late == "dead_letter":
			es = append(es, dlEdge{from: st.ID, label: "late records"})
		}
	}
	return es
}

// WriteDOT writes the pipelines as one Graphviz digraph, one cluster per
// pipeline. Dashed edges lead bad records (and a merge's late records) to
// the dead-letter sink.
func WriteDOT(w io.Writer, pipes []*Pipeline) error {
	var b strings.Builder
	b.WriteString("digraph etld {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n")
	for _, p := range pipes {
		fmt.Fprintf(&b, "  subgraph %q {\n    label=%q;\n", "cluster_"+p.Name, p.Name)
		for _, st := range p.Stages {
			shape := map[StageKind]string{Source: "cds", Worker: "box", Sink: "folder"}[st.Kind]
			// %q turns newlines into \n, which DOT draws as centred line breaks.
			fmt.Fprintf(&b, "    %q [label=%q, shape=%s];\n", p.Name+"/"+st.ID, nodeLabel(st, p, "\n"), shape)
		}
		for _, st := range p.Stages {
			for i, in := range st.Inputs {
				if r := st.InputRoutes[i]; r != "" {
					fmt.Fprintf(&b, "    %q -> %q [label=%q];\n", p.Name+"/"+in, p.Name+"/"+st.ID, r)
					continue
				}
				fmt.Fprintf(&b, "    %q -> %q;\n", p.Name+"/"+in, p.Name+"/"+st.ID)
			}
		}
		for _, e := range deadLetterEdges(p) {
			attrs := "style=dashed, color=red"
			if e.label != "" {
				attrs += fmt.Sprintf(", label=%q", e.label)
			}
			fmt.Fprintf(&b, "    %q -> %q [%s];\n", p.Name+"/"+e.from, p.Name+"/"+p.DeadLetter, attrs)
		}
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// mermaidShapes are the node brackets per stage kind: sources are
// parallelograms, workers boxes and sinks cylinders.
var mermaidShapes = map[StageKind][2]string{Source: {"[/", "/]"}, Worker: {"[", "]"}, Sink: {"[(", ")]"}}

// WriteMermaid writes the pipelines as a Mermaid flowchart, one subgraph
// per pipeline.
func WriteMermaid(w io.Writer, pipes []*Pipeline) error {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	for pi, p := range pipes {
		ids := map[string]string{}
		for si, st := range p.Stages {
			ids[st.ID] = fmt.Sprintf("p%d_s%d", pi, si)
		}
		fmt.Fprintf(&b, "  subgraph p%d [%q]\n", pi, p.Name)
		for _, st := range p.Stages {
			shape := mermaidShapes[st.Kind]
			label := strings.ReplaceAll(nodeLabel(st, p, "<br/>"), `"`, "#quot;")
			fmt.Fprintf(&b, "    %s%s\"%s\"%s\n", ids[st.ID], shape[0], label, shape[1])
		}
		for _, st := range p.Stages {
			for i, in := range st.Inputs {
				if r := st.InputRoutes[i]; r != "" {
					fmt.Fprintf(&b, "    %s -->|%s| %s\n", ids[in], r, ids[st.ID])
					continue
				}
				fmt.Fprintf(&b, "    %s --> %s\n", ids[in], ids[st.ID])
			}
		}
		for _, e := range deadLetterEdges(p) {
			label := e.label
			if label == "" {
				label = "bad records"
			}
			fmt.Fprintf(&b, "    %s -. %s .-> %s\n", ids[e.from], label, ids[p.DeadLetter])
		}
		b.WriteString("  end\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
