package agent_test

import (
	"path/filepath"
	"testing"
	"time"

	"roost.dev/roost/agent"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template"
)

// BenchmarkStartCmdCreateQEMU times creates of a template whose start
// command is an HTTP server with a ready check on the qemu runtime: the
// first create boots the VM and runs the start command (the baseline, one
// sample: a boot takes seconds under emulation); the ones timed fork the
// template's capture, taken once the server was ready.
func BenchmarkStartCmdCreateQEMU(b *testing.B) {
	h := qemuHost(b)
	a := h.startWith(storeWith(b, h.base, template.Template{Name: "web", StartCmd: benchServer, ReadyCmd: benchReady}))
	req := agent.CreateRequest{Template: "web", Limits: runtime.Limits{MemoryMB: 512}}
	boot := createAndDestroy(b, a, req)
	waitCapture(b, filepath.Join(h.dataDir, "snapshots", "ready"))
	var forks []time.Duration
	for b.Loop() {
		forks = append(forks, createAndDestroy(b, a, req))
	}
	b.ReportMetric(float64(boot.Microseconds())/1000, "boot-create-ms")
	b.ReportMetric(p50ms(forks), "fork-create-p50-ms")
}
