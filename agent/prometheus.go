package agent

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's Prometheus series (docs/prometheus.md): what
// its creates and template pulls took, and, read at each scrape, the
// host's capacity and its sandboxes. None is labelled by sandbox: the
// host is the scrape target.
type metrics struct {
	create       *prometheus.HistogramVec // by runtime, outcome
	pulls        *prometheus.CounterVec   // by outcome
	pullBytes    prometheus.Counter
	pullDuration *prometheus.HistogramVec // by outcome
}

func newMetrics() *metrics {
	return &metrics{
		create: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "roost_agent_sandbox_create_duration_seconds",
			Help: "Time the agent took to create a sandbox until its envd answered (a template pull included), by runtime and outcome (ok, error).",
			// 50 ms to 7 min.
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}, []string{"runtime", "outcome"}),
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_agent_template_pulls_total",
			Help: "Pulls of a control-plane template's tree (fetching its missing layers, then unpacking), by outcome (ok, error).",
		}, []string{"outcome"}),
		pullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_agent_template_pull_bytes_total",
			Help: "Bytes of template layers fetched from the control plane.",
		}),
		pullDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "roost_agent_template_pull_duration_seconds",
			Help: "Time a template pull took, fetch and unpack, by outcome (ok, error).",
			// 100 ms to 27 min.
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 15),
		}, []string{"outcome"}),
	}
}

// register puts the metrics, and the host's read at each scrape, in r.
func (ms *metrics) register(r prometheus.Registerer, m *Manager) error {
	for _, c := range []prometheus.Collector{ms.create, ms.pulls, ms.pullBytes, ms.pullDuration, hostCollector{m}} {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("agent: register metrics: %w", err)
		}
	}
	for _, o := range []string{"ok", "error"} {
		ms.pulls.WithLabelValues(o)
	}
	return nil
}

// created records a create of a sandbox on runtime that began at begin.
func (ms *metrics) created(runtime string, begin time.Time, err error) {
	ms.create.WithLabelValues(runtime, outcome(err)).Observe(time.Since(begin).Seconds())
}

// pulled records a template pull that fetched n bytes.
func (ms *metrics) pulled(begin time.Time, n int64, err error) {
	o := outcome(err)
	ms.pulls.WithLabelValues(o).Inc()
	ms.pullBytes.Add(float64(n))
	ms.pullDuration.WithLabelValues(o).Observe(time.Since(begin).Seconds())
}

func outcome(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// hostCollector reads the host's capacity and its sandboxes at each
// scrape: a map walk under the manager's locks, nothing on disk.
type hostCollector struct{ m *Manager }

var (
	hostInfoDesc = prometheus.NewDesc("roost_agent_info",
		"The agent: its runtime and version (always 1).", []string{"runtime", "version"}, nil)
	hostCPUsDesc = prometheus.NewDesc("roost_agent_host_cpus",
		"CPUs of the host.", nil, nil)
	hostMemoryDesc = prometheus.NewDesc("roost_agent_host_memory_bytes",
		"Memory of the host.", nil, nil)
	hostMaxDesc = prometheus.NewDesc("roost_agent_host_max_sandboxes",
		"How many sandboxes the host can run at once (its network slots).", nil, nil)
	sandboxesDesc = prometheus.NewDesc("roost_agent_sandboxes",
		"Sandboxes of the host by state (build sandboxes not counted).", []string{"state"}, nil)
	sandboxVCPUsDesc = prometheus.NewDesc("roost_agent_sandbox_vcpus",
		"vCPUs the host's sandboxes are given, summed.", nil, nil)
	sandboxMemoryDesc = prometheus.NewDesc("roost_agent_sandbox_memory_bytes",
		"Memory the host's sandboxes are given, summed.", nil, nil)
	warmDesc = prometheus.NewDesc("roost_agent_warm_sandboxes",
		"Warm pools' sandboxes started and unclaimed, by template.", []string{"template"}, nil)
	warmMemoryDesc = prometheus.NewDesc("roost_agent_warm_memory_bytes",
		"Memory the warm pools' sandboxes use (working set), by template.", []string{"template"}, nil)
	warmClaimsDesc = prometheus.NewDesc("roost_agent_warm_pool_creates_total",
		"Creates of pooled templates, by whether a warm sandbox served them (hit) or not (miss).", []string{"outcome"}, nil)
)

func (c hostCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{hostInfoDesc, hostCPUsDesc, hostMemoryDesc, hostMaxDesc, sandboxesDesc, sandboxVCPUsDesc, sandboxMemoryDesc, warmDesc, warmMemoryDesc, warmClaimsDesc} {
		ch <- d
	}
}

func (c hostCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	byState := map[State]int{}
	var vcpus int
	var memMB int64
	for _, s := range m.List() {
		byState[s.State]++
		vcpus += s.Limits.VCPUs
		memMB += int64(s.Limits.MemoryMB)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(hostInfoDesc, 1, m.rt.Name(), m.cfg.Version)
	gauge(hostCPUsDesc, float64(m.host.CPUs))
	gauge(hostMemoryDesc, float64(m.host.MemoryMB<<20))
	gauge(hostMaxDesc, float64(m.net.Capacity()))
	for s := StateStarting; s <= StateError; s++ {
		gauge(sandboxesDesc, float64(byState[s]), s.String())
	}
	gauge(sandboxVCPUsDesc, float64(vcpus))
	gauge(sandboxMemoryDesc, float64(memMB<<20))
	if m.pools == nil {
		return
	}
	pools, hits, misses := m.PoolStats()
	ready, mem := map[string]int{}, map[string]int64{}
	for _, p := range pools {
		ready[p.Template] += p.Ready
		mem[p.Template] += p.MemoryBytes
	}
	for t := range m.pools.sizes {
		gauge(warmDesc, float64(ready[t]), t)
		gauge(warmMemoryDesc, float64(mem[t]), t)
	}
	ch <- prometheus.MustNewConstMetric(warmClaimsDesc, prometheus.CounterValue, float64(hits), "hit")
	ch <- prometheus.MustNewConstMetric(warmClaimsDesc, prometheus.CounterValue, float64(misses), "miss")
}
