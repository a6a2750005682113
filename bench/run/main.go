// Command run is `make bench`: it runs roost's benchmarks against a real
// local stack (namespace sandboxes, a host agent, the control plane and its
// proxy, `roost up` for the E2B SDK), each next to a baseline measured in
// the same run on the same machine, and writes bench/results.md and latency
// charts under bench/charts/.
//
// Benchmarks report summary numbers with b.ReportMetric, parsed here from
// the `go test -bench` result lines, and write raw latency samples to
// $ROOST_BENCH_OUT (see package roost.dev/roost/bench/samples) for the
// charts. It needs root, bin/roost and bin/envd (make build).
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"time"
)

func main() {
	var cfg config
	flag.BoolVar(&cfg.Quick, "quick", false, "a smoke run for CI (under 3 minutes): fewer samples, shorter loads")
	flag.StringVar(&cfg.Out, "out", "bench", "directory for results.md and charts/")
	flag.StringVar(&cfg.Roost, "roost", "bin/roost", "roost binary, for `roost up`")
	flag.StringVar(&cfg.Envd, "envd", "bin/envd", "envd binary")
	flag.BoolVar(&cfg.QEMU, "qemu", false, "also measure the qemu runtime (VM boots under KVM or TCG; needs qemu and a kernel)")
	flag.IntVar(&cfg.Density, "density", 0, "idle sandboxes the density run starts (default 1000, quick 20)")
	flag.StringVar(&cfg.E2BModules, "e2b-modules", "test/e2b", "directory whose node_modules holds the E2B JS SDK")
	flag.StringVar(&cfg.InterpreterModules, "interpreter-modules", "test/codeinterpreter", "directory whose node_modules holds @e2b/code-interpreter")
	flag.Parse()
	start := time.Now()
	res, err := run(cfg)
	if err != nil {
		log.Fatal(err)
	}
	if err := writeReport(cfg.Out, res); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("bench: wrote %s/results.md in %s\n", cfg.Out, time.Since(start).Round(time.Second))
	if len(res.Failures) > 0 {
		for _, f := range res.Failures {
			fmt.Fprintln(os.Stderr, "bench: failed:", f)
		}
		os.Exit(1)
	}
}
