package namespace_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"roost.dev/roost/bench/samples"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template/templatetest"
)

// BenchmarkCreateReady measures create → envd healthy for a namespace
// sandbox of the cached base template, network included, and reports p50
// and p99. Destroy is outside the timed part.
func BenchmarkCreateReady(b *testing.B) {
	if testing.Short() {
		b.Skip("short")
	}
	d := newDriverB(b)
	net := runtimetest.Network(b)
	tpl := templatetest.Base(b)
	envd := runtimetest.Envd(b)
	dir := b.TempDir()
	var times []time.Duration
	ctx := context.Background()
	for b.Loop() {
		id := runtimetest.ID()
		slot, err := net.Acquire()
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		nw, err := net.Setup(ctx, id, slot, true)
		if err != nil {
			b.Fatal(err)
		}
		inst, err := d.Create(ctx, runtime.Spec{ID: id, StateDir: filepath.Join(dir, id), RootFS: tpl.RootFS, Envd: envd, Hostname: id, Network: nw})
		if err != nil {
			b.Fatal(err)
		}
		if err := runtimetest.WaitHealthy(ctx, "http://"+inst.Envd.String()); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(t0))
		b.StopTimer()
		if err := d.Destroy(ctx, id); err != nil {
			b.Fatal(err)
		}
		net.Teardown(ctx, id, slot)
		net.Release(slot)
		b.StartTimer()
	}
	report(b, "create-ready", times)
}

// BenchmarkBareUnshare is the baseline: a process in the same set of new
// namespaces, started and waited for, with nothing set up inside.
func BenchmarkBareUnshare(b *testing.B) {
	runtimetest.RequireRoot(b)
	var times []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if out, err := exec.Command("unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--cgroup", "true").CombinedOutput(); err != nil {
			b.Fatalf("unshare: %v: %s", err, out)
		}
		times = append(times, time.Since(t0))
	}
	report(b, "bare-unshare", times)
}

// report reports p50 and p99 and writes the samples as name for the
// bench harness.
func report(b *testing.B, name string, times []time.Duration) {
	if err := samples.Durations(name, times); err != nil {
		b.Error(err)
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(times[min(len(times)-1, len(times)*99/100)].Microseconds())/1000, "p99-ms")
}
