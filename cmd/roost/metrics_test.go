package main

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics settings roost cannot honour are refused, not ignored.
func TestMetricsOptions(t *testing.T) {
	t.Setenv(metricsTokenEnv, "")
	long := strings.Repeat("t", minMetricsToken)
	for _, c := range []struct {
		name string
		o    metricsOptions
		ok   bool
	}{
		{"off", metricsOptions{api: true}, true},
		{"token on the API listener", metricsOptions{api: true, token: long}, true},
		{"listener without a token", metricsOptions{api: true, listen: "127.0.0.1:0"}, true},
		{"agent listener with a token", metricsOptions{listen: "127.0.0.1:0", token: long}, true},
		{"short token", metricsOptions{api: true, token: "short"}, false},
		{"token with a space", metricsOptions{api: true, token: long + " x"}, false},
		{"agent token without a listener", metricsOptions{token: long}, false},
		{"listen without a port", metricsOptions{api: true, listen: "127.0.0.1"}, false},
	} {
		_, err := c.o.setup(slog.New(slog.DiscardHandler))
		if (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok %v", c.name, err, c.ok)
		}
	}
	t.Setenv(metricsTokenEnv, "short")
	if _, err := (&metricsOptions{api: true}).setup(slog.New(slog.DiscardHandler)); err == nil {
		t.Errorf("a short $%s was taken", metricsTokenEnv)
	}
}

// --metrics-listen serves the registry, Go's and the process's series
// included, to the token's bearer only.
func TestMetricsListen(t *testing.T) {
	t.Setenv(metricsTokenEnv, "")
	token := strings.Repeat("s", minMetricsToken)
	o := metricsOptions{listen: "127.0.0.1:0", token: token}
	m, err := o.setup(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stop, err := m.serve(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	url := "http://" + m.addr + "/metrics"
	for _, auth := range []string{"", "Bearer wrong", token} {
		req, _ := http.NewRequest("GET", url, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", auth, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "promhttp_metric_handler_requests_total"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	var b strings.Builder
	m.printScrape(&b, "http://127.0.0.1:3000")
	if !strings.Contains(b.String(), url) || !strings.Contains(b.String(), "Authorization: Bearer $"+metricsTokenEnv) || strings.Contains(b.String(), token) {
		t.Errorf("printScrape:\n%s", b.String())
	}
}
