package namespace_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template/templatetest"
)

// BenchmarkConfinementCreate measures create → envd healthy with the
// syscall filter and capability bounding (the default) and without
// (Config.Unconfined), alternating the two so that both see the same
// machine. It reports each p50 and the ratio confined / unconfined.
func BenchmarkConfinementCreate(b *testing.B) {
	if testing.Short() {
		b.Skip("short")
	}
	drivers := confinementDrivers(b)
	net := runtimetest.Network(b)
	tpl := templatetest.Base(b)
	envd := runtimetest.Envd(b)
	dir := b.TempDir()
	ctx := context.Background()
	times := map[string][]time.Duration{}
	modes := []string{"confined", "unconfined"}
	for b.Loop() {
		slices.Reverse(modes) // neither always goes first
		for _, mode := range modes {
			id := runtimetest.ID()
			slot, err := net.Acquire()
			if err != nil {
				b.Fatal(err)
			}
			nw, err := net.Setup(ctx, id, slot, true)
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			inst, err := drivers[mode].Create(ctx, runtime.Spec{ID: id, StateDir: filepath.Join(dir, id), RootFS: tpl.RootFS, Envd: envd, Hostname: id, Network: nw})
			if err != nil {
				b.Fatal(err)
			}
			if err := runtimetest.WaitHealthy(ctx, "http://"+inst.Envd.String()); err != nil {
				b.Fatal(err)
			}
			times[mode] = append(times[mode], time.Since(t0))
			b.StopTimer()
			if err := drivers[mode].Destroy(ctx, id); err != nil {
				b.Fatal(err)
			}
			net.Teardown(ctx, id, slot)
			net.Release(slot)
			b.StartTimer()
		}
	}
	reportPair(b, "create", times)
}

// syscallWork is the syscall-heavy work the issue names, run inside a
// sandbox: a find over the template's tree, and a build-like loop that
// starts many short processes which each open, read, write and stat
// files (what a compiler driver does; the template has no compiler).
var syscallWork = map[string]string{
	"find": "find / -xdev >/dev/null",
	"build": `mkdir -p /tmp/b && cd /tmp/b && for i in $(seq 40); do
	  sed 's/a/b/g' /etc/passwd > s$i.c && cat s$i.c /etc/os-release > o$i.o && stat -c %s o$i.o >/dev/null && rm s$i.c
	done && ls | wc -l >/dev/null && cd / && rm -rf /tmp/b`,
}

// BenchmarkConfinementSyscalls runs syscallWork in a confined and an
// unconfined sandbox, alternating, and reports each p50 and the ratio.
func BenchmarkConfinementSyscalls(b *testing.B) {
	if testing.Short() {
		b.Skip("short")
	}
	drivers := confinementDrivers(b)
	net := runtimetest.Network(b)
	sbs := map[string]*runtimetest.Sandbox{}
	for mode, d := range drivers {
		sbs[mode] = runtimetest.Start(b, d, net, runtimetest.Options{})
		for _, script := range syscallWork {
			sbs[mode].MustExec(b, script) // warm the caches
		}
	}
	ctx := context.Background()
	times := map[string][]time.Duration{}
	modes := []string{"confined", "unconfined"}
	for b.Loop() {
		slices.Reverse(modes) // neither always goes first
		for work, script := range syscallWork {
			for _, mode := range modes {
				t0 := time.Now()
				r, err := sbs[mode].Exec(ctx, script)
				if err != nil || r.ExitCode != 0 {
					b.Fatalf("%s in the %s sandbox: %v %d %.500s", work, mode, err, r.ExitCode, r.Stderr)
				}
				times[work+"-"+mode] = append(times[work+"-"+mode], time.Since(t0))
			}
		}
	}
	for work := range syscallWork {
		reportPair(b, work, map[string][]time.Duration{"confined": times[work+"-confined"], "unconfined": times[work+"-unconfined"]})
	}
}

func confinementDrivers(b *testing.B) map[string]runtime.Runtime {
	return map[string]runtime.Runtime{"confined": newDriverWith(b, false), "unconfined": newDriverWith(b, true)}
}

// reportPair reports the p50 of each mode of what, in ms, and their
// ratio.
func reportPair(b *testing.B, what string, times map[string][]time.Duration) {
	p50 := map[string]float64{}
	for mode, ts := range times {
		slices.Sort(ts)
		p50[mode] = float64(ts[len(ts)/2].Microseconds()) / 1000
		b.ReportMetric(p50[mode], what+"-"+mode+"-p50-ms")
	}
	if p50["unconfined"] > 0 {
		b.ReportMetric(p50["confined"]/p50["unconfined"], what+"-ratio")
	}
}
