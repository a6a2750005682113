package metrichistory

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"roost.dev/roost/errdefs"
)

// Tier is one resolution a series keeps: buckets of Resolution for the
// last Span.
type Tier struct {
	Resolution time.Duration
	Span       time.Duration
}

// DefaultInterval is how often the agent samples a sandbox, by default.
const DefaultInterval = 5 * time.Second

// DefaultTiers are the tiers of a history sampled every interval: the
// interval itself for the last hour, 1 min for 6 h, 5 min for 24 h, each
// resolution rounded up to a multiple of the finer one's. A tier no
// finer than the one before is left out.
func DefaultTiers(interval time.Duration) []Tier {
	tiers := []Tier{{interval, time.Hour}}
	for _, t := range []Tier{{time.Minute, 6 * time.Hour}, {5 * time.Minute, 24 * time.Hour}} {
		prev := tiers[len(tiers)-1].Resolution
		t.Resolution = (t.Resolution + prev - 1) / prev * prev
		if t.Resolution > prev && t.Span > t.Resolution {
			tiers = append(tiers, t)
		}
	}
	return tiers
}

// Config configures a History.
type Config struct {
	// Tiers are the resolutions kept, the finest first, each coarser and
	// longer than the one before; default DefaultTiers(DefaultInterval).
	Tiers []Tier
	// EndedFor is how long the series of an ended sandbox is kept;
	// default 1 h.
	EndedFor time.Duration
	// EndedMax is how many ended series are kept at most, the earliest
	// ended evicted first; default 256.
	EndedMax int
}

// Limits are what a sandbox may use, as its points show them.
type Limits struct {
	CPUs      int
	MemTotal  uint64 // bytes
	DiskTotal uint64 // bytes
}

// Sample is one reading of a sandbox: its use at Time, and what it did
// since the reading before.
type Sample struct {
	Time time.Time
	// CPUPct is the share of the sandbox's CPUs it used since the
	// reading before, in percent (100: all of them all the time).
	CPUPct float64
	// MemUsed, MemCache and DiskUsed are bytes in use at Time.
	MemUsed, MemCache, DiskUsed uint64
	// NetRx and NetTx are the bytes the sandbox received and sent since
	// the reading before.
	NetRx, NetTx uint64
}

// Point is one bucket of a series, as a query answers it.
type Point struct {
	// Time is where the bucket starts; it stands for [Time,
	// Time+Resolution).
	Time       time.Time
	Resolution time.Duration
	// Samples is how many samples the bucket merged.
	Samples int
	CPUs    int
	// CPUPct is the samples' mean.
	CPUPct float64
	// MemUsed, MemCache and DiskUsed are the largest sample's, to the
	// KiB.
	MemUsed, MemCache, DiskUsed uint64
	MemTotal, DiskTotal         uint64
	// NetRx and NetTx are the bytes of the bucket's samples' intervals.
	NetRx, NetTx uint64
}

// Series is what a query answers of one sandbox.
type Series struct {
	// Owner is the label the series was added with.
	Owner string
	// Ended is when the sandbox was ended; zero while it lives.
	Ended time.Time
	// Oldest is where the oldest bucket held starts.
	Oldest time.Time
	Points []Point
}

// Query selects points of a series.
type Query struct {
	// Start and End bound the points' buckets (both included): a point
	// is in when its bucket overlaps [Start, End]. Zero: open.
	Start, End time.Time
	// Step merges points finer than it into buckets of Step, aligned to
	// multiples of Step since the Unix epoch; 0 keeps the points as held.
	Step time.Duration
	// MaxPoints bounds the answer: the step doubles until it fits. 0:
	// no bound.
	MaxPoints int
}

// History is the series of one host's sandboxes. Its methods are safe
// for concurrent use; each holds its lock for a few microseconds per
// series it touches.
type History struct {
	cfg Config

	mu     sync.Mutex // guards series
	series map[string]*series
}

// series is one sandbox's history.
type series struct {
	owner  string
	limits Limits
	ended  time.Time
	rings  []ring
}

// New returns an empty History. Tiers that are not ever coarser and
// longer are errdefs.ErrInvalid.
func New(cfg Config) (*History, error) {
	if cfg.Tiers == nil {
		cfg.Tiers = DefaultTiers(DefaultInterval)
	}
	if cfg.EndedFor == 0 {
		cfg.EndedFor = time.Hour
	}
	if cfg.EndedMax == 0 {
		cfg.EndedMax = 256
	}
	for i, t := range cfg.Tiers {
		if t.Resolution <= 0 || t.Span < t.Resolution ||
			i > 0 && (t.Resolution <= cfg.Tiers[i-1].Resolution || t.Resolution%cfg.Tiers[i-1].Resolution != 0 || t.Span <= cfg.Tiers[i-1].Span) {
			return nil, fmt.Errorf("metric tiers %v: each must be longer than the one before, its resolution a multiple of that one's: %w", cfg.Tiers, errdefs.ErrInvalid)
		}
	}
	if len(cfg.Tiers) == 0 || cfg.EndedFor < 0 || cfg.EndedMax < 0 {
		return nil, fmt.Errorf("metric history config %+v: %w", cfg, errdefs.ErrInvalid)
	}
	return &History{cfg: cfg, series: map[string]*series{}}, nil
}

// Retention is how far back the history reaches: the coarsest tier's
// span.
func (h *History) Retention() time.Duration { return h.cfg.Tiers[len(h.cfg.Tiers)-1].Span }

// Resolution is the finest tier's.
func (h *History) Resolution() time.Duration { return h.cfg.Tiers[0].Resolution }

// Add records sample s of sandbox id, whose owner label is owner and
// limits lim (both replace what the series had). A series that ended
// lives again.
func (h *History) Add(id, owner string, lim Limits, s Sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sr := h.series[id]
	if sr == nil {
		sr = &series{rings: make([]ring, len(h.cfg.Tiers))}
		for i, t := range h.cfg.Tiers {
			sr.rings[i] = newRing(t)
		}
		h.series[id] = sr
	}
	sr.owner, sr.limits, sr.ended = owner, lim, time.Time{}
	sl := slotOf(s)
	for i := range sr.rings {
		r := &sr.rings[i]
		r.add(r.bucket(s.Time), sl)
	}
}

// End marks sandbox id ended at t: its series is kept for EndedFor, and
// evicted before then when more than EndedMax series have ended. An
// unknown id is ignored.
func (h *History) End(id string, t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sr := h.series[id]; sr != nil && sr.ended.IsZero() {
		sr.ended = t
	}
	h.evictLocked(t)
}

// Prune evicts the ended series past EndedFor at now.
func (h *History) Prune(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.evictLocked(now)
}

// IDs lists the series held, ended or not.
func (h *History) IDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]string, 0, len(h.series))
	for id := range h.series {
		ids = append(ids, id)
	}
	return ids
}

// evictLocked drops ended series past EndedFor at now, then the earliest
// ended beyond EndedMax.
func (h *History) evictLocked(now time.Time) {
	type ended struct {
		id string
		at time.Time
	}
	var all []ended
	for id, sr := range h.series {
		switch {
		case sr.ended.IsZero():
		case now.Sub(sr.ended) > h.cfg.EndedFor:
			delete(h.series, id)
		default:
			all = append(all, ended{id, sr.ended})
		}
	}
	if len(all) <= h.cfg.EndedMax {
		return
	}
	slices.SortFunc(all, func(a, b ended) int { return cmp.Or(a.at.Compare(b.at), cmp.Compare(a.id, b.id)) })
	for _, e := range all[:len(all)-h.cfg.EndedMax] {
		delete(h.series, e.id)
	}
}

// Query returns the points of sandbox id that q selects, oldest first,
// and whether the history has the sandbox.
func (h *History) Query(id string, q Query) (Series, bool) {
	h.mu.Lock()
	sr := h.series[id]
	if sr == nil {
		h.mu.Unlock()
		return Series{}, false
	}
	out := Series{Owner: sr.owner, Ended: sr.ended, Oldest: sr.oldest()}
	pts := sr.points(q.Start, q.End)
	h.mu.Unlock()

	step := q.Step
	for {
		out.Points = coarsen(pts, step)
		if q.MaxPoints <= 0 || len(out.Points) <= q.MaxPoints {
			return out, true
		}
		step = nextStep(max(step, h.Resolution()))
	}
}

// steps are the round steps a query coarsens through to fit MaxPoints;
// past the last, the step doubles.
var steps = []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour}

// nextStep is the round step after d.
func nextStep(d time.Duration) time.Duration {
	for _, s := range steps {
		if s > d {
			return s
		}
	}
	return 2 * d
}

// Latest returns the newest point of sandbox id, at the finest tier, and
// whether there is one.
func (h *History) Latest(id string) (Series, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sr := h.series[id]
	if sr == nil {
		return Series{}, false
	}
	out := Series{Owner: sr.owner, Ended: sr.ended, Oldest: sr.oldest()}
	r := &sr.rings[0]
	for b := r.last(); b >= r.first; b-- {
		if s := r.at(b); s.n > 0 {
			out.Points = []Point{sr.point(r, b, *s)}
			break
		}
	}
	return out, len(out.Points) > 0
}

// oldest is where the series' oldest bucket starts, in the coarsest tier
// that holds any.
func (sr *series) oldest() time.Time {
	for i := len(sr.rings) - 1; i >= 0; i-- {
		if r := &sr.rings[i]; len(r.slots) > 0 {
			return time.Unix(0, r.first*r.res)
		}
	}
	return time.Time{}
}

// points stitches the tiers, each used where no finer one covers the
// series any more: tier i answers for [cut[i+1], cut[i]), each cut a
// multiple of the next coarser tier's resolution, the finest tier up to
// the end. Only buckets that overlap [start, end] (zero: open) and hold
// samples count.
func (sr *series) points(start, end time.Time) []Point {
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !start.IsZero() {
		lo = start.UnixNano()
	}
	if !end.IsZero() {
		hi = end.UnixNano()
	}
	// Coarse to fine: a tier starts where the next finer one's oldest
	// bucket is, up to its own resolution, and no earlier than the
	// coarser ones end.
	cut := make([]int64, len(sr.rings)+1)
	cut[0], cut[len(sr.rings)] = math.MaxInt64, math.MinInt64
	for i := len(sr.rings) - 1; i > 0; i-- {
		cut[i] = cut[i+1]
		if fine := &sr.rings[i-1]; fine.dropped {
			res := sr.rings[i].res
			cut[i] = max(cut[i], -floorDiv(-fine.first*fine.res, res)*res)
		}
	}
	var out []Point
	for i := len(sr.rings) - 1; i >= 0; i-- {
		r := &sr.rings[i]
		lower, upper := cut[i+1], cut[i] // buckets start in [lower, upper)
		if len(r.slots) == 0 || lower >= upper {
			continue
		}
		from, to := r.first, r.last()
		if first := max(lo, lower); first > from*r.res {
			from = floorDiv(first, r.res)
		}
		if last := min(hi, upper-1); last < to*r.res {
			to = floorDiv(last, r.res)
		}
		for b := from; b <= to; b++ {
			t := b * r.res
			if t < lower || t >= upper || t > hi || t+r.res <= lo {
				continue
			}
			if s := r.at(b); s.n > 0 {
				out = append(out, sr.point(r, b, *s))
			}
		}
	}
	return out
}

// point is bucket b of r, holding s, as a Point.
func (sr *series) point(r *ring, b int64, s slot) Point {
	return Point{
		Time: time.Unix(0, b*r.res), Resolution: time.Duration(r.res), Samples: int(s.n),
		CPUs: sr.limits.CPUs, CPUPct: s.meanCPU(),
		MemUsed: uint64(s.memUsed) << 10, MemCache: uint64(s.memCache) << 10, DiskUsed: uint64(s.diskUsed) << 10,
		MemTotal: sr.limits.MemTotal, DiskTotal: sr.limits.DiskTotal,
		NetRx: uint64(s.rx), NetTx: uint64(s.tx),
	}
}

// coarsen merges the points finer than step into buckets of step,
// aligned to its multiples; points of step or coarser stay as they are.
// A merged bucket starts no earlier than the point before it ends, so it
// does not overlap a coarser one.
func coarsen(pts []Point, step time.Duration) []Point {
	if step <= 0 {
		return pts
	}
	out := make([]Point, 0, len(pts))
	cur := -1 // the bucket being merged into, in out
	var curEnd time.Time
	for _, p := range pts {
		if p.Resolution >= step {
			out = append(out, p)
			cur = -1
			continue
		}
		if cur >= 0 && p.Time.Before(curEnd) {
			out[cur] = mergePoints(out[cur], p)
			continue
		}
		bucket := time.Unix(0, floorDiv(p.Time.UnixNano(), int64(step))*int64(step))
		curEnd = bucket.Add(step)
		if n := len(out); n > 0 {
			bucket = maxTime(bucket, out[n-1].Time.Add(out[n-1].Resolution))
		}
		p.Time, p.Resolution = bucket, curEnd.Sub(bucket)
		out = append(out, p)
		cur = len(out) - 1
	}
	return out
}

// mergePoints merges b into a, a's time and resolution staying.
func mergePoints(a, b Point) Point {
	n := a.Samples + b.Samples
	if n > 0 {
		a.CPUPct = (a.CPUPct*float64(a.Samples) + b.CPUPct*float64(b.Samples)) / float64(n)
	}
	a.Samples = n
	a.MemUsed, a.MemCache, a.DiskUsed = max(a.MemUsed, b.MemUsed), max(a.MemCache, b.MemCache), max(a.DiskUsed, b.DiskUsed)
	a.NetRx += b.NetRx
	a.NetTx += b.NetTx
	return a
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
