package namespace_test

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template/templatetest"
)

// BenchmarkDensity starts ROOST_DENSITY idle sandboxes (default 100) and
// reports the host memory each one costs: the fall in MemAvailable divided
// by their number, after they settle. b.N is ignored; run with -benchtime 1x.
func BenchmarkDensity(b *testing.B) {
	n := 100
	if v, err := strconv.Atoi(os.Getenv("ROOST_DENSITY")); err == nil && v > 0 {
		n = v
	}
	d := newDriverB(b)
	nw := runtimetest.Network(b)
	templatetest.Base(b)
	runtimetest.Envd(b)
	for b.Loop() {
		before := memAvailable(b)
		sbs := make([]*runtimetest.Sandbox, 0, n)
		t0 := time.Now()
		for range n {
			sbs = append(sbs, runtimetest.StartBare(b, d, nw, runtimetest.Options{}))
		}
		elapsed := time.Since(t0)
		time.Sleep(5 * time.Second) // let start-up garbage be collected
		after := memAvailable(b)
		b.ReportMetric(float64(before-after)/float64(n)/(1<<20), "MiB/sandbox")
		b.ReportMetric(float64(n), "sandboxes")
		b.ReportMetric(float64(n)/elapsed.Seconds(), "creates/s")
		b.StopTimer()
		for _, sb := range sbs {
			sb.Close(context.Background())
		}
		b.StartTimer()
	}
}

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
