package controlplane_test

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"roost.dev/roost/agent"
	"roost.dev/roost/controlplane"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
	"roost.dev/roost/wire"
)

const metricsToken = "test-metrics-token"

// TestPrometheus scrapes a real control plane (its store and proxy with
// it) and a real agent, each on a registry of its own as `roost server`
// and `roost agent` have: /metrics wants the operator's token, the
// series are there with labels that name no sandbox or team, and the
// latencies count the creates, resumes and execs made.
func TestPrometheus(t *testing.T) {
	e, agentMetrics := newMetricsTestenv(t)

	// No token, a wrong one: 401, and not a byte of metrics.
	for _, auth := range []string{"", "Bearer wrong", "Basic " + metricsToken, metricsToken} {
		var hdr []string
		if auth != "" {
			hdr = []string{"Authorization", auth}
		}
		r := e.do("GET", "/metrics", "", nil, hdr...)
		if r.status != http.StatusUnauthorized || bytes.Contains(r.body, []byte("roost_")) {
			t.Errorf("GET /metrics with Authorization %q: %d %s, want 401", auth, r.status, r.body)
		}
	}
	// An API key is not the metrics token.
	if r := e.do("GET", "/metrics", e.key, nil); r.status != http.StatusUnauthorized {
		t.Errorf("GET /metrics with an API key: %d, want 401", r.status)
	}

	before := scrape(t, e.url+"/metrics", metricsToken)
	if n := histogramCount(before, "roost_controlplane_operation_duration_seconds", "op", "create"); n != 0 {
		t.Fatalf("creates counted before any: %d", n)
	}

	// N creates, on both of E2B's create routes; an exec through the API
	// and one through the proxy; a pause and a resume.
	const n = 2
	var ids []string
	var first created
	for i, path := range []string{"/v2/sandboxes", "/sandboxes"}[:n] {
		var c created
		e.do("POST", path, e.key, map[string]any{"templateID": "base", "timeout": 300}).want(t, http.StatusCreated).decode(t, &c)
		ids = append(ids, c.SandboxID)
		if i == 0 {
			first = c
		}
	}
	e.do("POST", "/v1/sandboxes/"+first.SandboxID+"/exec", e.key, map[string]any{"cmd": "true"}).want(t, http.StatusOK)
	envdStart(t, e.url, first)
	e.do("POST", "/sandboxes/"+ids[1]+"/pause", e.key, nil).want(t, http.StatusNoContent)
	e.do("POST", "/sandboxes/"+ids[1]+"/connect", e.key, map[string]any{"timeout": 300}).want(t, http.StatusCreated)

	// The store counts are cached for a second: wait for them to show
	// the sandboxes (they never go back).
	var after map[string]*dto.MetricFamily
	deadline := time.Now().Add(30 * time.Second)
	for {
		after = scrape(t, e.url+"/metrics", metricsToken)
		if gaugeValue(after, "roost_controlplane_sandboxes", "state", "running", "runtime", "namespace") == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("roost_controlplane_sandboxes{state=running,runtime=namespace} never reached %d: %v", n, after["roost_controlplane_sandboxes"])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := histogramCount(after, "roost_controlplane_operation_duration_seconds", "op", "create") -
		histogramCount(before, "roost_controlplane_operation_duration_seconds", "op", "create"); got != n {
		t.Errorf("create histogram's count went up by %d after %d creates", got, n)
	}
	for _, c := range []struct{ op, route string }{
		{"create", "POST /v2/sandboxes"}, {"create", "POST /sandboxes"},
		{"exec", "POST /v1/sandboxes/{id}/exec"}, {"exec", "proxy envd process.Process/Start"},
		{"resume", "POST /sandboxes/{id}/connect"},
	} {
		if got := histogramCount(after, "roost_controlplane_operation_duration_seconds", "op", c.op, "route", c.route, "code", "2xx"); got != 1 {
			t.Errorf("%s by %s: counted %d times, want once", c.op, c.route, got)
		}
	}
	for _, want := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"roost_controlplane_host_info", []string{"host", "host1", "runtime", "namespace"}, 1},
		{"roost_controlplane_host_state", []string{"host", "host1", "state", "ready"}, 1},
		{"roost_controlplane_host_cpus", []string{"host", "host1"}, 1},
		{"roost_controlplane_host_memory_bytes", []string{"host", "host1"}, 1 << 20},
		{"roost_controlplane_host_max_sandboxes", []string{"host", "host1"}, 1},
		{"roost_controlplane_host_sandboxes", []string{"host", "host1", "state", "running"}, n},
		{"roost_controlplane_host_sandbox_vcpus", []string{"host", "host1"}, n},
		{"roost_controlplane_host_sandbox_memory_bytes", []string{"host", "host1"}, n << 20},
		{"roost_proxy_requests_total", []string{"kind", "envd", "code", "2xx"}, 1},
		{"roost_proxy_request_bytes_total", []string{"kind", "envd"}, 1},
		{"roost_proxy_response_bytes_total", []string{"kind", "envd"}, 1},
	} {
		if v := gaugeValue(after, want.name, want.labels...); v < want.min {
			t.Errorf("%s%v = %v, want at least %v", want.name, want.labels, v, want.min)
		}
	}
	if histogramCount(after, "roost_store_query_duration_seconds", "op", "insert", "table", "sandboxes") < n {
		t.Error("the store's inserts of sandboxes were not timed")
	}

	agentFamilies := scrape(t, agentMetrics, "")
	if got := histogramCount(agentFamilies, "roost_agent_sandbox_create_duration_seconds", "runtime", "namespace", "outcome", "ok"); got != n {
		t.Errorf("agent create histogram's count %d after %d creates", got, n)
	}
	for _, want := range []struct {
		name   string
		labels []string
		value  float64 // -1: any positive value
	}{
		{"roost_agent_sandboxes", []string{"state", "running"}, n},
		{"roost_agent_sandboxes", []string{"state", "paused"}, 0},
		{"roost_agent_host_cpus", nil, -1},
		{"roost_agent_host_memory_bytes", nil, -1},
		{"roost_agent_host_max_sandboxes", nil, -1},
		{"roost_agent_sandbox_vcpus", nil, -1},
		{"roost_agent_info", []string{"runtime", "namespace"}, 1},
		{"roost_agent_template_pulls_total", []string{"outcome", "ok"}, 0},
		{"roost_agent_template_pull_bytes_total", nil, 0},
	} {
		v, ok := value(agentFamilies, want.name, want.labels...)
		if !ok || want.value < 0 && v <= 0 || want.value >= 0 && v != want.value {
			t.Errorf("agent %s%v = %v (found %v), want %v", want.name, want.labels, v, ok, want.value)
		}
	}

	// Bounded: no label anywhere names a sandbox or a team.
	k, err := e.store.APIKeyByHash(t.Context(), store.HashKey(e.key))
	if err != nil {
		t.Fatal(err)
	}
	for name, fams := range map[string]map[string]*dto.MetricFamily{"control plane": after, "agent": agentFamilies} {
		for _, f := range fams {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					v := l.GetValue()
					for _, id := range ids {
						if strings.Contains(v, id) {
							t.Errorf("%s: %s has %s=%q, a sandbox ID", name, f.GetName(), l.GetName(), v)
						}
					}
					if strings.Contains(v, k.TeamID) {
						t.Errorf("%s: %s has %s=%q, a team ID", name, f.GetName(), l.GetName(), v)
					}
				}
			}
		}
	}
}

// newMetricsTestenv is newTestenv with metrics: the control plane, its
// store and proxy on one registry, served on its /metrics behind
// metricsToken; the agent on another, served by the returned URL.
func newMetricsTestenv(t *testing.T) (*testenv, string) {
	t.Helper()
	runtimetest.RequireRoot(t)
	if a := namespace.Probe(); !a.Available {
		t.Skipf("namespace runtime unavailable: %s", a.Reason)
	}
	agentReg, reg := prometheus.NewPedanticRegistry(), prometheus.NewPedanticRegistry()
	e := newTestenvAgent(t, controlplane.Config{Registerer: reg, Metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		MetricsToken: metricsToken}, storetest.SQLiteURL(t), func(dataDir string, log *slog.Logger) (runtime.Runtime, error) {
		return namespace.New(namespace.Config{DataDir: filepath.Join(dataDir, "runtime", "namespace")}, log)
	}, testSlots, func(c *agent.Config) { c.Registerer = agentReg })
	agentMetrics := httptest.NewServer(promhttp.HandlerFor(agentReg, promhttp.HandlerOpts{}))
	t.Cleanup(agentMetrics.Close)
	return e, agentMetrics.URL
}

// The control plane refuses metrics it would serve to anyone, and a
// token for metrics it does not serve.
func TestMetricsConfigRefused(t *testing.T) {
	st, err := store.Open(t.Context(), storetest.SQLiteURL(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	for _, cfg := range []controlplane.Config{
		{Metrics: http.NotFoundHandler()},
		{MetricsToken: "token"},
	} {
		if cp, err := controlplane.New(cfg, st, log); err == nil {
			cp.Close()
			t.Errorf("New(Metrics %v, token %q) succeeded", cfg.Metrics != nil, cfg.MetricsToken)
		}
	}
	reg := prometheus.NewRegistry()
	cp, err := controlplane.New(controlplane.Config{Registerer: reg}, st, log)
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	if cp2, err := controlplane.New(controlplane.Config{Registerer: reg}, st, log); err == nil {
		cp2.Close()
		t.Error("a second control plane registered in the same registry")
	}
	// Without a handler, /metrics is no route.
	srv := httptest.NewServer(cp.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics without metrics configured: %d, want 404", resp.StatusCode)
	}
}

// envdStart starts `true` through the proxy with envd's Connect
// protocol (a server stream in JSON) and reads the stream to its end.
func envdStart(t *testing.T, url string, c created) {
	t.Helper()
	msg := []byte(`{"process":{"cmd":"true"}}`)
	var body bytes.Buffer
	body.WriteByte(0)
	_ = binary.Write(&body, binary.BigEndian, uint32(len(msg)))
	body.Write(msg)
	req, err := http.NewRequestWithContext(t.Context(), "POST", url+"/process.Process/Start", &body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/connect+json")
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Set(wire.HeaderSandboxID, c.SandboxID)
	req.Header.Set(wire.HeaderSandboxPort, "49983")
	req.Header.Set("X-Access-Token", c.EnvdAccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"end"`)) {
		t.Fatalf("envd Start through the proxy: %d %s", resp.StatusCode, b)
	}
}

// scrape fetches a /metrics page and parses it with Prometheus' own text
// parser; token "" sends none.
func scrape(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// matching returns the metrics of a family whose labels include the
// name-value pairs.
func matching(fams map[string]*dto.MetricFamily, name string, pairs ...string) []*dto.Metric {
	f := fams[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range f.GetMetric() {
		ok := true
		for i := 0; i+1 < len(pairs); i += 2 {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
					found = true
				}
			}
			ok = ok && found
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// histogramCount sums the sample counts of the matching histograms.
func histogramCount(fams map[string]*dto.MetricFamily, name string, pairs ...string) uint64 {
	var n uint64
	for _, m := range matching(fams, name, pairs...) {
		n += m.GetHistogram().GetSampleCount()
	}
	return n
}

// value is the sum of the matching gauges or counters, and whether any
// matched.
func value(fams map[string]*dto.MetricFamily, name string, pairs ...string) (float64, bool) {
	ms := matching(fams, name, pairs...)
	var v float64
	for _, m := range ms {
		v += m.GetGauge().GetValue() + m.GetCounter().GetValue() + m.GetUntyped().GetValue()
	}
	return v, len(ms) > 0
}

func gaugeValue(fams map[string]*dto.MetricFamily, name string, pairs ...string) float64 {
	v, _ := value(fams, name, pairs...)
	return v
}
