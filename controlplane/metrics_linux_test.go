package controlplane_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
)

// testMetricsInterval is how often the tests' agents sample sandboxes:
// short, so that a test sees points within a second.
const testMetricsInterval = 500 * time.Millisecond

// v1Metrics is GET /v1/sandboxes/{id}/metrics's answer.
type v1Metrics struct {
	SandboxID string     `json:"sandboxID"`
	KilledAt  *time.Time `json:"killedAt"`
	Points    []struct {
		Timestamp    time.Time `json:"timestamp"`
		ResolutionMs int64     `json:"resolutionMs"`
		Samples      int       `json:"samples"`
		CPUCount     int       `json:"cpuCount"`
		CPUUsedPct   float64   `json:"cpuUsedPct"`
		MemTotal     uint64    `json:"memTotal"`
		DiskTotal    uint64    `json:"diskTotal"`
		NetRxBytes   uint64    `json:"netRxBytes"`
		NetTxBytes   uint64    `json:"netTxBytes"`
	} `json:"points"`
}

// TestSandboxMetricsHistory burns a real sandbox's CPU for 6 s and reads
// it back through E2B's route and roost's: high at the time of the burn,
// low before and after, and still there after the sandbox is killed.
func TestSandboxMetricsHistory(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	other, err := e.cp.CreateTeamWithKey(t.Context(), "other")
	if err != nil {
		t.Fatal(err)
	}
	id := e.create(t, map[string]any{"templateID": "base", "cpuCount": 1, "timeout": 120}).SandboxID
	time.Sleep(2 * time.Second)
	burn := time.Now()
	if res := e.exec(t, id, map[string]any{"cmd": "timeout 6 sh -c 'while :; do :; done'; true"}); res.ExitCode != 0 {
		t.Fatalf("burn: %+v", res)
	}
	burnt := time.Now()
	time.Sleep(2 * time.Second)

	// roost's own: every point as sampled, with its resolution.
	var v1 v1Metrics
	e.do("GET", "/v1/sandboxes/"+id+"/metrics", e.key, nil).want(t, http.StatusOK).decode(t, &v1)
	var during, quiet int
	var rx, tx uint64
	for _, p := range v1.Points {
		from := p.Timestamp
		to := from.Add(time.Duration(p.ResolutionMs) * time.Millisecond)
		if p.ResolutionMs != testMetricsInterval.Milliseconds() || p.CPUCount != 1 || p.MemTotal == 0 || p.DiskTotal == 0 {
			t.Errorf("point %+v", p)
		}
		rx, tx = rx+p.NetRxBytes, tx+p.NetTxBytes
		switch {
		case from.After(burn.Add(testMetricsInterval)) && to.Before(burnt.Add(-testMetricsInterval)):
			during++
			if p.CPUUsedPct < 40 {
				t.Errorf("CPU %.1f%% during the burn, at %s", p.CPUUsedPct, from)
			}
		case to.Before(burn.Add(-testMetricsInterval)) && from.After(burn.Add(-1500*time.Millisecond)),
			from.After(burnt.Add(2 * testMetricsInterval)):
			quiet++
			if p.CPUUsedPct > 25 {
				t.Errorf("CPU %.1f%% out of the burn (%s to %s), at %s", p.CPUUsedPct, burn, burnt, from)
			}
		}
	}
	if v1.SandboxID != id || v1.KilledAt != nil || during < 8 || quiet < 2 || rx == 0 || tx == 0 {
		t.Errorf("%d points during the burn, %d out of it, %d/%d bytes, of %+v", during, quiet, rx, tx, v1)
	}
	var coarse v1Metrics
	e.do("GET", "/v1/sandboxes/"+id+"/metrics?step=5", e.key, nil).want(t, http.StatusOK).decode(t, &coarse)
	if len(coarse.Points) == 0 || len(coarse.Points) >= len(v1.Points) || coarse.Points[len(coarse.Points)-1].ResolutionMs > 5000 {
		t.Errorf("in steps of 5 s: %+v", coarse.Points)
	}

	// E2B's: points of 5 s for a range under an hour.
	var ms []struct {
		Timestamp  time.Time `json:"timestamp"`
		CPUUsedPct float64   `json:"cpuUsedPct"`
	}
	e.do("GET", fmt.Sprintf("/sandboxes/%s/metrics?start=%d", id, burn.Add(-time.Minute).Unix()), e.key, nil).want(t, http.StatusOK).decode(t, &ms)
	peak, before := 0.0, -1.0
	for _, m := range ms {
		if m.Timestamp.Unix()%5 != 0 {
			t.Errorf("E2B point at %s: not on a 5 s step", m.Timestamp)
		}
		switch end := m.Timestamp.Add(5 * time.Second); {
		case m.Timestamp.Before(burnt) && end.After(burn):
			peak = max(peak, m.CPUUsedPct)
		case end.Before(burn.Add(-testMetricsInterval)):
			before = max(before, m.CPUUsedPct)
		}
	}
	if peak < 40 || before > 25 {
		t.Errorf("E2B's points: %.1f%% at most during the burn, %.1f%% before: %+v", peak, before, ms)
	}
	e.do("GET", "/v1/sandboxes/"+id+"/metrics", other, nil).want(t, http.StatusNotFound)
	e.do("GET", fmt.Sprintf("/v1/sandboxes/%s/metrics?start=%d&end=%d", id, time.Now().AddDate(-10, 0, 0).Unix(), time.Now().Unix()), e.key, nil).
		want(t, http.StatusBadRequest).wantMessage(t, "longer than the 24h0m0s of metrics roost keeps")
	e.do("GET", "/v1/sandboxes/"+id+"/metrics?step=-5", e.key, nil).want(t, http.StatusBadRequest)

	// Killed: the host still has it, for the team.
	e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNoContent)
	var killed v1Metrics
	e.do("GET", "/v1/sandboxes/"+id+"/metrics", e.key, nil).want(t, http.StatusOK).decode(t, &killed)
	if killed.KilledAt == nil || len(killed.Points) < len(v1.Points) {
		t.Errorf("a killed sandbox: killed at %v, %d points (%d before)", killed.KilledAt, len(killed.Points), len(v1.Points))
	}
	e.do("GET", "/v1/sandboxes/"+id+"/metrics", other, nil).want(t, http.StatusNotFound)
	e.do("GET", "/sandboxes/nosuchsandbox/metrics", e.key, nil).want(t, http.StatusNotFound)
}
