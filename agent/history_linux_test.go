package agent_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"roost.dev/roost/agent"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/template/templatetest"
)

// metricsInterval is the tests' sampling interval: short, so that the
// tests take seconds.
const metricsInterval = 200 * time.Millisecond

// TestMetricsHistory samples a real namespace sandbox: a CPU burn shows
// at the time it ran and not before or after, a large file shows in the
// disk and the page cache, a paused sandbox has no points, and a
// destroyed one still answers, to its owner only.
func TestMetricsHistory(t *testing.T) {
	h := newHost(t)
	a := h.startWithConfig(templatetest.Store(t), func(c *agent.Config) { c.MetricsInterval = metricsInterval })
	ctx := ctxT(t)
	id := testID("metrics-")
	created, err := a.client.CreateSandbox(ctx, connect.NewRequest(&hostagentv1.CreateSandboxRequest{
		SandboxId: id, Template: "base", TimeoutSeconds: 600, Vcpus: 1, Owner: "team-a",
	}))
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	envd, started := created.Msg.GetSandbox().GetEnvdAddress(), created.Msg.GetSandbox().GetStartedAt().AsTime()
	query := func(r *hostagentv1.GetSandboxMetricsRequest) []*hostagentv1.SandboxMetrics {
		t.Helper()
		got, err := a.client.GetSandboxMetrics(ctx, connect.NewRequest(r))
		if err != nil {
			t.Fatalf("metrics: %v", err)
		}
		return got.Msg.GetSandboxes()
	}
	points := func(from, to time.Time) []*hostagentv1.MetricPoint {
		t.Helper()
		got := query(&hostagentv1.GetSandboxMetricsRequest{SandboxIds: []string{id}, Start: timestamppb.New(from), End: timestamppb.New(to)})
		if len(got) != 1 {
			t.Fatalf("metrics of %s: %v", id, got)
		}
		return got[0].GetPoints()
	}

	// Right after the create there is a point already.
	if got := query(&hostagentv1.GetSandboxMetricsRequest{SandboxIds: []string{id}, LatestOnly: true}); len(got) != 1 || len(got[0].GetPoints()) != 1 {
		t.Fatalf("latest right after create: %v", got)
	}

	time.Sleep(1500 * time.Millisecond)
	idle := time.Now()
	mustExec(t, envd, "", "timeout 2 sh -c 'while :; do :; done'; true")
	burnt := time.Now()
	time.Sleep(1500 * time.Millisecond)
	written := time.Now()
	mustExec(t, envd, "", "head -c 67108864 /dev/zero > $HOME/big && sync")
	time.Sleep(3 * metricsInterval)
	done := time.Now()

	all := points(time.Time{}, time.Time{})
	var before, during, after []string
	for _, p := range all {
		from := p.GetTime().AsTime()
		to := from.Add(time.Duration(p.GetResolutionMs()) * time.Millisecond)
		if p.GetResolutionMs() != metricsInterval.Milliseconds() || p.GetCpuCount() != 1 || p.GetMemTotal() != uint64(agent.DefaultMemoryMB)<<20 || p.GetDiskTotal() == 0 {
			t.Errorf("point %v", p)
		}
		pct := p.GetCpuUsedPct()
		line := fmt.Sprintf("%s %.1f%%", from.Format("15:04:05.000"), pct)
		switch {
		// A point stands for its interval, give or take one: the sample
		// is timed at the middle of the time since the one before.
		case from.After(idle.Add(metricsInterval)) && to.Before(burnt.Add(-metricsInterval)):
			during = append(during, line)
			if pct < 40 {
				t.Errorf("CPU %.1f%% during the burn, at %s", pct, from)
			}
		case from.After(started.Add(2*metricsInterval)) && to.Before(idle.Add(-metricsInterval)):
			before = append(before, line)
			if pct > 25 {
				t.Errorf("CPU %.1f%% before the burn, at %s", pct, from)
			}
		case from.After(burnt.Add(2*metricsInterval)) && to.Before(written.Add(-metricsInterval)):
			after = append(after, line)
			if pct > 25 {
				t.Errorf("CPU %.1f%% after the burn, at %s", pct, from)
			}
		}
	}
	t.Logf("created %s, burn %s to %s, write at %s\nbefore %v\nduring %v\nafter %v", started.Format("15:04:05.000"),
		idle.Format("15:04:05.000"), burnt.Format("15:04:05.000"), written.Format("15:04:05.000"), before, during, after)
	if len(before) == 0 || len(during) < 5 || len(after) == 0 {
		t.Errorf("%d points before the burn, %d during, %d after, of %d", len(before), len(during), len(after), len(all))
	}
	// The 64 MiB file: on the disk, and in the page cache.
	pre, post := points(written.Add(-time.Second), written.Add(-2*metricsInterval)), points(done.Add(-metricsInterval), done)
	if len(pre) == 0 || len(post) == 0 {
		t.Fatalf("%d points before the write, %d after", len(pre), len(post))
	}
	p0, p1 := pre[len(pre)-1], post[len(post)-1]
	if p1.GetDiskUsed() < p0.GetDiskUsed()+60<<20 || p1.GetMemCache() < p0.GetMemCache()+60<<20 {
		t.Errorf("a 64 MiB file: disk %d → %d, cache %d → %d", p0.GetDiskUsed(), p1.GetDiskUsed(), p0.GetMemCache(), p1.GetMemCache())
	}
	var rx, tx uint64
	for _, p := range all {
		rx, tx = rx+p.GetNetRxBytes(), tx+p.GetNetTxBytes()
	}
	if rx == 0 || tx == 0 {
		t.Errorf("envd's requests and answers: %d bytes received, %d sent", rx, tx)
	}

	// Paused as E2B pauses (hibernated, where CRIU can; its cgroup and
	// the files the driver read go): no points; resumed, points again.
	if _, err := a.client.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{SandboxId: id, PreferHibernate: true})); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	time.Sleep(5 * metricsInterval)
	if _, err := a.client.ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{SandboxId: id})); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	if got := points(paused.Add(metricsInterval), resumed.Add(-metricsInterval)); len(got) != 0 {
		t.Errorf("points of a paused sandbox: %v", got)
	}
	time.Sleep(4 * metricsInterval)
	if got := points(resumed.Add(metricsInterval), time.Now()); len(got) == 0 {
		t.Error("no points after the sandbox resumed")
	}

	// A coarser step merges the points.
	coarse := query(&hostagentv1.GetSandboxMetricsRequest{SandboxIds: []string{id}, StepMs: 1000})
	if n := len(coarse[0].GetPoints()); n == 0 || n >= len(all) || coarse[0].GetPoints()[0].GetResolutionMs() > 1000 {
		t.Errorf("in steps of 1 s: %d points, of %d", n, len(all))
	}

	// Destroyed: still there, ended, for its owner.
	if _, err := a.client.DestroySandbox(ctx, connect.NewRequest(&hostagentv1.DestroySandboxRequest{SandboxId: id})); err != nil {
		t.Fatal(err)
	}
	got := query(&hostagentv1.GetSandboxMetricsRequest{SandboxIds: []string{id, "nosuchsandbox"}, Owner: "team-a"})
	if len(got) != 1 || got[0].GetEndedAt() == nil || len(got[0].GetPoints()) < len(all) {
		t.Errorf("a destroyed sandbox's metrics: %v", got)
	}
	if got := query(&hostagentv1.GetSandboxMetricsRequest{SandboxIds: []string{id}, Owner: "team-b"}); len(got) != 0 {
		t.Errorf("another owner reads them: %v", got)
	}

	for _, r := range []*hostagentv1.GetSandboxMetricsRequest{
		{},
		{SandboxIds: strings.Split(strings.Repeat("x,", 1000)+"x", ",")},
		{SandboxIds: []string{id, id}},
		{SandboxIds: []string{""}},
		{SandboxIds: []string{id}, Start: timestamppb.New(done), End: timestamppb.New(idle)},
		{SandboxIds: []string{id}, StepMs: -1},
	} {
		_, err := a.client.GetSandboxMetrics(ctx, connect.NewRequest(r))
		wantCode(t, fmt.Sprintf("metrics %v", r), err, connect.CodeInvalidArgument)
	}
}
