package controlplane

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

// Team metrics are derived from the team's lifecycle events: the count
// of running sandboxes now, replayed back through each event's change to
// it, and the creates per step. So their history is as long as the
// events' (Config.EventRetention).
const (
	// teamMetricsWindow is the range asked for when start is not given.
	teamMetricsWindow = time.Hour
	// maxTeamMetricPoints bounds an answer: longer ranges get coarser
	// steps.
	maxTeamMetricPoints = 360
	// minTeamMetricStep is the finest step.
	minTeamMetricStep = 5 * time.Second
)

// teamMetricJSON is E2B's TeamMetric.
type teamMetricJSON struct {
	Timestamp           time.Time `json:"timestamp"`
	TimestampUnix       int64     `json:"timestampUnix"`
	ConcurrentSandboxes int       `json:"concurrentSandboxes"`
	SandboxStartRate    float64   `json:"sandboxStartRate"`
}

// maxTeamMetricJSON is E2B's MaxTeamMetric.
type maxTeamMetricJSON struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	Value         float64   `json:"value"`
}

// teamMetrics is E2B's GET /teams/{teamID}/metrics?start=&end=: one
// point per step (at most maxTeamMetricPoints), each the running
// sandboxes at its end and the creates per second within it.
func (s *Server) teamMetrics(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	points, err := s.teamSeries(r, cred)
	if err != nil {
		s.fail(w, r, "team metrics", err)
		return
	}
	writeJSON(w, http.StatusOK, points)
}

// teamMetricsMax is E2B's GET /teams/{teamID}/metrics/max?metric=: the
// highest concurrent_sandboxes or sandbox_start_rate in the range, and
// when (the first time it was reached).
func (s *Server) teamMetricsMax(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	metric := r.URL.Query().Get("metric")
	if metric != "concurrent_sandboxes" && metric != "sandbox_start_rate" {
		s.fail(w, r, "team metrics max", invalidf("metric=%q: want concurrent_sandboxes or sandbox_start_rate", metric))
		return
	}
	points, err := s.teamSeries(r, cred)
	if err != nil {
		s.fail(w, r, "team metrics max", err)
		return
	}
	var best maxTeamMetricJSON
	for i, p := range points {
		v := p.SandboxStartRate
		if metric == "concurrent_sandboxes" {
			v = float64(p.ConcurrentSandboxes)
		}
		if i == 0 || v > best.Value {
			best = maxTeamMetricJSON{Timestamp: p.Timestamp, TimestampUnix: p.TimestampUnix, Value: v}
		}
	}
	writeJSON(w, http.StatusOK, best)
}

// teamSeries computes the points of the path's team (the caller's own:
// another is 403) over the query's range.
func (s *Server) teamSeries(r *http.Request, cred store.APIKey) ([]teamMetricJSON, error) {
	if team := r.PathValue("teamID"); team != cred.TeamID {
		return nil, fmt.Errorf("this credential does not act for team %q: %w", team, errdefs.ErrPermissionDenied)
	}
	now := time.Now().UTC()
	start, end, err := s.teamMetricsRange(r, now)
	if err != nil {
		return nil, err
	}
	step := max(minTeamMetricStep, (end.Sub(start) / maxTeamMetricPoints).Round(minTeamMetricStep))
	if end.Sub(start) > step*maxTeamMetricPoints {
		step += minTeamMetricStep
	}
	running, err := s.store.CountSandboxes(r.Context(), store.SandboxFilter{TeamID: cred.TeamID, States: []store.SandboxState{store.SandboxRunning}})
	if err != nil {
		return nil, err
	}
	counts, err := s.store.TeamEventCounts(r.Context(), cred.TeamID, start)
	if err != nil {
		return nil, err
	}
	return teamPoints(start, end, step, running, counts), nil
}

// teamPoints replays counts (oldest first, every event since start):
// the count at start is the count now with every later change undone;
// from there each point at t holds the most that ran at once in
// (t-step, t] and the creates per second in it.
func teamPoints(start, end time.Time, step time.Duration, running int, counts []store.EventCount) []teamMetricJSON {
	for _, c := range counts {
		running -= c.RunningDelta
	}
	n := int(end.Sub(start)/step) + 1
	points := make([]teamMetricJSON, n)
	i := 0
	for k := range points {
		t := start.Add(time.Duration(k) * step)
		peak, created := max(running, 0), 0
		for ; i < len(counts) && !counts[i].At.After(t); i++ {
			running += counts[i].RunningDelta
			peak = max(peak, running)
			if counts[i].Created {
				created++
			}
		}
		points[k] = teamMetricJSON{Timestamp: t, TimestampUnix: t.Unix(), ConcurrentSandboxes: peak}
		if k > 0 {
			points[k].SandboxStartRate = float64(created) / step.Seconds()
		}
	}
	return points
}

// teamMetricsRange reads start and end (Unix seconds): end defaults to
// now, start to teamMetricsWindow before end. A range before the events'
// retention, reversed, or in the future is 400.
func (s *Server) teamMetricsRange(r *http.Request, now time.Time) (time.Time, time.Time, error) {
	q := r.URL.Query()
	unix := func(name string, def time.Time) (time.Time, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return time.Time{}, invalidf("%s=%q: want Unix seconds", name, v)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	end, err := unix("end", now)
	if err != nil {
		return end, end, err
	}
	if end.After(now) {
		end = now
	}
	start, err := unix("start", end.Add(-teamMetricsWindow))
	if err != nil {
		return start, end, err
	}
	oldest := now.Add(-s.cfg.EventRetention)
	switch {
	case !start.Before(end):
		return start, end, invalidf("start must be before end")
	case start.Before(oldest):
		return start, end, invalidf("start is %s ago: team metrics reach back %s (the events' retention)",
			now.Sub(start).Round(time.Second), s.cfg.EventRetention)
	}
	return start, end, nil
}
