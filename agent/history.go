package agent

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/metrichistory"
	"roost.dev/roost/runtime"
)

// The metrics history (docs/metrics.md): every Config.MetricsInterval the
// sampler reads each running sandbox's runtime.Stats, which drivers read
// from cgroup files, /proc and statfs on the host (never envd), turns the
// counters into what the interval since the last reading used, and adds
// it to the history. A paused sandbox is not sampled: its series has no
// point while it is paused, and its first reading after it resumes is
// only the base of the next. A sandbox the manager no longer has is
// ended in the history, which keeps it for a while.

const (
	// maxMetricsIDs is how many sandboxes one GetSandboxMetrics may name.
	maxMetricsIDs = 1000
	// maxMetricPoints bounds each sandbox's answer; the step grows to fit.
	maxMetricPoints = 2000
)

// sampler is the Manager's part that samples sandboxes into the history.
type sampler struct {
	interval time.Duration
	history  *metrichistory.History

	mu   sync.Mutex         // guards last; held for a whole round, so rounds and single samples never interleave
	last map[string]reading // the previous reading of each sandbox running at the last round
}

// reading is one sandbox's counters at a time.
type reading struct {
	at     time.Time
	cpu    time.Duration
	rx, tx uint64
}

// sampleTarget is a running sandbox to sample, as its record says.
type sampleTarget struct {
	sb      *sandbox
	id      string
	key     string // the runtime's name for it (record.key)
	owner   string
	rt      runtime.Runtime
	limits  runtime.Limits
	started time.Time
}

// startSampler makes the history and starts the sampling loop, which ends
// with the manager.
func (m *Manager) startSampler() error {
	interval := m.cfg.MetricsInterval
	if interval == 0 {
		interval = metrichistory.DefaultInterval
	}
	h, err := metrichistory.New(metrichistory.Config{Tiers: metrichistory.DefaultTiers(interval)})
	if err != nil {
		return fmt.Errorf("agent: metrics interval %s: %w", interval, err)
	}
	m.sampler = &sampler{interval: interval, history: h, last: map[string]reading{}}
	m.wg.Go(m.sampleLoop)
	return nil
}

// sampleLoop samples every interval, on multiples of it, so that each
// sample falls in a bucket of its own.
func (m *Manager) sampleLoop() {
	iv := m.sampler.interval
	for {
		next := time.Now().Truncate(iv).Add(iv)
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(time.Until(next)):
			m.SampleMetrics()
		}
	}
}

// SampleMetrics samples every running sandbox now, ends the history of
// the sandboxes the manager no longer has, and evicts ended histories
// past their time. The sampler does it every Config.MetricsInterval;
// benchmarks call it to measure a round. A panic is logged, not fatal.
func (m *Manager) SampleMetrics() {
	defer func() {
		if p := recover(); p != nil {
			m.log.Error("metrics sampler panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	s := m.sampler
	s.mu.Lock()
	defer s.mu.Unlock()
	targets, known := m.sampleTargets()
	running := make(map[string]bool, len(targets))
	for _, t := range targets {
		running[t.id] = true
		m.sampleLocked(t)
	}
	for id := range s.last {
		if !running[id] { // paused or gone: its next reading starts afresh
			delete(s.last, id)
		}
	}
	now := m.cfg.Now()
	for _, id := range s.history.IDs() {
		if !known[id] {
			s.history.End(id, now) // once: an ended series stays ended
		}
	}
	s.history.Prune(now)
}

// sampleTargets lists the running sandboxes (not build sandboxes), and
// the IDs of every sandbox the manager has.
func (m *Manager) sampleTargets() ([]sampleTarget, map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	known := make(map[string]bool, len(m.sandboxes))
	out := make([]sampleTarget, 0, len(m.sandboxes))
	for id, sb := range m.sandboxes {
		known[id] = true
		if t, ok := m.sampleTargetOf(sb); ok {
			out = append(out, t)
		}
	}
	return out, known
}

// sampleTargetOf is sb as a target, if it runs.
func (m *Manager) sampleTargetOf(sb *sandbox) (sampleTarget, bool) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.rec.State != StateRunning {
		return sampleTarget{}, false
	}
	return sampleTarget{sb: sb, id: sb.rec.ID, key: sb.rec.key(), owner: sb.rec.Owner, rt: m.runtimeOf(sb), limits: sb.rec.Spec.Limits, started: sb.rec.Started}, true
}

// sampleLocked reads sandbox t and adds what it used since its last
// reading to the history (the sampler's mu held). Without a last
// reading, a sandbox that started within the last two intervals counts
// from its start, its counters from zero; any other (resumed, or running
// before this agent) gets its first point at the next reading.
//
// The runtime is asked under the sandbox's op, as every call about one
// sandbox is: a sandbox an operation holds (a pause, a hibernation, a
// destroy) is skipped this round rather than waited for.
func (m *Manager) sampleLocked(t sampleTarget) {
	s := m.sampler
	if !t.sb.op.TryLock() {
		return
	}
	running := t.sb.snapshot().State == StateRunning
	var st runtime.Stats
	var err error
	if running {
		st, err = t.rt.Stats(m.ctx, t.key)
	}
	t.sb.op.Unlock()
	if !running {
		delete(s.last, t.id)
		return
	}
	at := m.cfg.Now()
	if err != nil {
		m.log.Debug("sandbox not sampled", "sandbox", t.id, "err", err)
		delete(s.last, t.id)
		return
	}
	cur := reading{at: at, cpu: st.CPUUsage, rx: st.NetRxBytes, tx: st.NetTxBytes}
	prev, ok := s.last[t.id]
	s.last[t.id] = cur
	if !ok && at.Sub(t.started) < 2*s.interval {
		prev, ok = reading{at: t.started}, true
	}
	// Counters that went back were made anew (a restore): this reading
	// is only the base of the next.
	if !ok || cur.cpu < prev.cpu || cur.rx < prev.rx || cur.tx < prev.tx || !at.After(prev.at) {
		return
	}
	lim := metrichistory.Limits{CPUs: st.VCPUs, MemTotal: st.MemoryLimit, DiskTotal: st.DiskTotal}
	if lim.CPUs == 0 {
		lim.CPUs = t.limits.VCPUs
	}
	if lim.MemTotal == 0 {
		lim.MemTotal = uint64(t.limits.MemoryMB) << 20
	}
	if lim.DiskTotal == 0 {
		lim.DiskTotal = uint64(t.limits.DiskMB) << 20
	}
	// The sample stands for the interval since the last reading: it is
	// timed at its middle, which falls in the bucket the interval is.
	pct := float64(cur.cpu-prev.cpu) / float64(at.Sub(prev.at)) / float64(max(lim.CPUs, 1)) * 100
	s.history.Add(t.id, t.owner, lim, metrichistory.Sample{
		Time: prev.at.Add(at.Sub(prev.at) / 2), CPUPct: pct,
		MemUsed: st.MemoryWorkingSet, MemCache: st.MemoryCache, DiskUsed: st.DiskUsed,
		NetRx: cur.rx - prev.rx, NetTx: cur.tx - prev.tx,
	})
}

// sampleNow samples sandbox id now, if it runs and its history has no
// point yet: a query right after a create gets one.
func (m *Manager) sampleNow(id string) {
	s := m.sampler
	if _, ok := s.history.Latest(id); ok {
		return
	}
	sb, err := m.lookup(id)
	if err != nil {
		return
	}
	t, ok := m.sampleTargetOf(sb)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m.sampleLocked(t)
}

// endIfGone ends sandbox id's history now if the manager no longer has
// the sandbox and the sampler did not notice yet: a query right after a
// destroy says it ended.
func (m *Manager) endIfGone(id string) {
	h := m.sampler.history
	if sr, ok := h.Latest(id); !ok || !sr.Ended.IsZero() {
		return
	}
	if _, err := m.lookup(id); errGone(err) {
		h.End(id, m.cfg.Now())
	}
}

// MetricsQuery selects what Metrics answers.
type MetricsQuery struct {
	metrichistory.Query
	// LatestOnly: each sandbox's newest point only (Query is ignored).
	LatestOnly bool
	// Owner, when set, leaves out sandboxes of another owner.
	Owner string
}

// SandboxMetrics is one sandbox's metrics history.
type SandboxMetrics struct {
	ID string
	metrichistory.Series
}

// Metrics returns the history of each of ids the manager has one of, in
// their order; a zero q.End is now. Errors wrap errdefs.ErrInvalid.
func (m *Manager) Metrics(ids []string, q MetricsQuery) ([]SandboxMetrics, error) {
	switch {
	case len(ids) == 0 || len(ids) > maxMetricsIDs:
		return nil, fmt.Errorf("metrics of %d sandboxes: want 1 to %d: %w", len(ids), maxMetricsIDs, errdefs.ErrInvalid)
	case !q.Start.IsZero() && !q.End.IsZero() && q.End.Before(q.Start):
		return nil, fmt.Errorf("metrics from %s to %s: the end is before the start: %w", q.Start, q.End, errdefs.ErrInvalid)
	case q.Step < 0:
		return nil, fmt.Errorf("metrics step %s: negative: %w", q.Step, errdefs.ErrInvalid)
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if id == "" || seen[id] {
			return nil, fmt.Errorf("metrics of sandboxes %q: IDs must be non-empty and unique: %w", ids, errdefs.ErrInvalid)
		}
		seen[id] = true
	}
	if q.End.IsZero() {
		q.End = m.cfg.Now()
	}
	q.MaxPoints = maxMetricPoints
	h := m.sampler.history
	var out []SandboxMetrics
	for _, id := range ids {
		m.endIfGone(id)
		m.sampleNow(id)
		var sr metrichistory.Series
		var ok bool
		if q.LatestOnly {
			sr, ok = h.Latest(id)
		} else {
			sr, ok = h.Query(id, q.Query)
		}
		if !ok || q.Owner != "" && sr.Owner != q.Owner {
			continue
		}
		out = append(out, SandboxMetrics{ID: id, Series: sr})
	}
	return out, nil
}

// GetSandboxMetrics implements the Connect service (the conversion only).
func (s *service) GetSandboxMetrics(ctx context.Context, req *connect.Request[hostagentv1.GetSandboxMetricsRequest]) (*connect.Response[hostagentv1.GetSandboxMetricsResponse], error) {
	r := req.Msg
	q := MetricsQuery{LatestOnly: r.GetLatestOnly(), Owner: r.GetOwner()}
	if r.Start != nil {
		q.Start = r.GetStart().AsTime()
	}
	if r.End != nil {
		q.End = r.GetEnd().AsTime()
	}
	q.Step = time.Duration(r.GetStepMs()) * time.Millisecond
	got, err := s.m.Metrics(slices.Clone(r.GetSandboxIds()), q)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	resp := &hostagentv1.GetSandboxMetricsResponse{Sandboxes: make([]*hostagentv1.SandboxMetrics, len(got))}
	for i, sm := range got {
		pb := &hostagentv1.SandboxMetrics{SandboxId: sm.ID, Points: make([]*hostagentv1.MetricPoint, len(sm.Points))}
		if !sm.Ended.IsZero() {
			pb.EndedAt = timestamppb.New(sm.Ended)
		}
		if !sm.Oldest.IsZero() {
			pb.Oldest = timestamppb.New(sm.Oldest)
		}
		for j, p := range sm.Points {
			pb.Points[j] = &hostagentv1.MetricPoint{
				Time: timestamppb.New(p.Time), ResolutionMs: p.Resolution.Milliseconds(), Samples: int32(p.Samples),
				CpuCount: int32(p.CPUs), CpuUsedPct: p.CPUPct,
				MemUsed: p.MemUsed, MemTotal: p.MemTotal, MemCache: p.MemCache, DiskUsed: p.DiskUsed, DiskTotal: p.DiskTotal,
				NetRxBytes: p.NetRx, NetTxBytes: p.NetTx,
			}
		}
		resp.Sandboxes[i] = pb
	}
	return connect.NewResponse(resp), nil
}
