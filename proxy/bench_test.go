package proxy

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"roost.dev/roost/wire"
)

// BenchmarkProxy measures requests/s of a small GET sent directly to a
// sandbox's server and the same load through the proxy (path form, via the
// test agent: two hops), in the same run, with 16 concurrent clients.
// It also sends the load straight to the agent (one hop, no control
// plane), so proxy/agent is the cost of this package's hop alone. Every
// hop runs in this process: on a small machine the proxied path does three
// HTTP server round trips for the direct path's one, on the same cores.
// ns/op covers all three runs; the metrics are what matter.
func BenchmarkProxy(b *testing.B) {
	s := newStack(b, Config{})
	backend, port := newBackend(b)
	s.add(sbx, nil)
	c := client()
	direct := backend.URL + "/small"
	via := fmt.Sprintf("%s/proxy/%s/%d/small", s.srv.URL, sbx, port)
	agentDirect := fmt.Sprintf("%s/proxy/%s/%d/small", s.agent.URL, sbx, port)
	ac := client()
	ac.Transport = &agentTokenTransport{base: ac.Transport}
	const workers = 16
	run := func(c *http.Client, u string, n int) float64 {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range workers {
			wg.Go(func() {
				for next.Add(1) <= int64(n) {
					resp, err := c.Get(u)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("GET %s: %d", u, resp.StatusCode)
						return
					}
				}
			})
		}
		wg.Wait()
		return float64(n) / time.Since(start).Seconds()
	}
	// Warm both pools.
	run(c, direct, 2*workers)
	run(ac, agentDirect, 2*workers)
	run(c, via, 2*workers)
	b.ResetTimer()
	d := run(c, direct, b.N)
	a := run(ac, agentDirect, b.N)
	p := run(c, via, b.N)
	b.StopTimer()
	b.ReportMetric(d, "direct-req/s")
	b.ReportMetric(a, "agent-req/s")
	b.ReportMetric(p, "proxy-req/s")
	b.ReportMetric(p/d, "proxy/direct")
	b.ReportMetric(p/a, "proxy/agent")
}

type agentTokenTransport struct{ base http.RoundTripper }

func (t *agentTokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set(wire.HeaderAgentToken, agentToken)
	return t.base.RoundTrip(req)
}
