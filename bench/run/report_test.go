package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/bench/samples"
)

// recorded is a run's results from the recorded benchmark output in
// testdata, with a samples set for every chart.
func recorded(t *testing.T) *results {
	t.Helper()
	f, err := os.Open("testdata/bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res := newResults()
	res.Date, res.Machine, res.Go = time.Date(2026, 11, 28, 18, 0, 0, 0, time.UTC), "2 cores", "go1.26"
	res.parseBench(f)
	res.set("Local", "fork-exec-p50-ms", 0.8)
	res.set("Local", "fork-exec-p99-ms", 1.5)
	res.set("E2B", "p50-ms", 7.5)
	res.set("E2B", "p99-ms", 15)
	res.set("E2B", "lifecycle-legacy-p50-ms", 61)
	res.set("E2B", "lifecycle-v2-p50-ms", 60)
	res.set("Interpreter", "build-s", 69)
	res.set("Interpreter", "interpreter-run-proxy-p50-ms", 3.1)
	res.set("Interpreter", "interpreter-run-inside-p50-ms", 1.2)
	res.set("Interpreter", "interpreter-create-run-p50-ms", 280)
	res.set("Interpreter", "interpreter-create-run-cold-p50-ms", 530)
	res.set("Dashboard", "js-gzip-KiB", 137)
	for _, c := range charts {
		for i, name := range c.sets {
			s := samples.Set{Name: name, Unit: "ms"}
			for j := range 3000 {
				s.Samples = append(s.Samples, float64(i+1)*(0.5+float64(j%97)/10))
			}
			res.Samples[name] = s
		}
	}
	return res
}

// TestReportRows checks that a complete run writes every row of the table,
// each measured, and every chart. It asserts no time: the numbers are
// recorded.
func TestReportRows(t *testing.T) {
	res := recorded(t)
	dir := t.TempDir()
	if err := writeReport(dir, res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "results.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, r := range rows {
		line := tableLine(md, r.metric)
		if line == "" {
			t.Errorf("no row %q", r.metric)
			continue
		}
		if strings.Contains(line, "not measured") {
			t.Errorf("row %q not measured: %s", r.metric, line)
		}
	}
	for _, c := range charts {
		if fi, err := os.Stat(filepath.Join(dir, "charts", c.file)); err != nil || fi.Size() == 0 {
			t.Errorf("chart %s: %v", c.file, err)
		}
		if !strings.Contains(md, "(charts/"+c.file+")") {
			t.Errorf("results.md does not link %s", c.file)
		}
	}
	// The recorded envd p50 of 1.41 ms meets ≤ 2 ms; the proxy's 0.17× of
	// direct misses ≥ 0.7×.
	if l := tableLine(md, "envd Start /bin/true → end, p50"); !strings.HasSuffix(l, "| yes |") {
		t.Errorf("envd start row: %s", l)
	}
	if l := tableLine(md, "proxy requests/s, envd"); !strings.Contains(l, "missed") {
		t.Errorf("proxy row: %s", l)
	}
}

// TestReportMissing checks that a benchmark that did not run (PTY echo,
// written elsewhere) leaves its rows in the table as "not measured".
func TestReportMissing(t *testing.T) {
	res := recorded(t)
	delete(res.Metrics, "BenchmarkPTYEcho")
	delete(res.Samples, "pty-echo-idle")
	delete(res.Samples, "pty-echo-load")
	res.Failures = []string{"PTY echo: exit status 1\nmore"}
	md := markdown(res, nil)
	for _, r := range rows {
		line := tableLine(md, r.metric)
		if line == "" {
			t.Errorf("no row %q", r.metric)
		}
		if r.asked != "" {
			continue
		}
		if want := r.value.bench == "BenchmarkPTYEcho"; strings.Contains(line, "not measured") != want {
			t.Errorf("row %q: not measured = %v, want %v", r.metric, !want, want)
		}
	}
	// Rows run only when asked say how to ask.
	delete(res.Metrics, "BenchmarkCreate")
	if l := tableLine(markdown(res, nil), "qemu (TCG here) create"); !strings.Contains(l, "not run (make bench QEMU=1)") {
		t.Errorf("qemu row without a qemu run: %s", l)
	}
	if !strings.Contains(md, "- failed: PTY echo: exit status 1\n") {
		t.Error("the failure is not in the report")
	}
}

// tableLine returns the table line of the row for metric, or "".
func tableLine(md, metric string) string {
	for line := range strings.SplitSeq(md, "\n") {
		if strings.HasPrefix(line, "| "+metric) {
			return line
		}
	}
	return ""
}

// TestDiffTarget: a target on roost − baseline is met or missed by that
// difference, not by the ratio or roost's value, and the difference shows.
func TestDiffTarget(t *testing.T) {
	r := rowSpec{metric: "hop", value: ref{"B", "cpu"}, unit: "µs", base: ref{"B", "base-cpu"}, baseNote: "direct",
		target: atMostAbove(40, "≤ 40 µs above direct")}
	for _, tc := range []struct {
		v, base    float64
		ratio, met string
	}{
		{91, 25, "3.64×, +66.0 µs", "**no: missed**"},
		{60, 25, "2.40×, +35.0 µs", "yes"},
		{65, 25, "2.60×, +40.0 µs", "yes"},
		{20, 25, "0.80×, −5.00 µs", "yes"},
		{40, 0, "+40.0 µs", "yes"},
	} {
		res := newResults()
		res.set("B", "cpu", tc.v)
		res.set("B", "base-cpu", tc.base)
		c := cells(res, r)
		if c[3] != tc.ratio || c[5] != tc.met {
			t.Errorf("%v above %v: ratio %q, met %q; want %q, %q", tc.v, tc.base, c[3], c[5], tc.ratio, tc.met)
		}
	}
	res := newResults()
	res.set("B", "cpu", 50)
	if c := cells(res, r); c[2] != "not measured" || c[5] != "no baseline" {
		t.Errorf("without a baseline: %q", c)
	}
}
