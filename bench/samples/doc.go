// Package samples is the contract between roost's benchmarks and the
// `make bench` harness (bench/run) for raw measurements: when the
// environment variable ROOST_BENCH_OUT names a directory, a benchmark
// writes each latency distribution it measured there as one JSON file,
// {"name": ..., "unit": "ms", "samples": [...]}, which the harness turns
// into charts. Summary numbers travel separately, as b.ReportMetric values
// in the `go test -bench` output.
//
// It imports only the standard library, so that any package's tests, envd's
// included, may use it without pulling the host side in.
package samples
