package proxy

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkProxyDirectHop sends one GET per op as roost up proxies it
// (path form, the sandbox's agent in this process: Direct, no agent hop),
// beside the same GET sent to the server directly, from 16 clients at
// once. The difference of the
// two legs' cpu-us/op (this process's CPU time: client, proxy and server
// all run here), B/op and allocs/op is the proxy's own cost per request:
// its HTTP server side, its routing and its HTTP client side. Profile it
// with -cpuprofile and -memprofile.
// hopClients is how many clients send at once, as in BenchmarkProxySandbox.
const hopClients = 16

func BenchmarkProxyDirectHop(b *testing.B) {
	backend, port := newBackend(b)
	// The server is envd, as in the stack's BenchmarkProxySandbox: its
	// port needs no traffic token.
	metrics, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	s := newStack(b, Config{EnvdPort: port, Metrics: metrics})
	direct := func(id string) (Instance, error) {
		return Instance{Addr: netip.MustParseAddr("127.0.0.1"), Key: InstanceKey(id, 1)}, nil
	}
	s.res.set(Target{SandboxID: sbx, Direct: direct})
	for _, leg := range []struct{ name, url string }{
		{"direct", backend.URL + "/small"},
		{"proxy", fmt.Sprintf("%s/proxy/%s/%d/small", s.srv.URL, sbx, port)},
	} {
		b.Run(leg.name, func(b *testing.B) {
			c := client()
			get := func() {
				resp, err := c.Get(leg.url)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("GET %s: %d", leg.url, resp.StatusCode)
				}
			}
			get() // a kept-alive connection at each hop
			b.ReportAllocs()
			b.SetParallelism(max(1, hopClients/runtime.GOMAXPROCS(0)))
			cpu0 := processCPU()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get()
				}
			})
			b.ReportMetric(float64((processCPU()-cpu0).Nanoseconds())/1e3/float64(b.N), "cpu-us/op")
		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
