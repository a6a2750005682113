package namespace_test

import (
	"bufio"
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/bench/samples"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template/templatetest"
)

// BenchmarkDensity starts ROOST_DENSITY idle sandboxes (default 100) one
// after another and reports the host memory each one costs (the fall in
// MemAvailable divided by their number, after they settle), the CPU they
// use idle, and create latency (network, create, envd healthy) with them
// all running beside that on the empty host: the p50 of densityProbes
// creates, each destroyed before the next, before the fill and after the
// idle measurement. b.N is ignored; run with -benchtime 1x.
// ROOST_DENSITY_SETTLE (a duration, default 5s) is how long the sandboxes
// rest before their memory and idle CPU are measured.
func BenchmarkDensity(b *testing.B) {
	n := 100
	if v, err := strconv.Atoi(os.Getenv("ROOST_DENSITY")); err == nil && v > 0 {
		n = v
	}
	settle := 5 * time.Second
	if v, err := time.ParseDuration(os.Getenv("ROOST_DENSITY_SETTLE")); err == nil {
		settle = v
	}
	d := newDriverB(b)
	nw := runtimetest.Network(b)
	templatetest.Base(b)
	runtimetest.Envd(b)
	for b.Loop() {
		empty := probeCreates(b, d, nw)
		before := memAvailable(b)
		sbs := make([]*runtimetest.Sandbox, 0, n)
		times := make([]time.Duration, 0, n)
		t0 := time.Now()
		for range n {
			t := time.Now()
			sbs = append(sbs, runtimetest.StartBare(b, d, nw, runtimetest.Options{}))
			times = append(times, time.Since(t))
		}
		elapsed := time.Since(t0)
		time.Sleep(settle) // let start-up garbage be collected
		after := memAvailable(b)
		reportIdleCPU(b, d, sbs)
		full := probeCreates(b, d, nw)
		b.ReportMetric(float64(before-after)/float64(n)/(1<<20), "MiB/sandbox")
		b.ReportMetric(float64(n), "sandboxes")
		b.ReportMetric(float64(n)/elapsed.Seconds(), "creates/s")
		b.ReportMetric(ms(p50(empty)), "create-empty-p50-ms")
		b.ReportMetric(ms(p50(full)), "create-full-p50-ms")
		b.ReportMetric(float64(p50(full))/float64(p50(empty)), "full/empty")
		if err := samples.Durations("density-fill", times); err != nil {
			b.Error(err)
		}
		b.StopTimer()
		for _, sb := range sbs {
			sb.Close(context.Background())
		}
		b.StartTimer()
	}
}

// densityProbes is how many creates measure create latency at each end.
const densityProbes = 20

// probeCreates times densityProbes creates, each destroyed before the
// next, so the host's count of running sandboxes stays as it is.
func probeCreates(b *testing.B, d *namespace.Driver, nw *network.Manager) []time.Duration {
	times := make([]time.Duration, 0, densityProbes)
	for range densityProbes {
		t := time.Now()
		sb := runtimetest.StartBare(b, d, nw, runtimetest.Options{})
		times = append(times, time.Since(t))
		if err := sb.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	return times
}

// idleWindow is how long the CPU of the idle sandboxes is measured.
const idleWindow = 20 * time.Second

// reportIdleCPU reports the CPU time the sandboxes, idle, use a second
// each (their cgroups' usage over idleWindow), and that times 1000 as a
// share of a core: what a full host pays for having them. envd looks for
// new servers more often in the first seconds after it started or served
// a request (see envd/portforward), so the fill's last sandboxes cost
// more; a ROOST_DENSITY_SETTLE of a minute measures only idle ones.
func reportIdleCPU(b *testing.B, d *namespace.Driver, sbs []*runtimetest.Sandbox) {
	ctx := context.Background()
	usage := func() time.Duration {
		var sum time.Duration
		for _, sb := range sbs {
			st, err := d.Stats(ctx, sb.Spec.ID)
			if err != nil {
				b.Fatal(err)
			}
			sum += st.CPUUsage
		}
		return sum
	}
	before, t0 := usage(), time.Now()
	time.Sleep(idleWindow)
	used, elapsed := usage()-before, time.Since(t0)
	perSandbox := used.Seconds() / elapsed.Seconds() / float64(len(sbs))
	b.ReportMetric(perSandbox*1e6, "idle-cpu-us/s/sandbox")
	b.ReportMetric(perSandbox*1000*100, "idle-core-pct-1000")
}

func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func memAvailable(b *testing.B) int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no MemAvailable")
	return 0
}
