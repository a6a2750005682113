package controlplane

import (
	"testing"
	"time"

	"roost.dev/roost/store"
)

// teamPoints replays a team's events back from the count running now:
// each point holds the most that ran at once in its step and the creates
// per second in it.
func TestTeamPoints(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	counts := []store.EventCount{
		{At: at(3), Created: true, RunningDelta: 1},  // a created
		{At: at(4), Created: true, RunningDelta: 1},  // b created
		{At: at(7), RunningDelta: -1},                // a paused
		{At: at(12), RunningDelta: 1},                // a resumed
		{At: at(13), RunningDelta: -1},               // b killed
		{At: at(14), RunningDelta: -1},               // a killed
		{At: at(16), Created: true, RunningDelta: 1}, // c created, runs now
	}
	// One sandbox was running before the range and still runs: two now.
	points := teamPoints(t0, at(20), 5*time.Second, 2, counts)
	type want struct {
		concurrent int
		rate       float64
	}
	wants := []want{{1, 0}, {3, 0.4}, {3, 0}, {3, 0}, {2, 0.2}}
	if len(points) != len(wants) {
		t.Fatalf("%d points, want %d", len(points), len(wants))
	}
	for i, w := range wants {
		p := points[i]
		if !p.Timestamp.Equal(at(5*i)) || p.ConcurrentSandboxes != w.concurrent || p.SandboxStartRate != w.rate {
			t.Errorf("point %d: %+v, want at %s %d running, %.1f/s", i, p, at(5*i), w.concurrent, w.rate)
		}
	}
	// No events: the count now, all along.
	for _, p := range teamPoints(t0, at(10), 5*time.Second, 4, nil) {
		if p.ConcurrentSandboxes != 4 || p.SandboxStartRate != 0 {
			t.Fatalf("without events: %+v", p)
		}
	}
	// Events the count now does not cover (it went to zero after a lost
	// record was deleted) never make a negative count.
	for _, p := range teamPoints(t0, at(10), 5*time.Second, 0, []store.EventCount{{At: at(2), Created: true, RunningDelta: 1}}) {
		if p.ConcurrentSandboxes < 0 {
			t.Fatalf("negative count: %+v", p)
		}
	}
}
