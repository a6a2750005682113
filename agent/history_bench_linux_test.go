package agent_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"roost.dev/roost/agent"
	"roost.dev/roost/template/templatetest"
)

// BenchmarkMetricsSampling measures what sampling the metrics history
// costs: ROOST_BENCH_SAMPLED (default 20; make bench: 100) idle namespace sandboxes are
// sampled round after round (Manager.SampleMetrics: runtime.Stats from
// the sandbox's cgroup files, network counters and statfs, and the
// history's Add), and the CPU time the process spent (getrusage) is
// divided by the samples taken. Extrapolated: the share of one core that
// sampling 1000 sandboxes every 5 s costs (core-pct-1000; the target is
// ≤ 1 %). The baseline, in the same run, is the way the control plane
// asked before: each sandbox's envd GET /metrics over HTTP, counting the
// client's CPU and the sandbox's (envd's work, from its cgroup).
func BenchmarkMetricsSampling(b *testing.B) {
	n := 20
	if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_SAMPLED")); err == nil && v > 0 {
		n = v
	}
	h := newHost(b)
	h.slotHi = h.slotLo + n + 8
	// The sampler's own rounds stay out of the measurement.
	a := h.startWithConfig(templatetest.Store(b), func(c *agent.Config) { c.MetricsInterval = time.Hour })
	envds := make([]string, n)
	ids := make([]string, n)
	for i := range envds {
		sb, err := a.m.Create(ctxT(b), agent.CreateRequest{Timeout: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		ids[i], envds[i] = sb.ID, sb.Envd.String()
	}
	a.m.SampleMetrics() // opens each sandbox's files
	const rounds = 50
	var sampleCPU, envdCPU time.Duration
	samples := 0
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	for b.Loop() {
		c0 := processCPU(b)
		for range rounds {
			a.m.SampleMetrics()
		}
		sampleCPU += processCPU(b) - c0
		samples += rounds * n

		s0 := sandboxesCPU(b, a, ids)
		c0 = processCPU(b)
		for range rounds {
			for _, e := range envds {
				envdMetrics(b, client, e)
			}
		}
		envdCPU += processCPU(b) - c0 + sandboxesCPU(b, a, ids) - s0
	}
	per := float64(sampleCPU.Microseconds()) / float64(samples)
	base := float64(envdCPU.Microseconds()) / float64(samples)
	// 1000 sandboxes, each sampled every 5 s: µs per 5 s, as % of a core.
	pct := func(us float64) float64 { return us * 1000 / 5e6 * 100 }
	b.ReportMetric(per, "sample-cpu-us")
	b.ReportMetric(base, "envd-cpu-us")
	b.ReportMetric(pct(per), "core-pct-1000")
	b.ReportMetric(pct(base), "envd-core-pct-1000")
	b.ReportMetric(float64(n), "sandboxes")
}

// processCPU is the CPU time this process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sandboxesCPU sums the CPU time the sandboxes have used.
func sandboxesCPU(b *testing.B, a *agentProc, ids []string) time.Duration {
	var sum time.Duration
	for _, id := range ids {
		st, err := a.rt.Stats(context.Background(), id)
		if err != nil {
			b.Fatal(err)
		}
		sum += st.CPUUsage
	}
	return sum
}

// envdMetrics asks a sandbox's envd for a sample, as the control plane
// did before the history.
func envdMetrics(b *testing.B, c *http.Client, envd string) {
	resp, err := c.Get("http://" + envd + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("envd /metrics: %s", resp.Status)
	}
}
