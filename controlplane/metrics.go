package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

// envdReport is envd's GET /metrics body (sizes in bytes, ts in Unix
// seconds).
type envdReport struct {
	Timestamp  int64   `json:"ts"`
	CPUCount   int     `json:"cpu_count"`
	CPUUsedPct float64 `json:"cpu_used_pct"`
	MemTotal   uint64  `json:"mem_total"`
	MemUsed    uint64  `json:"mem_used"`
	MemCache   uint64  `json:"mem_cache"`
	DiskUsed   uint64  `json:"disk_used"`
	DiskTotal  uint64  `json:"disk_total"`
}

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

// metricsTimeout bounds one metrics sample.
const metricsTimeout = 10 * time.Second

// sandboxMetrics is GET /sandboxes/{id}/metrics?start=&end=. roost keeps
// no history: the answer is one sample taken now from the sandbox's envd
// when the interval holds it, or none (an interval in the past, a paused
// sandbox).
func (s *Server) sandboxMetrics(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	win, err := parseMetricsWindow(r.URL.Query())
	if err != nil {
		s.fail(w, r, "sandbox metrics", err)
		return
	}
	sb, err := s.teamSandbox(r, key)
	if err == nil {
		err = usable(sb)
	}
	if err != nil {
		s.fail(w, r, "sandbox metrics", err)
		return
	}
	if sb.State == store.SandboxPaused {
		writeJSON(w, http.StatusOK, []metricJSON{})
		return
	}
	rep, err := s.sampleMetrics(r.Context(), sb)
	if err != nil {
		s.fail(w, r, "sandbox metrics", err)
		return
	}
	if !win.holds(rep.Timestamp) {
		writeJSON(w, http.StatusOK, []metricJSON{})
		return
	}
	writeJSON(w, http.StatusOK, []metricJSON{rep.metric()})
}

// metricsWindow is the interval of E2B's start and end query parameters,
// in unix seconds, both ends included; an absent side is open.
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
	return win, nil
}

// holds says whether a sample taken at ts (unix seconds) is in the window.
func (win metricsWindow) holds(ts int64) bool {
	return (!win.hasStart || ts >= win.start) && (!win.hasEnd || ts <= win.end)
}

// metric is the report as E2B's SandboxMetric.
func (rep envdReport) metric() metricJSON {
	return metricJSON{
		Timestamp: time.Unix(rep.Timestamp, 0).UTC(), TimestampUnix: rep.Timestamp, CPUCount: rep.CPUCount, CPUUsedPct: rep.CPUUsedPct,
		MemUsed: rep.MemUsed, MemTotal: rep.MemTotal, MemCache: rep.MemCache, DiskUsed: rep.DiskUsed, DiskTotal: rep.DiskTotal,
	}
}

// maxMetricsIDs is how many sandboxes one GET /sandboxes/metrics may
// name, E2B's limit.
const maxMetricsIDs = 100

// sandboxesMetrics is GET /sandboxes/metrics?sandbox_ids=a,b: a sample
// now of each named running sandbox of the team, taken in parallel. A
// sandbox that is not the team's, not running, or does not answer in
// time is left out of the answer, as a paused one has no metrics.
func (s *Server) sandboxesMetrics(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	ids, err := parseSandboxIDs(r.URL.Query().Get("sandbox_ids"))
	if err != nil {
		s.fail(w, r, "sandboxes metrics", err)
		return
	}
	out := make(map[string]metricJSON, len(ids))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			sb, err := s.store.GetSandbox(r.Context(), key.TeamID, id)
			if err != nil || sb.State != store.SandboxRunning {
				return
			}
			rep, err := s.sampleMetrics(r.Context(), sb)
			if err != nil {
				s.log.Debug("sandbox left out of metrics", "sandbox", id, "err", err)
				return
			}
			mu.Lock()
			out[id] = rep.metric()
			mu.Unlock()
		})
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, map[string]any{"sandboxes": out})
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

// sampleMetrics asks the sandbox's envd for a sample, through its agent's
// proxy, on the RPC transport (a small control request, not user traffic).
func (s *Server) sampleMetrics(ctx context.Context, sb store.Sandbox) (envdReport, error) {
	t, err := s.envdOf(ctx, sb)
	if err != nil {
		return envdReport{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, metricsTimeout)
	defer cancel()
	req, err := t.request(ctx, http.MethodGet, "/metrics", nil, nil)
	if err != nil {
		return envdReport{}, err
	}
	resp, err := s.agents.client.Do(req)
	if err != nil {
		return envdReport{}, fmt.Errorf("sample metrics of %s: %v: %w", sb.ID, err, errdefs.ErrUnreachable)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return envdReport{}, fmt.Errorf("sample metrics of %s: envd answered %s: %w", sb.ID, resp.Status, errdefs.ErrUnreachable)
	}
	var rep envdReport
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBodyBytes)).Decode(&rep); err != nil {
		return envdReport{}, fmt.Errorf("decode metrics of %s: %v: %w", sb.ID, err, errdefs.ErrUnreachable)
	}
	return rep, nil
}
