package metrichistory

import (
	"encoding/binary"
	"math"
	"sort"
	"testing"
	"time"
)

// FuzzDownsample checks the history against a plain list of the samples
// it was given: every point of a query is exactly the samples whose time
// falls in its bucket, merged (mean CPU, largest memory and disk, summed
// bytes); the points do not overlap; and every sample recent enough for
// the coarsest tier to hold it is in exactly one point, however the
// stream paused, whatever the step.
func FuzzDownsample(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0})
	f.Add(stream(200, 1, 3))
	f.Add(stream(50, 7, 11))
	f.Add(stream(400, 13, 2))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := New(Config{Tiers: smallTiers})
		if err != nil {
			t.Fatal(err)
		}
		var all []Sample
		now := t0
		for len(data) >= 8 {
			c := data[:8]
			data = data[8:]
			// Mostly a second apart, sometimes a pause of up to ~7 min.
			gap := time.Duration(c[0]%4) * time.Second
			if c[0] >= 250 {
				gap = time.Duration(c[1]) * 2 * time.Second
			}
			if c[0]%7 == 0 {
				gap += 300 * time.Millisecond
			}
			now = now.Add(gap)
			s := Sample{
				Time:    now,
				CPUPct:  float64(binary.LittleEndian.Uint16(c[2:4])%10001) / 100,
				MemUsed: uint64(binary.LittleEndian.Uint16(c[4:6])) << 12, MemCache: uint64(c[6]) << 20,
				DiskUsed: uint64(c[7]) << 24, NetRx: uint64(c[1]) << 8, NetTx: uint64(c[3]),
			}
			all = append(all, s)
			h.Add("s", "", Limits{CPUs: 1}, s)
		}
		if len(all) == 0 {
			return
		}
		for _, step := range []time.Duration{0, 10 * time.Second, time.Minute} {
			got, ok := h.Query("s", Query{Step: step})
			if !ok {
				t.Fatal("no series")
			}
			check(t, step, got.Points, all)
		}
	})
}

// check compares points with the samples they were made of.
func check(t *testing.T, step time.Duration, pts []Point, all []Sample) {
	t.Helper()
	last := all[len(all)-1].Time
	coarse := smallTiers[len(smallTiers)-1]
	// The coarsest ring holds the buckets from the newest one's back.
	held := time.Unix(0, (floorDiv(last.UnixNano(), int64(coarse.Resolution))-int64(coarse.Span/coarse.Resolution)+1)*int64(coarse.Resolution))
	seen := make([]int, len(all))
	for i, p := range pts {
		end := p.Time.Add(p.Resolution)
		if i > 0 && p.Time.Before(pts[i-1].Time.Add(pts[i-1].Resolution)) {
			t.Fatalf("step %s: point %d at %s overlaps the one before (%s + %s)", step, i, p.Time, pts[i-1].Time, pts[i-1].Resolution)
		}
		var want Point
		var cpus []float64
		var rx, tx float64
		// A merged step may start before the oldest sample held: it
		// merges what is held.
		from := sort.Search(len(all), func(j int) bool { return !all[j].Time.Before(maxTime(p.Time, held)) })
		to := sort.Search(len(all), func(j int) bool { return !all[j].Time.Before(end) })
		for j := from; j < to; j++ {
			s := all[j]
			seen[j]++
			want.Samples++
			cpus = append(cpus, math.Round(s.CPUPct*100)/100)
			want.MemUsed = max(want.MemUsed, s.MemUsed>>10<<10)
			want.MemCache = max(want.MemCache, s.MemCache>>10<<10)
			want.DiskUsed = max(want.DiskUsed, s.DiskUsed>>10<<10)
			rx += float64(s.NetRx)
			tx += float64(s.NetTx)
		}
		var mean float64
		for _, c := range cpus {
			mean += c / float64(len(cpus))
		}
		if p.Samples != want.Samples || p.MemUsed != want.MemUsed || p.MemCache != want.MemCache || p.DiskUsed != want.DiskUsed {
			t.Fatalf("step %s: point %d %+v, want %d samples, memory %d, cache %d, disk %d", step, i, p, want.Samples, want.MemUsed, want.MemCache, want.DiskUsed)
		}
		// Float32 sums of bytes lose a little; CPU shares are exact.
		if math.Abs(p.CPUPct-mean) > 1e-6 {
			t.Fatalf("step %s: point %d cpu %v, want the mean %v of %v", step, i, p.CPUPct, mean, cpus)
		}
		if math.Abs(float64(p.NetRx)-rx) > 1+rx*1e-5 || math.Abs(float64(p.NetTx)-tx) > 1+tx*1e-5 {
			t.Fatalf("step %s: point %d bytes %d/%d, want %v/%v", step, i, p.NetRx, p.NetTx, rx, tx)
		}
		if step > 0 && p.Resolution < step && !p.Time.Add(p.Resolution).Equal(end) {
			t.Fatalf("step %s: point %d of %s", step, i, p.Resolution)
		}
	}
	for j, s := range all {
		want := 0
		if !s.Time.Before(held) {
			want = 1
		}
		if seen[j] != want {
			t.Fatalf("step %s: sample %d at %s is in %d points, want %d (the coarsest tier holds from %s)", step, j, s.Time, seen[j], want, held)
		}
	}
}

// stream is n samples' worth of fuzz input, a pause every every.
func stream(n, seed, every int) []byte {
	b := make([]byte, 0, 8*n)
	x := uint32(seed)
	for i := range n {
		var c [8]byte
		x = x*1664525 + 1013904223
		binary.LittleEndian.PutUint32(c[0:4], x)
		binary.LittleEndian.PutUint32(c[4:8], x*31)
		c[0] = byte(1 + i%3)
		if i%every == 0 {
			c[0] = 251
		}
		b = append(b, c[:]...)
	}
	return b
}
