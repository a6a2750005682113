package samples

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Env names the directory samples are written to; unset, nothing is.
const Env = "ROOST_BENCH_OUT"

// Set is one named distribution.
type Set struct {
	Name    string    `json:"name"`
	Unit    string    `json:"unit"`
	Samples []float64 `json:"samples"`
}

// Durations writes ds, in milliseconds, as the set name, if ROOST_BENCH_OUT
// is set. Benchmarks run their function more than once (b.N = 1 first), so
// a later call for the same name replaces the earlier file: the last,
// largest run wins.
func Durations(name string, ds []time.Duration) error {
	ms := make([]float64, len(ds))
	for i, d := range ds {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	return Write(Set{Name: name, Unit: "ms", Samples: ms})
}

// Write stores s as <ROOST_BENCH_OUT>/<name>.json, if ROOST_BENCH_OUT is set.
func Write(s Set) error {
	dir := os.Getenv(Env)
	if dir == "" || len(s.Samples) == 0 {
		return nil
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, s.Name+".json"), b, 0o644); err != nil {
		return fmt.Errorf("write samples %s: %w", s.Name, err)
	}
	return nil
}

// Read loads every set in dir, keyed by name.
func Read(dir string) (map[string]Set, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	out := make(map[string]Set, len(files))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var s Set
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("read samples %s: %w", f, err)
		}
		out[s.Name] = s
	}
	return out, nil
}

// Percentile returns the p-th percentile (0–100) of xs by nearest rank,
// or 0 for none. xs is not modified.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(p / 100 * float64(len(s)))
	return s[min(len(s)-1, max(0, i))]
}
