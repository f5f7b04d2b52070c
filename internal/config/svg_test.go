package config

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteSVG draws the golden pipeline: valid XML, one node per stage
// with the labels of `etld graph`, sources left of the workers left of
// the sinks, the dead-letter sink in the last column, no two nodes
// overlapping, an edge per input plus the dead-letter edges.
func TestWriteSVG(t *testing.T) {
	pipes, ds := Load(filepath.Join("testdata", "golden", "pipeline.yaml"), testOptions())
	if ds.HasErrors() {
		t.Fatal(diagLines(ds))
	}
	p := pipes[0]
	var buf bytes.Buffer
	if err := WriteSVG(&buf, p); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths []struct {
			Class string `xml:"class,attr"`
		} `xml:"path"`
		Nodes []struct {
			Class     string   `xml:"class,attr"`
			Stage     string   `xml:"data-stage,attr"`
			Transform string   `xml:"transform,attr"`
			Texts     []string `xml:"text"`
			Rect      struct {
				W int `xml:"width,attr"`
				H int `xml:"height,attr"`
			} `xml:"rect"`
		} `xml:"g"`
	}
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("not valid XML: %v\n%s", err, buf.String())
	}
	if len(doc.Nodes) != len(p.Stages) {
		t.Fatalf("%d nodes for %d stages", len(doc.Nodes), len(p.Stages))
	}
	type box struct{ x, y, w, h int }
	boxes := map[string]box{}
	for i, n := range doc.Nodes {
		st := p.Stages[i]
		if n.Stage != st.ID || !strings.Contains(n.Class, string(st.Kind)) {
			t.Errorf("node %d: stage %q class %q, want %s %s", i, n.Stage, n.Class, st.ID, st.Kind)
		}
		if got, want := strings.Join(n.Texts, "\n"), nodeLabel(st, p, "\n"); !strings.HasPrefix(got, want) {
			t.Errorf("node %s: label %q, want %q (as etld graph)", st.ID, got, want)
		}
		var b box
		if _, err := fmt.Sscanf(n.Transform, "translate(%d,%d)", &b.x, &b.y); err != nil {
			t.Fatalf("node %s: transform %q", st.ID, n.Transform)
		}
		b.w, b.h = n.Rect.W, n.Rect.H
		boxes[st.ID] = b
	}
	for _, st := range p.Stages {
		for _, in := range st.Inputs {
			if boxes[in].x >= boxes[st.ID].x {
				t.Errorf("%s (x=%d) is not right of its input %s (x=%d)", st.ID, boxes[st.ID].x, in, boxes[in].x)
			}
		}
		if st.ID != p.DeadLetter && boxes[st.ID].x > boxes[p.DeadLetter].x {
			t.Errorf("%s is right of the dead-letter sink", st.ID)
		}
		for _, o := range p.Stages {
			a, b := boxes[st.ID], boxes[o.ID]
			if st != o && a.x < b.x+b.w && b.x < a.x+a.w && a.y < b.y+b.h && b.y < a.y+a.h {
				t.Errorf("nodes %s and %s overlap", st.ID, o.ID)
			}
		}
	}
	edges, dl := 0, 0
	for _, e := range doc.Paths {
		switch e.Class {
		case "edge":
			edges++
		case "edge dead-letter":
			dl++
		}
	}
	wantEdges, wantDL := 0, 0
	for _, st := range p.Stages {
		wantEdges += len(st.Inputs)
		if st.Kind != Sink {
			wantDL++
		}
	}
	wantDL++ // the merging sink "timeline" sends its late records there
	if edges != wantEdges || dl != wantDL {
		t.Errorf("%d edges and %d dead-letter edges, want %d and %d", edges, dl, wantEdges, wantDL)
	}
	for _, r := range []string{">errors<", ">slow<", ">_unmatched<", ">late records<"} {
		if !strings.Contains(buf.String(), r) {
			t.Errorf("no route label %s", r)
		}
	}
}

// TestWriteSVGEscapes: names are escaped, not markup.
func TestWriteSVGEscapes(t *testing.T) {
	p := &Pipeline{Name: `a<b>&"c"`, Stages: []*Stage{{ID: "s", Kind: Source, Type: `<script>`}}}
	var buf bytes.Buffer
	if err := WriteSVG(&buf, p); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "<script>") || strings.Contains(buf.String(), `a<b>`) {
		t.Errorf("unescaped names:\n%s", buf.String())
	}
	if err := xml.Unmarshal(buf.Bytes(), new(struct{})); err != nil {
		t.Errorf("not valid XML: %v", err)
	}
}
