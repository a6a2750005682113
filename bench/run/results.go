package main

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/bench/samples"
)

// results is everything one run measured.
type results struct {
	Date    time.Time
	Machine string // cores, memory, kernel, CPU
	Go      string // go version
	Quick   bool
	Elapsed time.Duration
	// Metrics holds, per benchmark name without its -GOMAXPROCS suffix
	// (BenchmarkCreateReady), its reported values by unit (p50-ms).
	Metrics map[string]map[string]float64
	Samples map[string]samples.Set
	// Failures says which steps failed, and why, in order.
	Failures []string
	// Notes are facts of this run worth a line in the report.
	Notes []string
}

func newResults() *results {
	return &results{Metrics: map[string]map[string]float64{}, Samples: map[string]samples.Set{}}
}

// metric returns a reported value and whether it was reported.
func (r *results) metric(bench, unit string) (float64, bool) {
	v, ok := r.Metrics[bench][unit]
	return v, ok
}

func (r *results) set(bench, unit string, v float64) {
	if r.Metrics[bench] == nil {
		r.Metrics[bench] = map[string]float64{}
	}
	r.Metrics[bench][unit] = v
}

// parseBench adds the result lines of `go test -bench` output to r:
//
//	BenchmarkCreateReady-2   200   41234567 ns/op   38.10 p50-ms   61.2 p99-ms
func (r *results) parseBench(out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue // a log line that happens to start with the word
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			r.set(name, f[i+1], v)
		}
	}
}
