package metrichistory

import (
	"math"
	"time"
)

// slot is one bucket of a tier: the samples taken in it, merged. Its
// size is what the history's memory is made of (28 bytes).
type slot struct {
	// memUsed, memCache and diskUsed are KiB, the largest sample's.
	memUsed, memCache, diskUsed uint32
	// rx and tx are the bytes received and sent during the samples'
	// intervals, summed.
	rx, tx float32
	// cpu is the sum of the samples' CPU shares, each in hundredths of a
	// percent of the sandbox's CPUs (a sum, not a mean, so that merging
	// one sample at a time does not round the mean away).
	cpu uint32
	// n counts the samples merged; 0 marks an empty bucket (a gap: the
	// sandbox was paused, or not sampled).
	n uint16
}

// maxCPU is the largest CPU share a sample holds, in hundredths of a
// percent (655.35 %): a sandbox's CPU bandwidth may overrun its quota a
// little within a period, never by that much. A slot's sum of at most
// 65535 of them fits its uint32.
const maxCPU = math.MaxUint16

// slotOf is sample s as a bucket of its own.
func slotOf(s Sample) slot {
	return slot{
		memUsed: kib(s.MemUsed), memCache: kib(s.MemCache), diskUsed: kib(s.DiskUsed),
		rx: float32(s.NetRx), tx: float32(s.NetTx),
		cpu: uint32(min(math.Round(max(s.CPUPct, 0)*100), maxCPU)),
		n:   1,
	}
}

// kib is bytes in KiB, rounded down, at most 4 TiB.
func kib(b uint64) uint32 { return uint32(min(b>>10, math.MaxUint32)) }

// merge returns a and b as one bucket. Past 65535 samples the count
// stays there and the CPU sum is scaled to keep the mean.
func merge(a, b slot) slot {
	switch {
	case a.n == 0:
		return b
	case b.n == 0:
		return a
	}
	n, cpu := uint64(a.n)+uint64(b.n), uint64(a.cpu)+uint64(b.cpu)
	if n > math.MaxUint16 {
		cpu, n = (cpu*math.MaxUint16+n/2)/n, math.MaxUint16
	}
	return slot{
		memUsed: max(a.memUsed, b.memUsed), memCache: max(a.memCache, b.memCache), diskUsed: max(a.diskUsed, b.diskUsed),
		rx: a.rx + b.rx, tx: a.tx + b.tx,
		cpu: uint32(cpu), n: uint16(n),
	}
}

// meanCPU is the slot's mean CPU share in percent.
func (s slot) meanCPU() float64 {
	if s.n == 0 {
		return 0
	}
	return float64(s.cpu) / float64(s.n) / 100
}

// ring is one tier of a series: consecutive buckets of res, the oldest
// first, at most size of them. Its slots grow as the series lives, up
// to size, then wrap.
type ring struct {
	res   int64 // bucket width, ns
	size  int   // buckets kept
	first int64 // the bucket number (unix ns / res) of the oldest slot
	off   int   // where the oldest slot is in slots, once they wrap
	slots []slot
	// dropped says buckets older than first were let go: the tier no
	// longer covers the series' start.
	dropped bool
}

func newRing(t Tier) ring {
	return ring{res: int64(t.Resolution), size: int(t.Span / t.Resolution)}
}

// bucket is the number of the bucket of r that time t falls in.
func (r *ring) bucket(t time.Time) int64 { return floorDiv(t.UnixNano(), r.res) }

// at is the slot of bucket number b, which must be held.
func (r *ring) at(b int64) *slot {
	i := int(b - r.first)
	if len(r.slots) == r.size {
		i = (r.off + i) % r.size
	}
	return &r.slots[i]
}

// last is the number of the newest bucket held; first-1 when none is.
func (r *ring) last() int64 { return r.first + int64(len(r.slots)) - 1 }

// add merges s into its bucket b. A bucket older than the oldest held is
// dropped; one past the newest advances the ring, leaving empty buckets
// for the time between.
func (r *ring) add(b int64, s slot) {
	switch {
	case len(r.slots) == 0:
		r.first = b
	case b < r.first:
		return
	case b-r.last() >= int64(r.size):
		// Nothing held is recent enough to keep.
		r.slots, r.off, r.first, r.dropped = r.slots[:0], 0, b, true
	}
	for r.last() < b {
		r.push(slot{})
	}
	p := r.at(b)
	*p = merge(*p, s)
}

// push appends an empty bucket, dropping the oldest when the ring is
// full.
func (r *ring) push(s slot) {
	if len(r.slots) < r.size {
		if len(r.slots) == cap(r.slots) {
			grown := make([]slot, len(r.slots), min(r.size, max(16, 2*cap(r.slots))))
			copy(grown, r.slots)
			r.slots = grown
		}
		r.slots = append(r.slots, s)
		return
	}
	r.slots[r.off] = s
	r.off = (r.off + 1) % r.size
	r.first++
	r.dropped = true
}

// floorDiv is a / b rounded towards minus infinity (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}
