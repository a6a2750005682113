package process_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/user"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/bench/samples"
	"roost.dev/roost/envd/auth"
	"roost.dev/roost/envd/defaults"
	"roost.dev/roost/envd/process"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/gen/process/processconnect"
)

// BenchmarkStartTrue measures Start of /bin/true until its end event over
// loopback, and reports the median and p99 next to the mean.
func BenchmarkStartTrue(b *testing.B) {
	me, _ := user.Current()
	svc := process.New(auth.NewGuard(defaults.New(me.Username)), slog.New(slog.DiscardHandler))
	defer svc.Close()
	mux := http.NewServeMux()
	mux.Handle(processconnect.NewProcessHandler(svc))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := processconnect.NewProcessClient(srv.Client(), srv.URL)
	ctx := context.Background()
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		stream, err := c.Start(ctx, connect.NewRequest(&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "/bin/true"}}))
		if err != nil {
			b.Fatal(err)
		}
		for stream.Receive() {
		}
		if err := stream.Err(); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(t0))
	}
	if err := samples.Durations("envd-start-true-inproc", times); err != nil {
		b.Error(err)
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(times[len(times)*99/100].Microseconds())/1000, "p99-ms")
}
