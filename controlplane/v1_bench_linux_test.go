package controlplane_test

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
)

// reportLatency reports the p50 and p99 of lat in milliseconds.
func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
	b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
}

// BenchmarkCreateREST measures POST /v2/sandboxes → 201 with a ready
// sandbox (namespace runtime, cached base template), end to end over
// loopback HTTP. Destroys are outside the timed part.
func BenchmarkCreateREST(b *testing.B) {
	e := newTestenv(b, controlplane.Config{})
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
	reportLatency(b, lat)
}

// BenchmarkExecTrueREST measures POST /v1/sandboxes/{id}/exec running
// `true` (args form, no shell) to its answer.
func BenchmarkExecTrueREST(b *testing.B) {
	e := newTestenv(b, controlplane.Config{})
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
	reportLatency(b, lat)
	e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil).want(b, http.StatusNoContent)
}
