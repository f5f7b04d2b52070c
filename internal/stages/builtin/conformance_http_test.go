package builtin

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/etld/etld/internal/stages"
	"github.com/etld/etld/internal/stages/stagetest"
)

func init() { sourceFixtures["http_server"] = httpServerFixture }

// httpServerFixture feeds the http_server source like a client that
// retries: bodies of 10 lines, one at a time, each sent again until it
// is answered 200 (ack: received answers once Read returned it). A
// source that was closed refuses the connection, which ends its feeder;
// the next instance's feeder goes on after the last acknowledged body.
// The feeder relies on the source's Addr to find its port.
func httpServerFixture(t *testing.T, f stages.Factory) stagetest.SourceCase {
	want := stagetest.Lines(3000)
	var next atomic.Int64 // index in want of the first record not acknowledged
	// One feeder at a time: the next instance's starts once the previous
	// one has seen its last answer.
	turn := make(chan struct{}, 1)
	feed := func(t *testing.T, src stages.Source) {
		addr := src.(interface{ Addr() net.Addr }).Addr().String()
		go func() {
			turn <- struct{}{}
			defer func() { <-turn }()
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			defer client.CloseIdleConnections()
			for i := int(next.Load()); i < len(want); i = int(next.Load()) {
				j := min(i+10, len(want))
				resp, err := client.Post("http://"+addr+"/", "text/plain", strings.NewReader(strings.Join(want[i:j], "\n")+"\n"))
				if op := (*net.OpError)(nil); errors.As(err, &op) && op.Op == "dial" {
					return // closed
				}
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					next.Store(int64(j))
				}
			}
		}()
	}
	return stagetest.SourceCase{
		Config: stagetest.Config(t, f, t.TempDir(), "address: 127.0.0.1:0\nack: received"),
		Want:   want,
		Feed:   feed,
	}
}
