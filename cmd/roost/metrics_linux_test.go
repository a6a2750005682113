package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"roost.dev/roost/template/templatetest"
)

// TestMetricsProcesses runs `roost up` with a metrics token and
// --metrics-listen, and `roost agent` with --metrics-listen: roost up
// serves one registry (agent, control plane, store, proxy, Go and the
// process) on the API listener to the token only and on its own address,
// and says how to scrape it; the agent serves its own.
func TestMetricsProcesses(t *testing.T) {
	_, bin, work := processTest(t, "roost up and roost agent serving metrics", "roost-metrics.")
	dataDir := filepath.Join(work, "up")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(templatetest.CacheDir(), "templates"), filepath.Join(dataDir, "templates")); err != nil {
		t.Fatal(err)
	}
	const key = "roost_test_metrics_0123456789abcdef"
	const token = "metrics-token-0123456789"
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	api := "http://" + addr
	up := start(t, work, "up", []string{"ROOST_API_KEY=" + key, metricsTokenEnv + "=" + token}, bin,
		"up", "--data-dir", dataDir, "--listen", addr, "--no-prune", "--metrics-listen", metricsAddr)
	waitHTTP(t, up, api+"/health")

	var sb struct {
		ID string `json:"sandboxID"`
	}
	apiCall(t, "POST", api+"/v2/sandboxes", key, `{"templateID":"base","timeout":120}`, http.StatusCreated, &sb)
	t.Cleanup(func() {
		req, _ := http.NewRequest("DELETE", api+"/sandboxes/"+sb.ID, nil)
		req.Header.Set("X-API-Key", key)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	})

	if status, _ := get(t, api+"/metrics", ""); status != http.StatusUnauthorized {
		t.Errorf("GET /metrics on the API listener without the token: %d, want 401", status)
	}
	if status, _ := get(t, "http://"+metricsAddr+"/metrics", ""); status != http.StatusUnauthorized {
		t.Errorf("GET /metrics on --metrics-listen without the token: %d, want 401", status)
	}
	for _, url := range []string{api + "/metrics", "http://" + metricsAddr + "/metrics"} {
		fams := parseMetrics(t, url, token)
		for _, name := range []string{"roost_agent_sandbox_create_duration_seconds", "roost_agent_host_cpus", "roost_controlplane_operation_duration_seconds",
			"roost_controlplane_sandboxes", "roost_controlplane_host_max_sandboxes", "roost_store_query_duration_seconds",
			"roost_proxy_request_bytes_total", "go_goroutines", "process_cpu_seconds_total"} {
			if fams[name] == nil {
				t.Errorf("%s: no %s", url, name)
			}
		}
		for _, name := range []string{"roost_agent_sandbox_create_duration_seconds", "roost_controlplane_operation_duration_seconds"} {
			var n uint64
			for _, m := range fams[name].GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
			if n != 1 {
				t.Errorf("%s: %s counts %d creates, want 1", url, name, n)
			}
		}
	}
	if b, _ := os.ReadFile(up.log); !strings.Contains(string(b), `curl -H "Authorization: Bearer $`+metricsTokenEnv+`" `+api+"/metrics") {
		t.Errorf("roost up did not say how to scrape its metrics:\n%s", tail(b, 40))
	}

	// An agent on its own: its metrics on --metrics-listen, without a token.
	agentDir := filepath.Join(work, "agent")
	agentAddr, agentMetrics := freeAddr(t), freeAddr(t)
	agent := start(t, work, "agent", []string{tokenEnv + "=agent-token-0123456789", metricsTokenEnv + "="}, bin,
		"agent", "--data-dir", agentDir, "--listen", agentAddr, "--no-prune", "--metrics-listen", agentMetrics)
	waitHTTP(t, agent, "http://"+agentMetrics+"/metrics")
	fams := parseMetrics(t, "http://"+agentMetrics+"/metrics", "")
	for _, name := range []string{"roost_agent_info", "roost_agent_host_cpus", "roost_agent_host_memory_bytes", "roost_agent_host_max_sandboxes",
		"roost_agent_sandboxes", "roost_agent_template_pulls_total", "go_goroutines"} {
		if fams[name] == nil {
			t.Errorf("agent: no %s", name)
		}
	}
	for name := range fams {
		if strings.HasPrefix(name, "roost_controlplane_") || strings.HasPrefix(name, "roost_store_") {
			t.Errorf("agent serves %s", name)
		}
	}
}

// get fetches url with the bearer token ("" sends none).
func get(t *testing.T, url, token string) (int, *http.Response) {
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
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
	}
	return resp.StatusCode, resp
}

// parseMetrics fetches a /metrics page and parses it with Prometheus'
// text parser.
func parseMetrics(t *testing.T, url, token string) map[string]*dto.MetricFamily {
	t.Helper()
	status, resp := get(t, url, token)
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d", url, status)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}
