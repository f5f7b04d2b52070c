package admin

import (
	"bytes"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"sort"

	"github.com/etld/etld/internal/config"
)

// The live page's files, served under /live/; / serves live/index.html.
// Nothing is fetched from elsewhere: the page works offline.
//
//go:embed live
var liveEmbed embed.FS

var liveFiles fs.FS = liveEmbed

// Configurer is the optional side of a Runtime that the live page draws
// its graphs from; *engine.Runtime implements it.
type Configurer interface {
	Configs() map[string]*config.Pipeline
}

// Graph is one pipeline's graph, as /api/graph serves it.
type Graph struct {
	Pipeline string `json:"pipeline"`
	// Shape identifies the graph (its stages and edges): the page
	// fetches the graphs again when a reload changes it.
	Shape string `json:"shape"`
	SVG   string `json:"svg"`
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	b, err := liveEmbed.ReadFile("live/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

// graphs serves every pipeline's graph as SVG (config.WriteSVG).
func (s *Server) graphs(w http.ResponseWriter, _ *http.Request) {
	var out []Graph
	if c, ok := s.opts.Runtime.(Configurer); ok {
		cfgs := c.Configs()
		names := make([]string, 0, len(cfgs))
		for n := range cfgs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			var b bytes.Buffer
			if err := config.WriteSVG(&b, cfgs[n]); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			out = append(out, Graph{Pipeline: n, Shape: GraphShape(cfgs[n]), SVG: b.String()})
		}
	}
	if out == nil {
		out = []Graph{}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(out)
}

// GraphShape is a pipeline's stages and inputs, as the page compares
// them with /api/pipelines: "id<kind<input,input|id<...".
func GraphShape(p *config.Pipeline) string {
	var b bytes.Buffer
	for i, st := range p.Stages {
		if i > 0 {
			b.WriteByte('|')
		}
		b.WriteString(st.ID + "<" + string(st.Kind))
		for j, in := range st.WrittenInputs() {
			if j == 0 {
				b.WriteByte('<')
			} else {
				b.WriteByte(',')
			}
			b.WriteString(in)
		}
	}
	return b.String()
}
