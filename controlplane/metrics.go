package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store"
)

// Sandbox metrics (docs/metrics.md) are the history each host's agent
// keeps of its sandboxes (GetSandboxMetrics): sampled on the host every
// few seconds, 24 h of it, coarser as it ages. These handlers choose the
// range and the step, as E2B does, and ask the sandbox's host. A killed
// sandbox's record is gone, but its host keeps its history for a while:
// the hosts are asked for it with the team as its owner, so only the
// team that created it reads it.

const (
	// maxMetricsIDs is how many sandboxes one GET /sandboxes/metrics may
	// name, E2B's limit.
	maxMetricsIDs = 100
	// metricsRetention is how far back an agent's history reaches
	// (metrichistory.DefaultTiers): a longer range is refused.
	metricsRetention = 24 * time.Hour
	// metricsTimeout bounds each agent's answer.
	metricsTimeout = 10 * time.Second
)

// metricJSON is E2B's SandboxMetric.
type metricJSON struct {
	Timestamp     time.Time `json:"timestamp"`
	TimestampUnix int64     `json:"timestampUnix"`
	CPUCount      int       `json:"cpuCount"`
	CPUUsedPct    float64   `json:"cpuUsedPct"`
	MemUsed       uint64    `json:"memUsed"`
	MemTotal      uint64    `json:"memTotal"`
	MemCache      uint64    `json:"memCache"`
	DiskUsed      uint64    `json:"diskUsed"`
	DiskTotal     uint64    `json:"diskTotal"`
}

// metricV1JSON is one point of roost's GET /v1/sandboxes/{id}/metrics:
// E2B's fields, the interval it stands for, and the network's bytes.
type metricV1JSON struct {
	metricJSON
	// ResolutionMs is the point's interval: [timestamp, timestamp +
	// resolutionMs).
	ResolutionMs int64  `json:"resolutionMs"`
	Samples      int    `json:"samples"`
	NetRxBytes   uint64 `json:"netRxBytes"`
	NetTxBytes   uint64 `json:"netTxBytes"`
}

// metricsV1JSON is GET /v1/sandboxes/{id}/metrics's answer.
type metricsV1JSON struct {
	SandboxID string `json:"sandboxID"`
	// KilledAt is when the sandbox was destroyed, for one whose host
	// still keeps its history.
	KilledAt *time.Time     `json:"killedAt,omitempty"`
	Points   []metricV1JSON `json:"points"`
}

// sandboxMetricsRoutes registers the sandbox metrics endpoints.
func (s *Server) sandboxMetricsRoutes(api func(string, apiHandler)) {
	api("GET /sandboxes/{id}/metrics", s.sandboxMetrics)
	api("GET /sandboxes/metrics", s.sandboxesMetrics)
	api("GET /v1/sandboxes/{id}/metrics", s.sandboxMetricsV1)
}

// sandboxMetrics is E2B's GET /sandboxes/{id}/metrics?start=&end=: the
// sandbox's points in the range, from its start (or 24 h back) to now
// by default, in E2B's steps (5 s for a range under an hour, up to
// 5 min for a day).
func (s *Server) sandboxMetrics(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	sm, err := s.querySandboxMetrics(r, key, e2bStep)
	if err != nil {
		s.fail(w, r, "sandbox metrics", err)
		return
	}
	out := make([]metricJSON, len(sm.GetPoints()))
	for i, p := range sm.GetPoints() {
		out[i] = e2bMetric(p)
	}
	writeJSON(w, http.StatusOK, out)
}

// sandboxMetricsV1 is roost's GET /v1/sandboxes/{id}/metrics?start=&end=&step=:
// as E2B's, with each point's resolution and network bytes, in the
// history's own resolution unless step (seconds) asks for a coarser one.
func (s *Server) sandboxMetricsV1(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	step, _, err := nonNegativeParam(r.URL.Query(), "step", "seconds")
	if err != nil {
		s.fail(w, r, "sandbox metrics", err)
		return
	}
	sm, err := s.querySandboxMetrics(r, key, func(time.Duration) time.Duration { return time.Duration(step) * time.Second })
	if err != nil {
		s.fail(w, r, "sandbox metrics", err)
		return
	}
	out := metricsV1JSON{SandboxID: r.PathValue("id"), Points: make([]metricV1JSON, len(sm.GetPoints()))}
	if sm.EndedAt != nil {
		t := sm.GetEndedAt().AsTime().UTC()
		out.KilledAt = &t
	}
	for i, p := range sm.GetPoints() {
		out.Points[i] = metricV1JSON{metricJSON: e2bMetric(p), ResolutionMs: p.GetResolutionMs(), Samples: int(p.GetSamples()),
			NetRxBytes: p.GetNetRxBytes(), NetTxBytes: p.GetNetTxBytes()}
	}
	writeJSON(w, http.StatusOK, out)
}

// querySandboxMetrics answers a single sandbox's metrics query: the
// team's sandbox (running or paused) from its host, or a killed one from
// whichever host still keeps its history; step chooses the step from the
// range's length. No points is an empty series.
func (s *Server) querySandboxMetrics(r *http.Request, key store.APIKey, step func(time.Duration) time.Duration) (*hostagentv1.SandboxMetrics, error) {
	win, err := parseMetricsWindow(r.URL.Query())
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	now := time.Now()
	sb, err := s.teamSandbox(r, key)
	if errors.Is(err, errdefs.ErrNotFound) {
		return s.killedSandboxMetrics(ctx, key.TeamID, r.PathValue("id"), win, now, step)
	}
	if err == nil {
		err = usable(sb)
	}
	if err != nil {
		return nil, err
	}
	began := sb.StartedAt
	if began.IsZero() {
		began = sb.CreatedAt
	}
	start, end, ok, err := win.resolve(began, time.Time{}, now)
	if err != nil || !ok {
		return &hostagentv1.SandboxMetrics{SandboxId: sb.ID}, err
	}
	h, err := s.hostOf(ctx, sb)
	if err != nil {
		return nil, err
	}
	got, err := s.hostMetrics(ctx, h, &hostagentv1.GetSandboxMetricsRequest{SandboxIds: []string{sb.ID},
		Start: timestamppb.New(start), End: timestamppb.New(end), StepMs: step(end.Sub(start)).Milliseconds()})
	if err != nil {
		return nil, err
	}
	if len(got) == 0 { // not sampled yet
		return &hostagentv1.SandboxMetrics{SandboxId: sb.ID}, nil
	}
	return got[0], nil
}

// killedSandboxMetrics finds the history of the team's sandbox id on a
// host that keeps it after the sandbox was destroyed, and queries it
// there: the range by default from its first point to its end. A
// sandbox no host keeps is errdefs.ErrNotFound, as it was.
func (s *Server) killedSandboxMetrics(ctx context.Context, teamID, id string, win metricsWindow, now time.Time,
	step func(time.Duration) time.Duration) (*hostagentv1.SandboxMetrics, error) {
	notFound := fmt.Errorf("sandbox %q not found: %w", id, errdefs.ErrNotFound)
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		return nil, err
	}
	var (
		mu    sync.Mutex
		host  store.Host
		found *hostagentv1.SandboxMetrics
		wg    sync.WaitGroup
	)
	for _, h := range hosts {
		if h.State == store.HostDown {
			continue
		}
		wg.Go(func() {
			got, err := s.hostMetrics(ctx, h, &hostagentv1.GetSandboxMetricsRequest{SandboxIds: []string{id}, LatestOnly: true, Owner: teamID})
			if err != nil {
				s.log.Debug("host not asked for a killed sandbox's metrics", "host", h.ID, "sandbox", id, "err", err)
				return
			}
			if len(got) == 1 && got[0].EndedAt != nil {
				mu.Lock()
				host, found = h, got[0]
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if found == nil {
		return nil, notFound
	}
	start, end, ok, err := win.resolve(found.GetOldest().AsTime(), found.GetEndedAt().AsTime(), now)
	if err != nil || !ok {
		return &hostagentv1.SandboxMetrics{SandboxId: id, EndedAt: found.EndedAt}, err
	}
	got, err := s.hostMetrics(ctx, host, &hostagentv1.GetSandboxMetricsRequest{SandboxIds: []string{id}, Owner: teamID,
		Start: timestamppb.New(start), End: timestamppb.New(end), StepMs: step(end.Sub(start)).Milliseconds()})
	if err != nil {
		return nil, err
	}
	if len(got) == 0 { // evicted meanwhile
		return nil, notFound
	}
	return got[0], nil
}

// sandboxesMetrics is E2B's GET /sandboxes/metrics?sandbox_ids=a,b: the
// latest point of each named running sandbox of the team, one call per
// host, the hosts in parallel. A sandbox that is not the team's, not
// running, not sampled yet or whose host does not answer in time is left
// out, as a paused one is.
func (s *Server) sandboxesMetrics(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	ids, err := parseSandboxIDs(r.URL.Query().Get("sandbox_ids"))
	if err != nil {
		s.fail(w, r, "sandboxes metrics", err)
		return
	}
	byHost := map[string][]string{}
	for _, id := range ids {
		sb, err := s.store.GetSandbox(r.Context(), key.TeamID, id)
		if err == nil && sb.State == store.SandboxRunning {
			byHost[sb.HostID] = append(byHost[sb.HostID], id)
		}
	}
	out := make(map[string]metricJSON, len(ids))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for hostID, hostIDs := range byHost {
		wg.Go(func() {
			h, err := s.store.GetHost(r.Context(), hostID)
			var got []*hostagentv1.SandboxMetrics
			if err == nil {
				got, err = s.hostMetrics(r.Context(), h, &hostagentv1.GetSandboxMetricsRequest{SandboxIds: hostIDs, LatestOnly: true})
			}
			if err != nil {
				s.log.Debug("sandboxes left out of metrics", "host", hostID, "sandboxes", hostIDs, "err", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, sm := range got {
				if pts := sm.GetPoints(); len(pts) > 0 {
					out[sm.GetSandboxId()] = e2bMetric(pts[len(pts)-1])
				}
			}
		})
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": out})
}

// hostMetrics asks host h's agent for metrics, within metricsTimeout.
func (s *Server) hostMetrics(ctx context.Context, h store.Host, req *hostagentv1.GetSandboxMetricsRequest) ([]*hostagentv1.SandboxMetrics, error) {
	ctx, cancel := context.WithTimeout(ctx, metricsTimeout)
	defer cancel()
	resp, err := s.agents.For(h).GetSandboxMetrics(ctx, connect.NewRequest(req))
	if err := errdefs.FromConnect("agent sandbox metrics", err); err != nil {
		return nil, err
	}
	return resp.Msg.GetSandboxes(), nil
}

// e2bMetric is an agent's point as E2B's SandboxMetric, timed at its
// start.
func e2bMetric(p *hostagentv1.MetricPoint) metricJSON {
	t := p.GetTime().AsTime().UTC()
	return metricJSON{
		Timestamp: t, TimestampUnix: t.Unix(), CPUCount: int(p.GetCpuCount()), CPUUsedPct: p.GetCpuUsedPct(),
		MemUsed: p.GetMemUsed(), MemTotal: p.GetMemTotal(), MemCache: p.GetMemCache(), DiskUsed: p.GetDiskUsed(), DiskTotal: p.GetDiskTotal(),
	}
}

// e2bStep is E2B's step for a range of d: at most 720 points, finer for
// shorter ranges.
func e2bStep(d time.Duration) time.Duration {
	switch {
	case d < time.Hour:
		return 5 * time.Second
	case d < 6*time.Hour:
		return 30 * time.Second
	case d < 12*time.Hour:
		return time.Minute
	case d < 24*time.Hour:
		return 2 * time.Minute
	}
	return 5 * time.Minute
}

// metricsWindow is the interval of E2B's start and end query parameters,
// in unix seconds, both ends included; an absent side is the default.
type metricsWindow struct {
	start, end       int64
	hasStart, hasEnd bool
}

// parseMetricsWindow reads start and end: non-negative unix seconds.
func parseMetricsWindow(q url.Values) (metricsWindow, error) {
	var win metricsWindow
	var err error
	if win.start, win.hasStart, err = nonNegativeParam(q, "start", "unix seconds"); err != nil {
		return metricsWindow{}, err
	}
	if win.end, win.hasEnd, err = nonNegativeParam(q, "end", "unix seconds"); err != nil {
		return metricsWindow{}, err
	}
	if win.hasStart && win.hasEnd && win.end < win.start {
		return metricsWindow{}, fmt.Errorf("end %d is before start %d: %w", win.end, win.start, errdefs.ErrInvalid)
	}
	return win, nil
}

// resolve is the window for a sandbox that began at began and ended at
// ended (zero: it runs), at now. An absent end is the sandbox's end or
// now; an absent start its beginning, no earlier than metricsRetention
// before the end. ok is false when the range is empty (it ends before
// the sandbox began, or begins after now). A range longer than the
// history keeps is errdefs.ErrInvalid, saying so.
func (win metricsWindow) resolve(began, ended, now time.Time) (start, end time.Time, ok bool, err error) {
	end = now
	if !ended.IsZero() {
		end = ended
	}
	if win.hasEnd {
		end = time.Unix(win.end, 0)
	}
	start = began
	if win.hasStart {
		start = time.Unix(win.start, 0)
	}
	if win.hasStart && end.Sub(start) > metricsRetention {
		return time.Time{}, time.Time{}, false, fmt.Errorf("metrics from %s to %s: a range of %s is longer than the %s of metrics roost keeps: %w",
			start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), end.Sub(start).Round(time.Second), metricsRetention, errdefs.ErrInvalid)
	}
	if end.Sub(start) > metricsRetention {
		start = end.Add(-metricsRetention)
	}
	if end.Before(start) || start.After(now) {
		return time.Time{}, time.Time{}, false, nil
	}
	return start, end, true, nil
}

// parseSandboxIDs parses sandbox_ids: 1 to maxMetricsIDs comma-separated
// IDs, each once. Errors wrap errdefs.ErrInvalid.
func parseSandboxIDs(q string) ([]string, error) {
	if q == "" {
		return nil, fmt.Errorf("sandbox_ids is required: comma-separated sandbox IDs: %w", errdefs.ErrInvalid)
	}
	ids := strings.Split(q, ",")
	if len(ids) > maxMetricsIDs {
		return nil, fmt.Errorf("sandbox_ids names %d sandboxes: at most %d: %w", len(ids), maxMetricsIDs, errdefs.ErrInvalid)
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if id == "" || seen[id] {
			return nil, fmt.Errorf("sandbox_ids %q: IDs must be non-empty and unique: %w", q, errdefs.ErrInvalid)
		}
		seen[id] = true
	}
	return ids, nil
}
