package store

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
)

// QuotaLimit names one per-team limit. The names are stable: they are
// rows in the database, keys of the server's --team-quota flag and of
// the API's quota object.
type QuotaLimit string

// The limits. Which sandboxes count toward each is part of its meaning:
// a paused sandbox uses no CPU and leaves the concurrency to others (as
// E2B counts only running sandboxes as concurrent), but it keeps its disk
// and counts toward the paused limits instead.
const (
	// LimitSandboxes: concurrent sandboxes, starting or running.
	LimitSandboxes QuotaLimit = "sandboxes"
	// LimitVCPUs: total vCPUs of the starting and running sandboxes.
	LimitVCPUs QuotaLimit = "vcpus"
	// LimitMemoryMB: total memory (MiB) of the starting and running
	// sandboxes.
	LimitMemoryMB QuotaLimit = "memory-mb"
	// LimitDiskMB: total disk (MiB) of the starting, running and paused
	// sandboxes.
	LimitDiskMB QuotaLimit = "disk-mb"
	// LimitTimeout: the longest timeout (seconds) a create, resume,
	// connect or timeout change may ask for.
	LimitTimeout QuotaLimit = "timeout"
	// LimitPaused: how many paused sandboxes the team keeps. An explicit
	// pause beyond it is refused; a pause on timeout is kept and the
	// sandboxes paused longest ago are deleted down to the limit.
	LimitPaused QuotaLimit = "paused"
	// LimitPausedRetention: how long (seconds) a paused sandbox is kept;
	// after that it is deleted.
	LimitPausedRetention QuotaLimit = "paused-retention"
)

// Limits lists every limit, in the order they are shown.
var Limits = []QuotaLimit{LimitSandboxes, LimitVCPUs, LimitMemoryMB, LimitDiskMB, LimitTimeout,
	LimitPaused, LimitPausedRetention}

// describe says what a limit bounds, for messages.
var describe = map[QuotaLimit]string{
	LimitSandboxes:       "concurrent sandboxes (starting or running)",
	LimitVCPUs:           "total vCPUs of starting and running sandboxes",
	LimitMemoryMB:        "total memory in MiB of starting and running sandboxes",
	LimitDiskMB:          "total disk in MiB of starting, running and paused sandboxes",
	LimitTimeout:         "longest timeout in seconds",
	LimitPaused:          "paused sandboxes kept",
	LimitPausedRetention: "seconds a paused sandbox is kept",
}

// isDuration marks the limits counted in seconds: --team-quota also takes
// them as Go durations ("24h").
func (l QuotaLimit) isDuration() bool { return l == LimitTimeout || l == LimitPausedRetention }

// Valid says whether l is a known limit.
func (l QuotaLimit) Valid() bool { _, ok := describe[l]; return ok }

// Quota maps limits to their values. In a team's record (TeamQuota) it
// holds only the limits set for that team; an effective quota
// (MergeQuota) holds the server's defaults under them. A limit missing
// from an effective quota is not enforced. Values are never negative; 0
// allows nothing (a team with sandboxes=0 cannot start one).
type Quota map[QuotaLimit]int64

// MergeQuota returns defaults with overrides on top.
func MergeQuota(defaults, overrides Quota) Quota {
	out := maps.Clone(defaults)
	if out == nil {
		out = Quota{}
	}
	maps.Copy(out, overrides)
	return out
}

// Validate refuses unknown limits and negative values (errdefs.ErrInvalid).
func (q Quota) Validate() error {
	for _, l := range slices.Sorted(maps.Keys(q)) {
		if !l.Valid() {
			return fmt.Errorf("quota: unknown limit %q (known: %s): %w", l, limitNames(), errdefs.ErrInvalid)
		}
		if q[l] < 0 {
			return fmt.Errorf("quota: %s=%d: must not be negative: %w", l, q[l], errdefs.ErrInvalid)
		}
	}
	return nil
}

// Timeout is the longest timeout q allows; ok is false when it sets none.
func (q Quota) Timeout() (d time.Duration, ok bool) {
	v, ok := q[LimitTimeout]
	return time.Duration(v) * time.Second, ok
}

// CheckTimeout refuses a timeout longer than q allows, with a
// *QuotaError.
func (q Quota) CheckTimeout(d time.Duration) error {
	if max, ok := q.Timeout(); ok && d > max {
		return &QuotaError{Limit: LimitTimeout, Max: q[LimitTimeout], Asked: int64((d + time.Second - 1) / time.Second)}
	}
	return nil
}

// String renders q as ParseQuota reads it, limits in Limits order.
func (q Quota) String() string {
	var parts []string
	for _, l := range Limits {
		if v, ok := q[l]; ok {
			parts = append(parts, string(l)+"="+strconv.FormatInt(v, 10))
		}
	}
	return strings.Join(parts, ",")
}

// ParseQuota reads "limit=value,limit=value". Values are integers; the
// limits in seconds (timeout, paused-retention) also take Go durations
// ("24h", "30m"). Errors wrap errdefs.ErrInvalid and name the bad part.
func ParseQuota(s string) (Quota, error) {
	q := Quota{}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		l := QuotaLimit(strings.TrimSpace(name))
		if !ok {
			return nil, fmt.Errorf("quota %q: want limit=value: %w", part, errdefs.ErrInvalid)
		}
		v, err := parseLimitValue(l, strings.TrimSpace(val))
		if err != nil {
			return nil, err
		}
		q[l] = v
	}
	return q, q.Validate()
}

func parseLimitValue(l QuotaLimit, val string) (int64, error) {
	if v, err := strconv.ParseInt(val, 10, 64); err == nil {
		return v, nil
	}
	if l.isDuration() {
		if d, err := time.ParseDuration(val); err == nil && d%time.Second == 0 {
			return int64(d / time.Second), nil
		}
	}
	want := "an integer"
	if l.isDuration() {
		want = "seconds or a duration of whole seconds (24h)"
	}
	return 0, fmt.Errorf("quota %s=%q: want %s: %w", l, val, want, errdefs.ErrInvalid)
}

func limitNames() string {
	names := make([]string, len(Limits))
	for i, l := range Limits {
		names[i] = string(l)
	}
	return strings.Join(names, ", ")
}

// Usage is what a team's sandboxes hold, counted as the limits count.
type Usage struct {
	Sandboxes int64 // starting or running
	Paused    int64
	VCPUs     int64 // of starting and running sandboxes
	MemoryMB  int64 // of starting and running sandboxes
	DiskMB    int64 // of starting, running and paused sandboxes
}

// usageOf is what one sandbox holds.
func usageOf(sb Sandbox) Usage {
	switch sb.State {
	case SandboxStarting, SandboxRunning:
		return Usage{Sandboxes: 1, VCPUs: int64(sb.VCPUs), MemoryMB: sb.MemoryMB, DiskMB: sb.DiskMB}
	case SandboxPaused:
		return Usage{Paused: 1, DiskMB: sb.DiskMB}
	}
	return Usage{}
}

// Of returns the usage that l bounds; ok is false for limits that are
// not sums over sandboxes (timeout, retention).
func (u Usage) Of(l QuotaLimit) (v int64, ok bool) {
	switch l {
	case LimitSandboxes:
		return u.Sandboxes, true
	case LimitVCPUs:
		return u.VCPUs, true
	case LimitMemoryMB:
		return u.MemoryMB, true
	case LimitDiskMB:
		return u.DiskMB, true
	case LimitPaused:
		return u.Paused, true
	}
	return 0, false
}

// admit checks that a sandbox going from before to after fits q, the
// team's other sandboxes holding others. Only a limit whose use the
// change raises can refuse it: a team above a lowered limit can still
// stop, pause or relabel what it has.
func admit(q Quota, others, before, after Usage) error {
	for _, l := range Limits {
		max, set := q[l]
		a, sum := after.Of(l)
		if !set || !sum {
			continue
		}
		b, _ := before.Of(l)
		used, _ := others.Of(l)
		if a > b && used+a > max {
			return &QuotaError{Limit: l, Max: max, Used: used, Asked: a}
		}
	}
	return nil
}

// QuotaError is a refusal by a team's quota. It wraps errdefs.ErrExhausted
// (HTTP 429) and its message names the limit, its value and the use.
type QuotaError struct {
	Limit QuotaLimit
	Max   int64 // the limit's value
	Used  int64 // what the team's other sandboxes hold (0 for timeout)
	Asked int64 // what the refused request would add (for timeout: its length)
}

func (e *QuotaError) Error() string {
	if e.Limit == LimitTimeout {
		return fmt.Sprintf("team quota %q exceeded: a timeout of %d s is longer than the team's limit of %d s",
			e.Limit, e.Asked, e.Max)
	}
	return fmt.Sprintf("team quota %q exceeded (%s): the limit is %d, %d in use, %d more asked",
		e.Limit, describe[e.Limit], e.Max, e.Used, e.Asked)
}

func (e *QuotaError) Unwrap() error { return errdefs.ErrExhausted }
