package config

import (
	"fmt"
	"html"
	"io"
	"strings"
)

// SVG layout, in pixels.
const (
	svgNodeW   = 280
	svgGapX    = 90
	svgGapY    = 26
	svgLineH   = 17
	svgMargin  = 24
	svgStatsN  = 2 // lines left free under the label for live counters
	svgPadding = 10
)

// svgNode is one stage placed in the drawing.
type svgNode struct {
	st      *Stage
	label   []string
	x, y, h int
	rank    int
	below   bool // another node is below it in its column
}

// WriteSVG draws one pipeline as an SVG graph, left to right like `etld
// graph`: the same nodes, labels and edges (route names on routed edges,
// dashed edges to the dead-letter sink). Stages are placed in columns by
// their distance from the sources, in file order within a column; the
// dead-letter sink comes last. Every node is a <g class="node KIND"
// data-stage="ID"> holding empty <text class="stat"> lines under its
// label, for a page to fill with live counters.
func WriteSVG(w io.Writer, p *Pipeline) error {
	nodes := map[string]*svgNode{}
	var order []*svgNode
	var rank func(st *Stage, seen map[string]bool) int
	rank = func(st *Stage, seen map[string]bool) int {
		if n := nodes[st.ID]; n != nil && n.rank >= 0 {
			return n.rank
		}
		if st.Kind == Source || seen[st.ID] {
			return 0
		}
		seen[st.ID] = true
		r := 0
		for _, in := range st.Inputs {
			if up := p.Stage(in); up != nil {
				r = max(r, rank(up, seen)+1)
			}
		}
		if r == 0 {
			r = 1 // a sink or worker without inputs still comes after the sources
		}
		return r
	}
	last := 0
	for _, st := range p.Stages {
		n := &svgNode{st: st, label: strings.Split(nodeLabel(st, p, "\n"), "\n"), rank: -1}
		nodes[st.ID] = n
		order = append(order, n)
	}
	for _, n := range order {
		n.rank = rank(n.st, map[string]bool{})
		last = max(last, n.rank)
	}
	if dl := nodes[p.DeadLetter]; dl != nil && len(dl.st.Inputs) == 0 {
		dl.rank = max(last, 1)
		last = dl.rank
	}
	colY := make([]int, last+1)
	bottom := make([]*svgNode, last+1) // the lowest node of each column so far
	width, height := 0, 0
	for _, n := range order {
		n.h = (len(n.label)+svgStatsN)*svgLineH + 2*svgPadding
		n.x = svgMargin + n.rank*(svgNodeW+svgGapX)
		if colY[n.rank] == 0 {
			colY[n.rank] = svgMargin
		}
		n.y = colY[n.rank]
		colY[n.rank] += n.h + svgGapY
		if above := bottom[n.rank]; above != nil {
			above.below = true
		}
		bottom[n.rank] = n
		width = max(width, n.x+svgNodeW+svgMargin)
		height = max(height, n.y+n.h+svgMargin)
	}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="graph" data-pipeline="%s" width="%d" height="%d" viewBox="0 0 %d %d">`+"\n",
		esc(p.Name), width, height, width, height)
	b.WriteString(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>` +
		`<marker id="arrow-dl" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#c33"/></marker></defs>` + "\n")
	edge := func(from, to *svgNode, label, class, marker string) {
		x1, y1 := from.x+svgNodeW, from.y+from.h/2
		x2, y2 := to.x, to.y+to.h/2
		if to.rank <= from.rank { // same column or backwards: go round below
			x2, y2 = to.x+svgNodeW/2, to.y+to.h
		}
		dx := max((x2-x1)/2, 30)
		c1x, c1y := x1+dx, y1
		if marker == "arrow-dl" && to.rank > from.rank {
			// Bad records leave from below, under the data flow; from
			// the right of the bottom edge when a node is below.
			x1, y1 = from.x+svgNodeW/2, from.y+from.h
			c1x, c1y = x1, y2
			if from.below {
				x1, y1 = from.x+svgNodeW, from.y+from.h-6
				c1x, c1y = x1+dx, y1
			}
		}
		fmt.Fprintf(&b, `<path class="%s" d="M%d,%d C%d,%d %d,%d %d,%d" marker-end="url(#%s)"/>`+"\n",
			class, x1, y1, c1x, c1y, x2-dx, y2, x2, y2, marker)
		if label != "" {
			fmt.Fprintf(&b, `<text class="edge-label" x="%d" y="%d" text-anchor="middle">%s</text>`+"\n", (x1+x2)/2, (y1+y2)/2-4, esc(label))
		}
	}
	if dl := nodes[p.DeadLetter]; dl != nil {
		for _, e := range deadLetterEdges(p) {
			if n := nodes[e.from]; n != nil {
				edge(n, dl, e.label, "edge dead-letter", "arrow-dl")
			}
		}
	}
	for _, n := range order {
		for i, in := range n.st.Inputs {
			if up := nodes[in]; up != nil {
				edge(up, n, n.st.InputRoutes[i], "edge", "arrow")
			}
		}
	}
	for _, n := range order {
		kind := string(n.st.Kind)
		if n.st.ID == p.DeadLetter {
			kind += " dead-letter-sink"
		}
		fmt.Fprintf(&b, `<g class="node %s" data-stage="%s" transform="translate(%d,%d)">`, kind, esc(n.st.ID), n.x, n.y)
		fmt.Fprintf(&b, `<rect width="%d" height="%d" rx="6"/>`, svgNodeW, n.h)
		for i, l := range n.label {
			class := "label"
			if i == 0 {
				class = "label id"
			}
			fmt.Fprintf(&b, `<text class="%s" x="%d" y="%d">%s</text>`, class, svgPadding, svgPadding+(i+1)*svgLineH-4, esc(l))
		}
		for i := range svgStatsN {
			fmt.Fprintf(&b, `<text class="stat" data-line="%d" x="%d" y="%d"></text>`, i, svgPadding, svgPadding+(len(n.label)+i+1)*svgLineH-4)
		}
		b.WriteString("</g>\n")
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func esc(s string) string { return html.EscapeString(s) }
