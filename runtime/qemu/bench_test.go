package qemu_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template/templatetest"
)

// BenchmarkCreate measures create → envd healthy, one VM at a time
// (run with -benchtime=5x or so: each boot takes seconds under TCG).
func BenchmarkCreate(b *testing.B) {
	d := newDriver(b)
	nw := runtimetest.Network(b)
	templatetest.Base(b)
	// One boot outside the timer builds the image and kernel caches.
	runtimetest.StartBare(b, d, nw, runtimetest.Options{}).Close(context.Background())
	var took []time.Duration
	var rss uint64
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		sb := runtimetest.StartBare(b, d, nw, runtimetest.Options{})
		took = append(took, time.Since(start))
		b.StopTimer()
		if st, err := d.Stats(context.Background(), sb.Spec.ID); err == nil {
			rss = st.MemoryBytes
		}
		if os.Getenv("ROOST_TEST_VERBOSE") != "" {
			b.Logf("create → healthy %v; console:\n%s", took[len(took)-1], readConsole(sb.Spec.StateDir))
		}
		sb.Close(context.Background())
		b.StartTimer()
	}
	b.ReportMetric(float64(p50(took).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(rss>>20), "idle-rss-MiB")
}

// BenchmarkRestore measures restore from a memory snapshot → envd healthy.
func BenchmarkRestore(b *testing.B) {
	d := newDriver(b)
	nw := runtimetest.Network(b)
	sb := runtimetest.StartBare(b, d, nw, runtimetest.Options{})
	defer sb.Close(context.Background())
	ctx := context.Background()
	var took []time.Duration
	var size int64
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		state, err := d.Snapshot(ctx, sb.Spec.ID)
		if err != nil {
			b.Fatal(err)
		}
		if st, err := os.Stat(snapshotFile(sb.Spec.StateDir)); err == nil {
			size = st.Size()
		}
		b.StartTimer()
		start := time.Now()
		inst, err := d.Restore(ctx, sb.Spec, state)
		if err != nil {
			b.Fatal(err)
		}
		hctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err = runtimetest.WaitHealthy(hctx, "http://"+inst.Envd.String())
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	b.ReportMetric(float64(p50(took).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(size>>20), "snapshot-MiB")
}

func p50(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// snapshotFile is where the driver writes a sandbox's memory snapshot.
func snapshotFile(stateDir string) string { return filepath.Join(stateDir, "memory.snap") }

func readConsole(stateDir string) string {
	b, _ := os.ReadFile(filepath.Join(stateDir, "init.log"))
	return string(b)
}
