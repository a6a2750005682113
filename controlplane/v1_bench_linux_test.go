package controlplane_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"roost.dev/roost/bench/samples"
	"roost.dev/roost/controlplane"
)

// reportLatency reports the p50 and p99 of lat in milliseconds and, for
// the bench harness, writes the samples as name.
func reportLatency(b *testing.B, name string, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	if err := samples.Durations(name, lat); err != nil {
		b.Error(err)
	}
	slices.Sort(lat)
	msOf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(msOf(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(msOf(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
}

// benchDuration is how long the fixed-time benchmarks run: the Go duration
// in $ROOST_BENCH_DURATION, default 60s (`make bench QUICK=1` sets 10s).
func benchDuration() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("ROOST_BENCH_DURATION")); err == nil && d > 0 {
		return d
	}
	return time.Minute
}

// BenchmarkCreateREST measures POST /v2/sandboxes → 201 with a ready
// sandbox (namespace runtime, cached base template), end to end over
// loopback HTTP. Destroys are outside the timed part.
func BenchmarkCreateREST(b *testing.B) {
	e := newTestenv(b, controlplane.Config{Local: localAgent()}) // as roost up runs
	body := map[string]any{"templateID": "base", "timeout": 300}
	destroy := func(r response) {
		var c created
		r.want(b, http.StatusCreated).decode(b, &c)
		e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil).want(b, http.StatusNoContent)
	}
	destroy(e.do("POST", "/v2/sandboxes", e.key, body)) // warm caches and pools
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		r := e.do("POST", "/v2/sandboxes", e.key, body)
		lat = append(lat, time.Since(start))
		b.StopTimer()
		destroy(r)
		b.StartTimer()
	}
	b.StopTimer()
	reportLatency(b, "create-rest", lat)
}

// BenchmarkCreateRESTLogged measures what the audit log and lifecycle
// events (and a webhook registered for every event) cost a create: POST
// /v2/sandboxes → 201 as BenchmarkCreateREST, alternating creates with
// them on and off on one server. Between creates, untimed, each create's
// sandbox is destroyed and the background writes are given time to end,
// so neither side's writes land in the other's timing.
func BenchmarkCreateRESTLogged(b *testing.B) {
	e := newTestenv(b, controlplane.Config{Local: localAgent(), WebhookAllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
	defer hook.Close()
	e.do("POST", "/events/webhooks", e.key, map[string]any{"url": hook.URL, "signatureSecret": "bench-secret",
		"events": []string{"sandbox.lifecycle.created", "sandbox.lifecycle.killed"}}).want(b, http.StatusCreated)
	body := map[string]any{"templateID": "base", "timeout": 300}
	create := func() (time.Duration, string) {
		start := time.Now()
		r := e.do("POST", "/v2/sandboxes", e.key, body)
		d := time.Since(start)
		var c created
		r.want(b, http.StatusCreated).decode(b, &c)
		return d, c.SandboxID
	}
	settle := func(id string) {
		e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(b, http.StatusNoContent)
		time.Sleep(50 * time.Millisecond)
	}
	_, id := create() // warm caches and pools
	settle(id)
	var on, off []time.Duration
	b.ResetTimer()
	for i := range b.N {
		logged := i%2 == 0
		controlplane.SetOperationsLog(e.cp, logged)
		d, id := create()
		b.StopTimer()
		if logged {
			on = append(on, d)
		} else {
			off = append(off, d)
		}
		settle(id)
		b.StartTimer()
	}
	b.StopTimer()
	controlplane.SetOperationsLog(e.cp, true)
	p50 := func(lat []time.Duration) float64 {
		if len(lat) == 0 {
			return 0
		}
		slices.Sort(lat)
		return float64(lat[len(lat)/2]) / float64(time.Millisecond)
	}
	b.ReportMetric(p50(on), "logged-p50-ms")
	b.ReportMetric(p50(off), "unlogged-p50-ms")
}

// BenchmarkExecTrueREST measures POST /v1/sandboxes/{id}/exec running
// `true` (args form, no shell) to its answer.
func BenchmarkExecTrueREST(b *testing.B) {
	e := newTestenv(b, controlplane.Config{Local: localAgent()}) // as roost up runs
	var c created
	e.do("POST", "/v2/sandboxes", e.key, map[string]any{"templateID": "base", "timeout": 600}).
		want(b, http.StatusCreated).decode(b, &c)
	path := "/v1/sandboxes/" + c.SandboxID + "/exec"
	body := map[string]any{"args": []string{"true"}}
	e.do("POST", path, e.key, body).want(b, http.StatusOK) // warm pools
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		r := e.do("POST", path, e.key, body)
		lat = append(lat, time.Since(start))
		var res struct {
			ExitCode int `json:"exitCode"`
		}
		if r.want(b, http.StatusOK).decode(b, &res); res.ExitCode != 0 {
			b.Fatalf("true exited %d", res.ExitCode)
		}
	}
	b.StopTimer()
	reportLatency(b, "exec-rest", lat)
	e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil).want(b, http.StatusNoContent)
}

// createWorkers are the numbers of clients that create and destroy
// sandboxes at once in BenchmarkCreateThroughput: twice the cores of the
// reference machine, and a burst of 16; both well inside the test agent's
// network slots, which sandboxes still tearing down hold too.
var createWorkers = []int{4, 16}

// BenchmarkCreateThroughput measures sustained sandbox creation through the
// REST API: for each of createWorkers, that many clients each create a
// sandbox (POST /v2/sandboxes, ready on 201) and delete it, in a loop, for
// benchDuration; creates/s counts completed creates. The baseline, run
// right after with the same concurrency for a sixth of the time, is bare
// `unshare`s of the same namespaces. cpu-ms/create is this process's CPU
// (control plane and agent) per create and delete. The 4-client figures
// are creates/s and baseline-creates/s, the others' carry their client
// count (creates-16/s). b.N is ignored; run with -benchtime 1x.
func BenchmarkCreateThroughput(b *testing.B) {
	e := newTestenv(b, controlplane.Config{Local: localAgent()}) // as roost up runs
	body := map[string]any{"templateID": "base", "timeout": 300}
	dur := benchDuration()
	cycle := func() error {
		r := e.do("POST", "/v2/sandboxes", e.key, body)
		if r.status != http.StatusCreated {
			return fmt.Errorf("create: %d %s", r.status, r.body)
		}
		var c created
		r.decode(b, &c)
		if r := e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil); r.status != http.StatusNoContent {
			return fmt.Errorf("delete: %d %s", r.status, r.body)
		}
		return nil
	}
	unshare := func() error {
		out, err := exec.Command("unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount", "--uts",
			"--ipc", "--net", "--cgroup", "true").CombinedOutput()
		if err != nil {
			return fmt.Errorf("unshare: %v: %s", err, out)
		}
		return nil
	}
	if err := cycle(); err != nil { // warm caches and pools
		b.Fatal(err)
	}
	for b.Loop() {
		for _, workers := range createWorkers {
			suffix := ""
			if workers != createWorkers[0] {
				suffix = "-" + strconv.Itoa(workers)
			}
			cpu0 := processCPU()
			busy0, total0 := hostCPU()
			n, elapsed := runFor(b, workers, dur, cycle)
			cpu := processCPU() - cpu0
			busy1, total1 := hostCPU()
			b.ReportMetric(float64(n)/elapsed.Seconds(), "creates"+suffix+"/s")
			b.ReportMetric(float64(n), "creates"+suffix)
			// This process's CPU (control plane and agent, not the
			// sandboxes' own) per create and delete, and the host's busy
			// share: the machine may be shared.
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(max(n, 1)), "cpu-ms/create"+suffix)
			b.ReportMetric(100*float64(busy1-busy0)/float64(max(1, total1-total0)), "host-busy-pct"+suffix)
			n, elapsed = runFor(b, workers, max(dur/6, 2*time.Second), unshare)
			b.ReportMetric(float64(n)/elapsed.Seconds(), "baseline-creates"+suffix+"/s")
		}
	}
}

// runFor calls f from workers goroutines until d has passed and returns
// how many calls succeeded and how long they took; a failed call fails b.
func runFor(b *testing.B, workers int, d time.Duration, f func() error) (int, time.Duration) {
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if err := f(); err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return int(n.Load()), time.Since(start)
}

// proxyClients is the number of concurrent keep-alive clients of
// BenchmarkProxySandbox's load.
const proxyClients = 16

// BenchmarkProxySandbox sends the same load of small GETs to servers in a
// real sandbox through the control plane's proxy (path form: control plane
// → agent → sandbox) and directly to the sandbox's address from the host,
// in the same run, and reports requests/s and p50/p99 of each. Two servers:
// envd's /health (Go, keep-alive: the proxy's own cost shows) and python3's
// http.server (HTTP/1.0, a connection per request, slow itself). Each load
// runs for a sixth of benchDuration (at least 2s). b.N is ignored; run with
// -benchtime 1x.
func BenchmarkProxySandbox(b *testing.B) {
	e := newTestenv(b, controlplane.Config{Local: localAgent()}) // as roost up runs
	var c created
	e.do("POST", "/v2/sandboxes", e.key, map[string]any{"templateID": "base", "timeout": 900}).
		want(b, http.StatusCreated).decode(b, &c)
	id := c.SandboxID
	b.Cleanup(func() { e.do("DELETE", "/sandboxes/"+id, e.key, nil) })
	sb, err := e.agent.Get(id)
	if err != nil {
		b.Fatal(err)
	}
	ip := sb.Envd.Addr().String()
	e.do("POST", "/v1/sandboxes/"+id+"/exec", e.key, map[string]any{"cmd": "mkdir -p /tmp/www && " +
		"echo hello > /tmp/www/hello.txt && cd /tmp/www && " +
		"nohup python3 -m http.server 8000 </dev/null >/dev/null 2>&1 &"}).want(b, http.StatusOK)
	servers := []struct{ name, direct, proxied string }{
		{"envd", fmt.Sprintf("http://%s/health", net.JoinHostPort(ip, "49983")), fmt.Sprintf("%s/proxy/%s/49983/health", e.url, id)},
		{"python", fmt.Sprintf("http://%s/hello.txt", net.JoinHostPort(ip, "8000")), fmt.Sprintf("%s/proxy/%s/8000/hello.txt", e.url, id)},
	}
	for _, s := range servers {
		if err := waitOK(s.direct, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		if err := waitOK(s.proxied, 30*time.Second); err != nil {
			b.Fatal(err)
		}
	}
	d := max(benchDuration()/6, 2*time.Second)
	for b.Loop() {
		for _, s := range servers {
			for _, leg := range []struct{ name, url string }{{"direct", s.direct}, {"proxy", s.proxied}} {
				client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: proxyClients, DialContext: dialNoLinger}}
				load(client, leg.url, time.Second) // warm the connection pool
				cpu0 := processCPU()
				busy0, total0 := hostCPU()
				rate, lat, failed := load(client, leg.url, d)
				cpu := processCPU() - cpu0
				busy1, total1 := hostCPU()
				client.CloseIdleConnections()
				// Where the cores went: this process (load generator, control
				// plane, agent) per request, and the host's busy share.
				b.ReportMetric(float64(cpu.Microseconds())/max(1, rate*d.Seconds()), s.name+"-"+leg.name+"-cpu-us/req")
				b.ReportMetric(100*float64(busy1-busy0)/float64(max(1, total1-total0)), s.name+"-"+leg.name+"-host-busy-pct")
				if failed > 0 {
					b.Errorf("%s %s: %d requests failed", s.name, leg.name, failed)
				}
				b.ReportMetric(rate, s.name+"-"+leg.name+"-req/s")
				reportPercentiles(b, s.name+"-"+leg.name, lat)
				if err := samples.Durations("proxy-"+s.name+"-"+leg.name, lat); err != nil {
					b.Error(err)
				}
			}
		}
	}
}

// dialNoLinger is the load generator's dialer: its connections close with
// a reset, as the proxy's to sandboxes do, so that neither leg leaves
// TIME_WAIT behind (the direct leg's would use up the host's ports to the
// sandbox's server and slow the proxy leg that follows it).
func dialNoLinger(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	return c, err
}

// load sends GETs of u from proxyClients goroutines sharing client until d
// has passed and returns the rate of successful requests, the latency of
// each, and how many failed.
func load(client *http.Client, u string, d time.Duration) (float64, []time.Duration, int) {
	var mu sync.Mutex
	var all []time.Duration
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range proxyClients {
		wg.Go(func() {
			var lat []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				resp, err := client.Get(u)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode/100 != 2 {
					failed.Add(1)
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return float64(len(all)) / time.Since(start).Seconds(), all, int(failed.Load())
}

// reportPercentiles reports the p50 and p99 of lat as name-p50-ms and
// name-p99-ms.
func reportPercentiles(b *testing.B, name string, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	msOf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(msOf(s[len(s)/2]), name+"-p50-ms")
	b.ReportMetric(msOf(s[min(len(s)-1, len(s)*99/100)]), name+"-p99-ms")
}

// waitOK polls u until it answers 2xx.
func waitOK(u string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s never answered 2xx: %v", u, err)
		case <-time.After(100 * time.Millisecond):
		}
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

// hostCPU returns the host's busy and total CPU time in clock ticks, from
// the first line of /proc/stat (idle and iowait are not busy).
func hostCPU() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		total += v
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, total
}
