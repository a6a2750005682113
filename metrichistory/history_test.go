package metrichistory

import (
	"errors"
	"math"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

var t0 = time.Unix(1_700_000_100, 0) // a multiple of every tier's resolution

func newHistory(t *testing.T, cfg Config) *History {
	t.Helper()
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestDefaultTiers(t *testing.T) {
	for _, tt := range []struct {
		interval time.Duration
		want     []Tier
	}{
		{5 * time.Second, []Tier{{5 * time.Second, time.Hour}, {time.Minute, 6 * time.Hour}, {5 * time.Minute, 24 * time.Hour}}},
		{250 * time.Millisecond, []Tier{{250 * time.Millisecond, time.Hour}, {time.Minute, 6 * time.Hour}, {5 * time.Minute, 24 * time.Hour}}},
		{time.Minute, []Tier{{time.Minute, time.Hour}, {5 * time.Minute, 24 * time.Hour}}},
		{10 * time.Minute, []Tier{{10 * time.Minute, time.Hour}}},
		{7 * time.Second, []Tier{{7 * time.Second, time.Hour}, {63 * time.Second, 6 * time.Hour}, {315 * time.Second, 24 * time.Hour}}},
	} {
		got := DefaultTiers(tt.interval)
		if len(got) != len(tt.want) {
			t.Errorf("DefaultTiers(%s) = %v, want %v", tt.interval, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("DefaultTiers(%s) = %v, want %v", tt.interval, got, tt.want)
			}
		}
		if _, err := New(Config{Tiers: got}); err != nil {
			t.Errorf("DefaultTiers(%s): %v", tt.interval, err)
		}
	}
}

func TestNewRefusesBadTiers(t *testing.T) {
	for _, tiers := range [][]Tier{
		{},
		{{0, time.Hour}},
		{{time.Minute, time.Second}},
		{{time.Second, time.Hour}, {time.Second, 2 * time.Hour}},         // not coarser
		{{time.Second, time.Hour}, {time.Minute, time.Hour}},             // not longer
		{{time.Minute, time.Hour}, {time.Second, 2 * time.Hour}},         // finer after coarser
		{{-time.Second, time.Hour}, {time.Minute, 2 * time.Hour}},        // negative
		{{time.Second, time.Minute}, {time.Minute, 30 * time.Second}},    // shorter than its resolution
		{{2 * time.Second, time.Hour}, {5 * time.Second, 2 * time.Hour}}, // not a multiple
	} {
		if _, err := New(Config{Tiers: tiers}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("New(%v): %v, want ErrInvalid", tiers, err)
		}
	}
}

func TestSlotMerge(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   []Sample
		want slot
	}{
		{"one", []Sample{{CPUPct: 12.345, MemUsed: 3 << 20, MemCache: 1 << 20, DiskUsed: 5 << 30, NetRx: 100, NetTx: 7}},
			slot{cpu: 1235, memUsed: 3 << 10, memCache: 1 << 10, diskUsed: 5 << 20, rx: 100, tx: 7, n: 1}},
		{"mean cpu, largest memory, summed network", []Sample{
			{CPUPct: 10, MemUsed: 4 << 20, DiskUsed: 1 << 20, NetRx: 1000},
			{CPUPct: 50, MemUsed: 2 << 20, DiskUsed: 3 << 20, NetRx: 24},
			{CPUPct: 90, MemUsed: 3 << 20, DiskUsed: 2 << 20, NetTx: 5},
		}, slot{cpu: 15000, memUsed: 4 << 10, diskUsed: 3 << 10, rx: 1024, tx: 5, n: 3}},
		{"bytes to the KiB below", []Sample{{MemUsed: 2047}}, slot{memUsed: 1, n: 1}},
		{"negative cpu is none", []Sample{{CPUPct: -3}}, slot{n: 1}},
		{"cpu beyond the slot's range", []Sample{{CPUPct: 1e9}}, slot{cpu: maxCPU, n: 1}},
		{"memory beyond 4 TiB", []Sample{{MemUsed: 1 << 60}}, slot{memUsed: math.MaxUint32, n: 1}},
	} {
		var got slot
		for _, s := range tt.in {
			got = merge(got, slotOf(s))
		}
		if got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
	// Counts saturate rather than wrap, and the mean stays.
	full := slot{cpu: 100 * math.MaxUint16, n: math.MaxUint16}
	if got := merge(full, slot{cpu: 100, n: 1}); got.n != math.MaxUint16 || got.meanCPU() != 1 {
		t.Errorf("merge into a full slot: %+v", got)
	}
	// A mean of many samples does not round away a small difference.
	var many slot
	many = merge(many, slotOf(Sample{}))
	for range 999 {
		many = merge(many, slotOf(Sample{CPUPct: 16.74}))
	}
	if got := many.meanCPU(); math.Abs(got-16.74*0.999) > 1e-9 {
		t.Errorf("mean of 0 and 999 × 16.74: %v", got)
	}
}

func TestRing(t *testing.T) {
	tier := Tier{time.Second, 4 * time.Second} // 4 buckets
	type step struct {
		at  int64 // bucket
		cpu float64
	}
	for _, tt := range []struct {
		name    string
		adds    []step
		first   int64
		cpus    []uint32 // the slots' cpu, oldest first (0: empty)
		dropped bool
	}{
		{"one", []step{{10, 1}}, 10, []uint32{100}, false},
		{"same bucket merges (the CPU summed)", []step{{10, 1}, {10, 3}}, 10, []uint32{400}, false},
		{"a gap is empty buckets", []step{{10, 1}, {12, 2}}, 10, []uint32{100, 0, 200}, false},
		{"full", []step{{10, 1}, {11, 2}, {12, 3}, {13, 4}}, 10, []uint32{100, 200, 300, 400}, false},
		{"wraps", []step{{10, 1}, {11, 2}, {12, 3}, {13, 4}, {14, 5}, {15, 6}}, 12, []uint32{300, 400, 500, 600}, true},
		{"a long gap starts over", []step{{10, 1}, {11, 2}, {100, 3}}, 100, []uint32{300}, true},
		{"a gap of the ring's size starts over", []step{{10, 1}, {14, 2}}, 14, []uint32{200}, true},
		{"a gap just short of it keeps the last", []step{{10, 1}, {13, 2}}, 10, []uint32{100, 0, 0, 200}, false},
		{"a late sample in a held bucket merges", []step{{10, 1}, {12, 2}, {11, 4}}, 10, []uint32{100, 400, 200}, false},
		{"a sample older than the ring is dropped", []step{{10, 1}, {11, 2}, {12, 3}, {13, 4}, {14, 5}, {9, 9}, {10, 9}}, 11, []uint32{200, 300, 400, 500}, true},
	} {
		r := newRing(tier)
		for _, a := range tt.adds {
			r.add(a.at, slotOf(Sample{CPUPct: a.cpu}))
		}
		var got []uint32
		for b := r.first; b <= r.last(); b++ {
			got = append(got, r.at(b).cpu)
		}
		if r.first != tt.first || !equal(got, tt.cpus) || r.dropped != tt.dropped {
			t.Errorf("%s: first %d, slots %v, dropped %v; want %d, %v, %v", tt.name, r.first, got, r.dropped, tt.first, tt.cpus, tt.dropped)
		}
		if len(r.slots) > r.size || cap(r.slots) > r.size {
			t.Errorf("%s: %d slots, capacity %d, in a ring of %d", tt.name, len(r.slots), cap(r.slots), r.size)
		}
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// smallTiers make every tier wrap within minutes.
var smallTiers = []Tier{{time.Second, 10 * time.Second}, {5 * time.Second, time.Minute}, {30 * time.Second, 5 * time.Minute}}

func TestQueryStitchesTiers(t *testing.T) {
	h := newHistory(t, Config{Tiers: smallTiers})
	lim := Limits{CPUs: 2, MemTotal: 1 << 30, DiskTotal: 2 << 30}
	// One sample a second for 3 minutes, cpu = the minute it is in.
	for i := range 180 {
		h.Add("a", "team", lim, Sample{Time: t0.Add(time.Duration(i) * time.Second), CPUPct: float64(i / 60), NetRx: 1})
	}
	got, ok := h.Query("a", Query{})
	if !ok || got.Owner != "team" || !got.Ended.IsZero() || !got.Oldest.Equal(t0) {
		t.Fatalf("series %+v, %v", got, ok)
	}
	// The finest tier holds the last 10 s, from 2:50; the 5 s tier the
	// minute before that, from 1:50 (its oldest bucket, 1:55 up to 2:00
	// as the 30 s tier's bucket ends); the 30 s tier the rest.
	var res []time.Duration
	var rx uint64
	for i, p := range got.Points {
		if i > 0 && p.Time.Before(got.Points[i-1].Time.Add(got.Points[i-1].Resolution)) {
			t.Errorf("point %d at %s overlaps the one before", i, p.Time)
		}
		if len(res) == 0 || res[len(res)-1] != p.Resolution {
			res = append(res, p.Resolution)
		}
		rx += p.NetRx
		if p.CPUs != 2 || p.MemTotal != 1<<30 || p.DiskTotal != 2<<30 {
			t.Errorf("point %d limits %+v", i, p)
		}
	}
	if !equal(res, []time.Duration{30 * time.Second, 5 * time.Second, time.Second}) {
		t.Errorf("resolutions, oldest first: %v", res)
	}
	if rx != 180 {
		t.Errorf("points hold %d samples' bytes, want all 180", rx)
	}
	first, last := got.Points[0], got.Points[len(got.Points)-1]
	if !first.Time.Equal(t0) || first.Samples != 30 || first.CPUPct != 0 || !last.Time.Equal(t0.Add(179*time.Second)) || last.CPUPct != 2 {
		t.Errorf("first %+v, last %+v", first, last)
	}

	for _, tt := range []struct {
		name        string
		q           Query
		n           int
		first, last time.Time
	}{
		{"a second of the finest tier", Query{Start: t0.Add(175 * time.Second), End: t0.Add(175 * time.Second)}, 1, t0.Add(175 * time.Second), t0.Add(175 * time.Second)},
		{"a range across two tiers", Query{Start: t0.Add(160 * time.Second), End: t0.Add(172 * time.Second)}, 5, t0.Add(160 * time.Second), t0.Add(172 * time.Second)},
		{"a coarse bucket overlapping the start is in", Query{Start: t0.Add(45 * time.Second), End: t0.Add(70 * time.Second)}, 2, t0.Add(30 * time.Second), t0.Add(60 * time.Second)},
		{"before the series", Query{Start: t0.Add(-time.Hour), End: t0.Add(-time.Second)}, 0, time.Time{}, time.Time{}},
		{"after it", Query{Start: t0.Add(time.Hour)}, 0, time.Time{}, time.Time{}},
		{"in steps of a minute", Query{Step: time.Minute}, 3, t0, t0.Add(2 * time.Minute)},
		{"at most 4 points", Query{MaxPoints: 4}, 3, t0, t0.Add(2 * time.Minute)},
	} {
		got, _ := h.Query("a", tt.q)
		if len(got.Points) != tt.n {
			t.Errorf("%s: %d points, want %d: %+v", tt.name, len(got.Points), tt.n, got.Points)
			continue
		}
		if tt.n > 0 && (!got.Points[0].Time.Equal(tt.first) || !got.Points[tt.n-1].Time.Equal(tt.last)) {
			t.Errorf("%s: points from %s to %s, want %s to %s", tt.name, got.Points[0].Time, got.Points[tt.n-1].Time, tt.first, tt.last)
		}
		var rx uint64
		for _, p := range got.Points {
			rx += p.NetRx
		}
		if tt.q.Start.IsZero() && tt.q.End.IsZero() && rx != 180 {
			t.Errorf("%s: %d samples' bytes, want 180", tt.name, rx)
		}
	}
	if _, ok := h.Query("b", Query{}); ok {
		t.Error("an unknown series answers")
	}
}

func TestLatestAndGaps(t *testing.T) {
	h := newHistory(t, Config{Tiers: smallTiers})
	if _, ok := h.Latest("a"); ok {
		t.Error("latest of an unknown series")
	}
	h.Add("a", "", Limits{}, Sample{Time: t0, CPUPct: 5})
	h.Add("a", "", Limits{}, Sample{Time: t0.Add(time.Second), CPUPct: 6})
	// Paused for 4 s: no samples, no points.
	h.Add("a", "", Limits{}, Sample{Time: t0.Add(6 * time.Second), CPUPct: 7})
	got, ok := h.Latest("a")
	if !ok || len(got.Points) != 1 || !got.Points[0].Time.Equal(t0.Add(6*time.Second)) || got.Points[0].CPUPct != 7 {
		t.Errorf("latest %+v", got)
	}
	all, _ := h.Query("a", Query{})
	if len(all.Points) != 3 {
		t.Errorf("a paused sandbox has points %+v", all.Points)
	}
}

func TestEndedSeries(t *testing.T) {
	h := newHistory(t, Config{Tiers: smallTiers, EndedFor: time.Minute, EndedMax: 2})
	for _, id := range []string{"a", "b", "c", "d"} {
		h.Add(id, "", Limits{}, Sample{Time: t0})
	}
	h.End("a", t0.Add(time.Second))
	h.End("b", t0.Add(2*time.Second))
	h.End("nosuch", t0)
	if got, ok := h.Query("a", Query{}); !ok || !got.Ended.Equal(t0.Add(time.Second)) || len(got.Points) != 1 {
		t.Errorf("a sandbox right after it ended: %+v, %v", got, ok)
	}
	h.End("c", t0.Add(3*time.Second)) // a third: the first ended goes
	if _, ok := h.Query("a", Query{}); ok {
		t.Error("the earliest ended series stays beyond EndedMax")
	}
	for _, id := range []string{"b", "c", "d"} {
		if _, ok := h.Query(id, Query{}); !ok {
			t.Errorf("series %s evicted", id)
		}
	}
	// A sandbox that lives again (a sandbox ID reused) is not ended.
	h.Add("b", "", Limits{}, Sample{Time: t0.Add(5 * time.Second)})
	if got, _ := h.Query("b", Query{}); !got.Ended.IsZero() {
		t.Errorf("b ended at %s after a new sample", got.Ended)
	}
	h.Prune(t0.Add(2 * time.Minute))
	if _, ok := h.Query("c", Query{}); ok {
		t.Error("an ended series outlives EndedFor")
	}
	if ids := h.IDs(); len(ids) != 2 {
		t.Errorf("series left %v, want b and d", ids)
	}
}
