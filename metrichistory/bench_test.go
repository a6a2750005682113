package metrichistory

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkHistory24h fills the history of 1000 sandboxes (ROOST_BENCH_SERIES)
// with 24 h of samples, one every 5 s each, in virtual time, and reports
// the heap the history holds then (history-MiB: the target is ≤ 64 MiB),
// the cost of one Add, and of a query of a whole day in E2B's steps.
// The baseline is the same samples kept as they come ([]Sample), measured
// for one hour and multiplied by 24 (raw-MiB).
func BenchmarkHistory24h(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_SERIES")); err == nil && v > 0 {
		n = v
	}
	const interval = 5 * time.Second
	ticks := int(24 * time.Hour / interval)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("sandbox-%04d", i)
	}
	sample := func(i, tick int) Sample {
		x := uint64(i*7919 + tick*104729)
		return Sample{Time: t0.Add(time.Duration(tick) * interval), CPUPct: float64(x % 10000 / 100),
			MemUsed: 200<<20 + x%(100<<20), MemCache: x % (50 << 20), DiskUsed: 1<<30 + uint64(tick)<<10, NetRx: x % 4096, NetTx: x % 1024}
	}
	lim := Limits{CPUs: 2, MemTotal: 512 << 20, DiskTotal: 2 << 30}
	for b.Loop() {
		heapBefore := heap()
		h, err := New(Config{})
		if err != nil {
			b.Fatal(err)
		}
		began := time.Now()
		for tick := range ticks {
			for i, id := range ids {
				h.Add(id, "team", lim, sample(i, tick))
			}
		}
		add := time.Since(began)
		held := heap() - heapBefore

		end := t0.Add(time.Duration(ticks) * interval)
		began = time.Now()
		const queries = 100
		var points int
		for q := range queries {
			s, _ := h.Query(ids[q%n], Query{Start: end.Add(-24 * time.Hour), End: end, Step: 2 * time.Minute})
			points = len(s.Points)
		}
		query := time.Since(began) / queries
		runtime.KeepAlive(h)

		// The baseline: an hour of the same samples, as they come.
		h = nil
		rawBefore := heap()
		raw := make([][]Sample, n)
		for tick := range ticks / 24 {
			for i := range ids {
				raw[i] = append(raw[i], sample(i, tick))
			}
		}
		rawHeld := heap() - rawBefore
		runtime.KeepAlive(raw)

		b.ReportMetric(float64(held)/(1<<20), "history-MiB")
		b.ReportMetric(float64(rawHeld)*24/(1<<20), "raw-MiB")
		b.ReportMetric(float64(add.Nanoseconds())/float64(ticks*n), "add-ns")
		b.ReportMetric(float64(query.Microseconds()), "query-day-us")
		b.ReportMetric(float64(points), "query-day-points")
	}
}

// heap is the bytes the heap holds after a collection.
func heap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
