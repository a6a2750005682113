package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ref names one reported number: a benchmark (without its -GOMAXPROCS
// suffix, or a harness name: Local, E2B) and the unit it was reported in.
type ref struct{ bench, unit string }

// target is a goal from the issues. Rel targets apply to the ratio roost /
// baseline, diff targets to the difference roost − baseline (in the row's
// unit), the others to roost's value; AtMost says which way is better.
type target struct {
	text   string
	value  float64
	atMost bool
	rel    bool
	diff   bool
}

// rowSpec is one line of the results table.
type rowSpec struct {
	metric   string
	value    ref
	unit     string // display unit of value and baseline
	base     ref    // zero: no baseline
	baseNote string // what the baseline is
	target   *target
	// asked, when set, says how to ask for a row that runs only on
	// request; unmeasured, it says so rather than "not measured".
	asked string
}

func atMost(v float64, text string) *target  { return &target{text: text, value: v, atMost: true} }
func atLeast(v float64, text string) *target { return &target{text: text, value: v} }

// atMostAbove is a target on roost − baseline: at most v above it.
func atMostAbove(v float64, text string) *target {
	return &target{text: text, value: v, atMost: true, diff: true}
}

// rows is the table, in order. Every target of the earlier issues has a
// row; the test checks each appears in the report.
var rows = []rowSpec{
	{metric: "envd idle RSS", value: ref{"BenchmarkEnvdBinary", "rss-MiB"}, unit: "MiB", target: atMost(15, "≤ 15 MiB")},
	{metric: "envd Start /bin/true → end, p50", value: ref{"BenchmarkEnvdBinary", "start-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkEnvdBinary", "baseline-start-p50-ms"}, baseNote: "local fork+exec", target: atMost(2, "≤ 2 ms")},
	{metric: "envd Start /bin/true → end, p99", value: ref{"BenchmarkEnvdBinary", "start-p99-ms"}, unit: "ms",
		base: ref{"BenchmarkEnvdBinary", "baseline-start-p99-ms"}, baseNote: "local fork+exec"},
	{metric: "envd /files upload (to tmpfs)", value: ref{"BenchmarkEnvdBinary", "upload-MB/s"}, unit: "MB/s",
		base: ref{"BenchmarkEnvdBinary", "copy-MB/s"}, baseNote: "local file copy", target: atLeast(500, "≥ 500 MB/s")},
	{metric: "envd /files download (from tmpfs)", value: ref{"BenchmarkEnvdBinary", "download-MB/s"}, unit: "MB/s",
		base: ref{"BenchmarkEnvdBinary", "copy-MB/s"}, baseNote: "local file copy", target: atLeast(500, "≥ 500 MB/s")},
	{metric: "envd /files upload (to disk)", value: ref{"BenchmarkEnvdBinary", "disk-upload-MB/s"}, unit: "MB/s",
		base: ref{"BenchmarkEnvdBinary", "disk-copy-MB/s"}, baseNote: "local file copy"},
	{metric: "envd /files download (from disk)", value: ref{"BenchmarkEnvdBinary", "disk-download-MB/s"}, unit: "MB/s",
		base: ref{"BenchmarkEnvdBinary", "disk-copy-MB/s"}, baseNote: "local file copy"},
	{metric: "namespace create → envd healthy, p50", value: ref{"BenchmarkCreateReady", "p50-ms"}, unit: "ms",
		base: ref{"BenchmarkBareUnshare", "p50-ms"}, baseNote: "bare unshare", target: atMost(50, "≤ 50 ms")},
	{metric: "namespace create → envd healthy, p99", value: ref{"BenchmarkCreateReady", "p99-ms"}, unit: "ms",
		base: ref{"BenchmarkBareUnshare", "p99-ms"}, baseNote: "bare unshare", target: atMost(150, "≤ 150 ms")},
	{metric: "namespace create → envd healthy with the syscall filter and capability bound, p50", value: ref{"BenchmarkConfinementCreate", "create-confined-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkConfinementCreate", "create-unconfined-p50-ms"}, baseNote: "unconfined, alternating", target: &target{text: "≤ 1.1× unconfined", value: 1.1, atMost: true, rel: true}},
	{metric: "`find / -xdev` in a sandbox under the filter, p50", value: ref{"BenchmarkConfinementSyscalls", "find-confined-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkConfinementSyscalls", "find-unconfined-p50-ms"}, baseNote: "unconfined, alternating", target: &target{text: "≤ 1.05× unconfined", value: 1.05, atMost: true, rel: true}},
	{metric: "build-like loop (40× sed, cat, stat, rm) in a sandbox under the filter, p50", value: ref{"BenchmarkConfinementSyscalls", "build-confined-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkConfinementSyscalls", "build-unconfined-p50-ms"}, baseNote: "unconfined, alternating", target: &target{text: "≤ 1.05× unconfined", value: 1.05, atMost: true, rel: true}},
	{metric: "agent create (slot, network, runtime, envd, /init), p50", value: ref{"BenchmarkAgentCreate", "create-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkBareUnshare", "p50-ms"}, baseNote: "bare unshare"},
	{metric: "unpack of a ~300 MB image (OCI layout, 3 gzip layers) into a template, synced", value: ref{"BenchmarkUnpackImage", "unpack-MB/s"}, unit: "MB/s",
		base: ref{"BenchmarkUnpackImage", "tar-MB/s"}, baseNote: "tar -xzf of the same layers, alternating", target: &target{text: "≥ 0.5× tar -x", value: 0.5, rel: true}},
	{metric: "cached rebuild of a 10-step Dockerfile (agent build path), p50", value: ref{"BenchmarkTemplateRebuild", "rebuild-ms"}, unit: "ms",
		base: ref{"BenchmarkTemplateRebuild", "first-build-ms"}, baseNote: "first build", target: atMost(2000, "≤ 2 s")},
	{metric: "first create of a template pulled over loopback (~300 MB, fresh host), p50", value: ref{"BenchmarkTemplatePullCreate", "pull-create-s"}, unit: "s",
		target: atMost(10, "≤ 10 s")},
	{metric: "later create of the pulled template, p50", value: ref{"BenchmarkTemplatePullCreate", "warm-create-ms"}, unit: "ms",
		base: ref{"BenchmarkTemplatePullCreate", "plain-create-ms"}, baseNote: "the host's base, alternating", target: &target{text: "≤ 1.2× base (same within noise)", value: 1.2, atMost: true, rel: true}},
	{metric: "create of a template with a start command and ready check (python3 http.server, curl), p50", value: ref{"BenchmarkStartCmdCreate", "start-create-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkStartCmdCreate", "plain-plus-ready-p50-ms"}, baseNote: "plain create, then the server started and its ready command run through envd until it passes, alternating"},
	{metric: "start command's cost over the server's ready time (difference of those p50s)", value: ref{"BenchmarkStartCmdCreate", "start-overhead-ms"}, unit: "ms",
		target: atMost(30, "≤ 30 ms")},
	{metric: "namespace hibernate (CRIU dump) of an idle base sandbox, p50", value: ref{"BenchmarkHibernate", "hibernate-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkHibernate", "freeze-p50-ms"}, baseNote: "freezer pause (memory kept), alternating", target: atMost(500, "≤ 500 ms")},
	{metric: "namespace restore (CRIU) → envd healthy, p50", value: ref{"BenchmarkHibernate", "restore-ready-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkCreateReady", "p50-ms"}, baseNote: "a fresh create → envd healthy", target: atMost(500, "≤ 500 ms")},
	{metric: "host memory of a hibernated sandbox (its cgroup)", value: ref{"BenchmarkHibernate", "hibernated-MiB"}, unit: "MiB",
		base: ref{"BenchmarkHibernate", "running-MiB"}, baseNote: "the same sandbox running", target: &target{text: "≤ 0.1× running", value: 0.1, atMost: true, rel: true}},
	{metric: "idle sandboxes hibernated one after another (E2B's pause), total", value: ref{"BenchmarkHibernateMany", "hibernate-all-s"}, unit: "s",
		base: ref{"BenchmarkHibernateMany", "freeze-all-s"}, baseNote: "the same sandboxes frozen", target: &target{text: "report"}},
	{metric: "the same sandboxes restored (connect), total", value: ref{"BenchmarkHibernateMany", "restore-all-s"}, unit: "s",
		base: ref{"BenchmarkHibernateMany", "thaw-all-s"}, baseNote: "the same sandboxes thawed", target: &target{text: "report"}},
	{metric: "of those sandboxes, intact after restore (a file and a process)", value: ref{"BenchmarkHibernateMany", "intact"}, unit: "",
		base: ref{"BenchmarkHibernateMany", "sandboxes"}, baseNote: "sandboxes", target: &target{text: "all", value: 1, rel: true}},
	{metric: "fork ×10 of a namespace sandbox with 200 MB of files (E2B's fork, count 10) → all ready", value: ref{"BenchmarkForkNamespace", "fork-10-s"}, unit: "s",
		base: ref{"BenchmarkForkNamespace", "copy-10-s"}, baseNote: "its disk copied 10 times (cp)", target: atMost(2, "≤ 2 s")},
	{metric: "disk of each fork's own before it writes", value: ref{"BenchmarkForkNamespace", "own-disk-MiB-per-fork"}, unit: "MiB",
		base: ref{"BenchmarkForkNamespace", "source-disk-MiB"}, baseNote: "the source's disk (a copy's)", target: atMost(10, "≤ 10 MB")},
	{metric: "the capture's one copy of the source's disk, shared by all forks (a clone where the filesystem has them)", value: ref{"BenchmarkForkNamespace", "shared-capture-MiB"}, unit: "MiB",
		base: ref{"BenchmarkForkNamespace", "source-disk-MiB"}, baseNote: "the source's disk", target: &target{text: "report"}},
	{metric: "metrics history of 1000 sandboxes × 24 h (5 s for 1 h, 1 min for 6 h, 5 min for 24 h), agent heap", value: ref{"BenchmarkHistory24h", "history-MiB"}, unit: "MiB",
		base: ref{"BenchmarkHistory24h", "raw-MiB"}, baseNote: "the same 5 s samples kept as they come (1 h measured, ×24)", target: atMost(64, "≤ 64 MiB")},
	{metric: "metrics sampling of 1000 sandboxes every 5 s (CPU per sample over idle namespace sandboxes, ×1000 / 5 s)", value: ref{"BenchmarkMetricsSampling", "core-pct-1000"}, unit: "% of a core",
		base: ref{"BenchmarkMetricsSampling", "envd-core-pct-1000"}, baseNote: "envd's GET /metrics over HTTP, client and envd", target: atMost(1, "≤ 1 % of a core")},
	{metric: "POST /v2/sandboxes → 201 ready, p50", value: ref{"BenchmarkCreateREST", "p50-ms"}, unit: "ms",
		base: ref{"BenchmarkBareUnshare", "p50-ms"}, baseNote: "bare unshare", target: atMost(80, "≤ 80 ms")},
	{metric: "POST /v2/sandboxes → 201 ready, p99", value: ref{"BenchmarkCreateREST", "p99-ms"}, unit: "ms",
		base: ref{"BenchmarkBareUnshare", "p99-ms"}, baseNote: "bare unshare"},
	{metric: "warm-pool create: POST /v2/sandboxes → 201 ready, claimed from the pool, p50", value: ref{"BenchmarkCreateWarm", "p50-ms"}, unit: "ms",
		base: ref{"BenchmarkCreateREST", "p50-ms"}, baseNote: "a cold create (REST create above)", target: atMost(3, "≤ 3 ms")},
	{metric: "warm-pool create, p99", value: ref{"BenchmarkCreateWarm", "p99-ms"}, unit: "ms",
		base: ref{"BenchmarkCreateREST", "p99-ms"}, baseNote: "a cold create", target: atMost(10, "≤ 10 ms")},
	{metric: "a burst of creates from 16 clients, pool of 32: all ready (1,000 creates; 100 quick)", value: ref{"BenchmarkCreateBurst", "all-ready-s"}, unit: "s",
		target: atMost(10, "≤ 10 s")},
	{metric: "the burst's creates served by the pool", value: ref{"BenchmarkCreateBurst", "pool-hits"}, unit: "",
		target: &target{text: "report"}},
	{metric: "memory of an idle warm sandbox (its cgroup's working set)", value: ref{"BenchmarkCreateWarm", "warm-idle-MiB"}, unit: "MiB",
		target: &target{text: "report"}},
	{metric: "control plane on PostgreSQL, 100 simulated hosts × 1,000 sandboxes (10 × 100 quick), 50 creates/s: the control plane's CPU (its process's, as getrusage counts it)", value: ref{"BenchmarkControlPlaneScale", "cp-cpu-%-of-one-core"}, unit: "% of a core",
		base: ref{"BenchmarkControlPlaneScale", "fakes-cpu-%-of-one-core"}, baseNote: "the fake agents' and load's process beside it", target: atMost(25, "≤ 25 % of a core")},
	{metric: "the same: store statements per second", value: ref{"BenchmarkControlPlaneScale", "statements/s"}, unit: "/s",
		target: &target{text: "report"}},
	{metric: "the same: PostgreSQL's sequential scans of the sandboxes table in the measured minute", value: ref{"BenchmarkControlPlaneScale", "sandbox-seq-scans"}, unit: "",
		target: atMost(0, "0: every hot query uses an index")},
	{metric: "the same: create p50 / p99", value: ref{"BenchmarkControlPlaneScale", "create-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkControlPlaneScale", "create-p99-ms"}, baseNote: "p99", target: &target{text: "report"}},
	{metric: "POST /v2/sandboxes → 201 ready with the audit log, lifecycle events and a webhook, p50", value: ref{"BenchmarkCreateRESTLogged", "logged-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkCreateRESTLogged", "unlogged-p50-ms"}, baseNote: "the same server with them off, alternating",
		target: &target{text: "≤ 1.05× without", value: 1.05, atMost: true, rel: true}},
	{metric: "concurrent creates (4 clients, create + delete via REST)", value: ref{"BenchmarkCreateThroughput", "creates/s"}, unit: "/s",
		base: ref{"BenchmarkCreateThroughput", "baseline-creates/s"}, baseNote: "bare unshare, 4 at once",
		target: &target{text: "≥ 0.25× unshare", value: 0.25, rel: true}},
	{metric: "concurrent creates (16 clients, create + delete via REST)", value: ref{"BenchmarkCreateThroughput", "creates-16/s"}, unit: "/s",
		base: ref{"BenchmarkCreateThroughput", "baseline-creates-16/s"}, baseNote: "bare unshare, 16 at once", target: &target{text: "report"}},
	{metric: "exec `true` via REST, p50", value: ref{"BenchmarkExecTrueREST", "p50-ms"}, unit: "ms",
		base: ref{"Local", "fork-exec-p50-ms"}, baseNote: "local fork+exec", target: atMost(5, "≤ 5 ms")},
	{metric: "exec `true` via REST, p99", value: ref{"BenchmarkExecTrueREST", "p99-ms"}, unit: "ms",
		base: ref{"Local", "fork-exec-p99-ms"}, baseNote: "local fork+exec"},
	{metric: "exec `true` via E2B SDK (commands.run, bash -l), p50", value: ref{"E2B", "p50-ms"}, unit: "ms",
		base: ref{"Local", "fork-exec-p50-ms"}, baseNote: "local fork+exec"},
	{metric: "exec `true` via E2B SDK (commands.run, bash -l), p99", value: ref{"E2B", "p99-ms"}, unit: "ms",
		base: ref{"Local", "fork-exec-p99-ms"}, baseNote: "local fork+exec"},
	{metric: "@e2b/code-interpreter runCode('1+1') through the proxy, p50", value: ref{"Interpreter", "interpreter-run-proxy-p50-ms"}, unit: "ms",
		base: ref{"Interpreter", "interpreter-run-inside-p50-ms"}, baseNote: "the same request sent to the interpreter from inside the sandbox (loopback)", target: atMost(10, "≤ 10 ms")},
	{metric: "create of code-interpreter-v1 → first runCode answers (namespace, from the template's capture: kernel started, CRIU restore), p50", value: ref{"Interpreter", "interpreter-create-run-p50-ms"}, unit: "ms",
		base: ref{"E2B", "lifecycle-v2-p50-ms"}, baseNote: "a base create → first command → kill", target: atMost(300, "≤ 300 ms")},
	{metric: "create of code-interpreter-v1 → first runCode answers (namespace, cold kernel: a booted create, its kernel started by it)", value: ref{"Interpreter", "interpreter-create-run-cold-p50-ms"}, unit: "ms",
		target: atMost(1000, "≤ 1 s")},
	{metric: "first create of code-interpreter-v1 on a fresh control plane (builds the template: apt-get in a build sandbox)", value: ref{"Interpreter", "build-s"}, unit: "s",
		target: &target{text: "report"}},
	{metric: "E2B SDK create → first command → kill, legacy POST /sandboxes, p50", value: ref{"E2B", "lifecycle-legacy-p50-ms"}, unit: "ms",
		base: ref{"E2B", "lifecycle-v2-p50-ms"}, baseNote: "the same via POST /v2/sandboxes", target: &target{text: "≤ 1.2× /v2 (same within noise)", value: 1.2, atMost: true, rel: true}},
	{metric: "PTY keystroke echo idle, p50", value: ref{"BenchmarkPTYEcho", "idle-p50-ms"}, unit: "ms"},
	{metric: "PTY keystroke echo idle, p99", value: ref{"BenchmarkPTYEcho", "idle-p99-ms"}, unit: "ms", target: atMost(5, "≤ 5 ms")},
	{metric: "PTY keystroke echo under proxy load, p50", value: ref{"BenchmarkPTYEcho", "load-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkPTYEcho", "idle-p50-ms"}, baseNote: "idle"},
	{metric: "PTY keystroke echo under proxy load, p99", value: ref{"BenchmarkPTYEcho", "load-p99-ms"}, unit: "ms",
		base: ref{"BenchmarkPTYEcho", "idle-p99-ms"}, baseNote: "idle", target: &target{text: "≤ 1.5× idle", value: 1.5, atMost: true, rel: true}},
	{metric: "dashboard terminal keystroke echo in Chromium: keydown → glyph in xterm's buffer, p50", value: ref{"BenchmarkDashboardEcho", "browser-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkDashboardEcho", "go-p50-ms"}, baseNote: "Go WebSocket client, same sandbox, in turn"},
	{metric: "dashboard terminal keystroke echo in Chromium: keydown → glyph in xterm's buffer, p99", value: ref{"BenchmarkDashboardEcho", "browser-p99-ms"}, unit: "ms",
		base: ref{"BenchmarkDashboardEcho", "go-p99-ms"}, baseNote: "Go WebSocket client, same sandbox, in turn", target: &target{text: "≤ 2× Go client", value: 2, atMost: true, rel: true}},
	{metric: "dashboard terminal keystroke echo in Chromium: keydown → glyph drawn in xterm's rows (60 Hz frames), p99", value: ref{"BenchmarkDashboardEcho", "browser-drawn-p99-ms"}, unit: "ms",
		base: ref{"BenchmarkDashboardEcho", "go-p99-ms"}, baseNote: "Go WebSocket client"},
	{metric: "dashboard terminal keystroke echo, glyph in xterm's buffer, in a Chromium that does not hold tasks after input until its next frame (--disable-features=DeferRendererTasksAfterInput), p99", value: ref{"BenchmarkDashboardEcho", "browser-undeferred-p99-ms"}, unit: "ms",
		base: ref{"BenchmarkDashboardEcho", "go-p99-ms"}, baseNote: "Go WebSocket client"},
	{metric: "dashboard sandboxes table: real running sandboxes listed", value: ref{"BenchmarkDashboardTable", "sandboxes"}, unit: "",
		target: &target{text: "1000 (quick: 50)"}},
	{metric: "dashboard sandboxes table, signed in: navigation → its first render (the first page's rows drawn; cold cache), p50", value: ref{"BenchmarkDashboardTable", "table-first-rows-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkDashboardTable", "list-p50-ms"}, baseNote: "every page of GET /v2/sandboxes from Go", target: atMost(500, "≤ 500 ms")},
	{metric: "dashboard sandboxes table, signed in: navigation → \"N of N sandboxes\" with rows drawn (cold cache), p50", value: ref{"BenchmarkDashboardTable", "table-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkDashboardTable", "list-p50-ms"}, baseNote: "the same pages of GET /v2/sandboxes from Go"},
	{metric: "dashboard sandboxes table: the page's own listing (its first GET /v2/sandboxes sent → its last page in), p50", value: ref{"BenchmarkDashboardTable", "table-listing-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkDashboardTable", "list-p50-ms"}, baseNote: "the same pages from Go"},
	{metric: "dashboard sandboxes table: the host's CPUs busy with the stack and its sandboxes idle, before the loads", value: ref{"BenchmarkDashboardTable", "idle-host-busy-pct"}, unit: "%",
		target: &target{text: "report"}},
	{metric: "dashboard sandboxes table, slowest load", value: ref{"BenchmarkDashboardTable", "table-max-ms"}, unit: "ms",
		base: ref{"BenchmarkDashboardTable", "list-max-ms"}, baseNote: "slowest API listing from Go"},
	{metric: "dashboard sandboxes table scrolled to its end → last row drawn, most animation frames", value: ref{"BenchmarkDashboardTable", "scroll-frames-max"}, unit: "frames",
		target: atMost(2, "≤ 2 frames")},
	{metric: "dashboard sandboxes table scrolled to its end → last row in the document, p50", value: ref{"BenchmarkDashboardTable", "scroll-p50-ms"}, unit: "ms"},
	{metric: "dashboard first page: navigation → sign-in form interactive (cold cache), p50", value: ref{"BenchmarkDashboardTable", "signin-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkDashboardTable", "page-fetch-p50-ms"}, baseNote: "GET / and its assets from Go on a new connection", target: atMost(1000, "≤ 1 s")},
	{metric: "dashboard JavaScript shipped (dist/*.js), gzipped", value: ref{"Dashboard", "js-gzip-KiB"}, unit: "KiB",
		target: atMost(250, "≤ 250 KB (the build's budget: 250 KiB)")},
	{metric: "proxy CPU per request in the benchmark process (client, control plane, agent), envd /health, 16 clients", value: ref{"BenchmarkProxySandbox", "envd-proxy-cpu-us/req"}, unit: "µs",
		base: ref{"BenchmarkProxySandbox", "envd-direct-cpu-us/req"}, baseNote: "direct: client only", target: atMostAbove(40, "≤ 40 µs above direct")},
	{metric: "proxy requests/s, envd /health (Go, keep-alive), 16 clients", value: ref{"BenchmarkProxySandbox", "envd-proxy-req/s"}, unit: "/s",
		base: ref{"BenchmarkProxySandbox", "envd-direct-req/s"}, baseNote: "direct to sandbox IP", target: &target{text: "≥ 0.7× direct", value: 0.7, rel: true}},
	{metric: "proxy p50, envd /health", value: ref{"BenchmarkProxySandbox", "envd-proxy-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkProxySandbox", "envd-direct-p50-ms"}, baseNote: "direct to sandbox IP"},
	{metric: "proxy p99, envd /health", value: ref{"BenchmarkProxySandbox", "envd-proxy-p99-ms"}, unit: "ms",
		base: ref{"BenchmarkProxySandbox", "envd-direct-p99-ms"}, baseNote: "direct to sandbox IP"},
	{metric: "proxy requests/s, python3 http.server (HTTP/1.0), 16 clients", value: ref{"BenchmarkProxySandbox", "python-proxy-req/s"}, unit: "/s",
		base: ref{"BenchmarkProxySandbox", "python-direct-req/s"}, baseNote: "direct to sandbox IP", target: &target{text: "≥ 0.7× direct", value: 0.7, rel: true}},
	{metric: "proxy p99, python3 http.server", value: ref{"BenchmarkProxySandbox", "python-proxy-p99-ms"}, unit: "ms",
		base: ref{"BenchmarkProxySandbox", "python-direct-p99-ms"}, baseNote: "direct to sandbox IP"},
	{metric: "qemu (TCG here) create → envd healthy, p50", value: ref{"BenchmarkCreate", "p50-ms"}, unit: "ms",
		base: ref{"BenchmarkBareUnshare", "p50-ms"}, baseNote: "bare unshare", target: atMost(3000, "≤ 3 s"), asked: "QEMU=1"},
	{metric: "qemu restore from snapshot → envd healthy, p50", value: ref{"BenchmarkRestore", "p50-ms"}, unit: "ms",
		target: atMost(1000, "≤ 1 s"), asked: "QEMU=1"},
	{metric: "qemu create of a template with a start command (python3 http.server), forked from its capture, p50", value: ref{"BenchmarkStartCmdCreateQEMU", "fork-create-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkStartCmdCreateQEMU", "boot-create-ms"}, baseNote: "its first create: boot, start command, ready check", target: atMost(1000, "≤ 1 s"), asked: "QEMU=1"},
	{metric: "qemu host memory per idle VM (QEMU's RSS, 512 MiB guest)", value: ref{"BenchmarkCreate", "idle-rss-MiB"}, unit: "MiB",
		target: &target{text: "report"}, asked: "QEMU=1"},
	{metric: "density: idle sandboxes started", value: ref{"BenchmarkDensity", "sandboxes"}, unit: "",
		target: atLeast(1000, "≥ 1000 fit")},
	{metric: "density: host memory per idle sandbox", value: ref{"BenchmarkDensity", "MiB/sandbox"}, unit: "MiB",
		target: &target{text: "report"}},
	{metric: "density: sequential creates/s while filling", value: ref{"BenchmarkDensity", "creates/s"}, unit: "/s"},
	{metric: "density: create → envd healthy with 1000 idle sandboxes running, p50", value: ref{"BenchmarkDensity", "create-full-p50-ms"}, unit: "ms",
		base: ref{"BenchmarkDensity", "create-empty-p50-ms"}, baseNote: "the same on the empty host, before the fill",
		target: &target{text: "≤ 1.5× empty", value: 1.5, atMost: true, rel: true}},
	{metric: "density: CPU of 1000 idle sandboxes (their cgroups' use over 20 s, per sandbox × 1000)", value: ref{"BenchmarkDensity", "idle-core-pct-1000"}, unit: "% of a core",
		target: &target{text: "report"}},
}

// chartSpec is one chart: the CDFs of some sample sets.
type chartSpec struct {
	file, title string
	sets        []string
}

var charts = []chartSpec{
	{"create.png", "Sandbox create latency", []string{"create-ready", "agent-create", "create-rest", "create-warm", "bare-unshare"}},
	{"exec.png", "exec `true` latency", []string{"exec-rest", "exec-e2b", "envd-start-true", "local-fork-exec"}},
	{"pty.png", "PTY keystroke echo latency", []string{"pty-echo-idle", "pty-echo-load"}},
	{"dashboard-echo.png", "Terminal keystroke echo: the dashboard in Chromium and a Go client", []string{"dashboard-echo-browser", "dashboard-echo-browser-drawn", "dashboard-echo-browser-undeferred", "dashboard-echo-go"}},
	{"proxy.png", "Proxy request latency (16 clients)", []string{"proxy-envd-proxy", "proxy-envd-direct", "proxy-python-proxy", "proxy-python-direct"}},
}

// writeReport writes dir/results.md and dir/charts/*.png.
func writeReport(dir string, res *results) error {
	if err := os.MkdirAll(filepath.Join(dir, "charts"), 0o755); err != nil {
		return err
	}
	var drawn []chartSpec
	for _, c := range charts {
		ok, err := drawCDF(filepath.Join(dir, "charts", c.file), c.title, c.sets, res.Samples)
		if err != nil {
			return fmt.Errorf("chart %s: %w", c.file, err)
		}
		if ok {
			drawn = append(drawn, c)
		}
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(markdown(res, drawn)), 0o644)
}

func markdown(res *results, drawn []chartSpec) string {
	var b strings.Builder
	kind := "full"
	if res.Quick {
		kind = "quick (`make bench QUICK=1`: fewer samples, shorter loads)"
	}
	fmt.Fprintf(&b, "# roost benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `make bench` (bench/run). Every baseline was measured in the same run, on the same machine.\n\n")
	fmt.Fprintf(&b, "- date: %s\n- machine: %s\n- go: %s\n- run: %s, %s\n\n",
		res.Date.Format("2006-01-02 15:04 MST"), res.Machine, res.Go, kind, res.Elapsed.Round(1e9))
	fmt.Fprintf(&b, "| metric | roost | baseline | ratio | target | met? |\n|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells(res, r), " | "))
	}
	if len(drawn) > 0 {
		fmt.Fprintf(&b, "\n## Latency distributions\n\n")
		for _, c := range drawn {
			fmt.Fprintf(&b, "- [%s](charts/%s)\n", c.title, c.file)
		}
		fmt.Fprintln(&b)
		for _, c := range drawn {
			fmt.Fprintf(&b, "![%s](charts/%s)\n\n", c.title, c.file)
		}
	}
	b.WriteString(methodNotes)
	if len(res.Notes) > 0 || len(res.Failures) > 0 {
		fmt.Fprintf(&b, "\n## This run\n\n")
		for _, n := range res.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		for _, f := range res.Failures {
			fmt.Fprintf(&b, "- failed: %s\n", firstLine(f))
		}
	}
	return b.String()
}

// cells renders one row: metric, roost, baseline, ratio, target, met?.
func cells(res *results, r rowSpec) []string {
	tgt := "—"
	if r.target != nil {
		tgt = r.target.text
	}
	v, ok := res.metric(r.value.bench, r.value.unit)
	if !ok && r.asked != "" {
		return []string{r.metric, "not run (make bench " + r.asked + ")", "", "", tgt, "—"}
	}
	if !ok {
		return []string{r.metric, "not measured", "", "", tgt, "not measured"}
	}
	out := []string{r.metric, format(v, r.unit), "—", "—", tgt, "—"}
	var ratio, diff float64
	haveRatio, haveDiff := false, false
	if r.base != (ref{}) {
		if bv, ok := res.metric(r.base.bench, r.base.unit); ok {
			out[2] = format(bv, r.unit) + " (" + r.baseNote + ")"
			diff, haveDiff = v-bv, true
			if bv != 0 {
				ratio, haveRatio = v/bv, true
				out[3] = fmt.Sprintf("%.2f×", ratio)
			}
			if r.target != nil && r.target.diff {
				// The difference is what the target is about: show it.
				sign := "+"
				if diff < 0 {
					sign = "−"
				}
				out[3] = strings.TrimPrefix(out[3]+", ", "—, ") + sign + format(max(diff, -diff), r.unit)
			}
		} else {
			out[2] = "not measured"
		}
	}
	if t := r.target; t != nil && (t.value != 0 || t.rel || t.diff) {
		x, ok := v, true
		switch {
		case t.rel:
			x, ok = ratio, haveRatio
		case t.diff:
			x, ok = diff, haveDiff
		}
		switch {
		case !ok:
			out[5] = "no baseline"
		case t.atMost && x <= t.value, !t.atMost && x >= t.value:
			out[5] = "yes"
		default:
			out[5] = "**no: missed**"
		}
	}
	return out
}

func format(v float64, unit string) string {
	var s string
	switch {
	case unit == "" && v == float64(int64(v)):
		s = fmt.Sprintf("%d", int64(v))
	case v >= 100:
		s = fmt.Sprintf("%.0f", v)
	case v >= 10:
		s = fmt.Sprintf("%.1f", v)
	default:
		s = fmt.Sprintf("%.2f", v)
	}
	if unit == "" {
		return s
	}
	if unit == "/s" {
		return s + "/s"
	}
	return s + " " + unit
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

const methodNotes = `
## Method

- Each benchmark runs as ` + "`go test -run '^$' -bench ... -benchtime Nx`" + ` (or a program) against real components: namespace
  sandboxes of the cached base template with their network, a host agent, the control plane and its proxy on loopback
  HTTP, the real envd binary, and ` + "`roost up --no-prune`" + ` for the E2B JS SDK. Numbers come from the benchmarks'
  ` + "`b.ReportMetric`" + ` values; charts from their raw samples (` + "`$ROOST_BENCH_OUT`" + `).
- Baselines: a bare ` + "`unshare`" + ` of the same namespaces (user, pid, mount, uts, ipc, net, cgroup) running ` + "`true`" + `;
  a local fork+exec of /bin/true from the harness; a local file copy through the page cache; the same HTTP load sent
  directly to the sandbox's address from the host; PTY echo with no load.
- Latencies are nearest-rank percentiles of per-operation wall times. Create rows exclude the destroy; the concurrent
  creates row counts completed creates while 4 clients loop create → delete for the whole period (60 s full, 10 s quick).
- Proxy: 16 concurrent keep-alive clients send small GETs for a sixth of that period per leg, through the control plane's
  proxy (path form, as ` + "`roost up`" + ` runs it: the control plane reaches its own agent's sandboxes directly) and directly
  to the sandbox; python3's http.server speaks HTTP/1.0, so every request is a new connection to the sandbox either way.
  Load generator, proxy and servers share the machine's cores: against a server that costs almost nothing per request
  (envd's /health) the proxy's own hop (an HTTP server and client: ~4 more syscalls and two parses a request) is most of
  the work, which bounds that ratio near 0.5 here; against a server that does some work (python) the proxy barely shows.
  CPU per request is the benchmark process's user and system time over the requests it completed: the direct leg's is
  the load generator's client alone, the proxy leg's adds the control plane's proxy (its HTTP server and its connection
  to the sandbox), so the difference is the proxy hop's own cost, the primary proxy figure.
- /files: 256 MiB uploaded and downloaded over loopback by a host envd, into and out of tmpfs (envd's own throughput,
  the target) and then the disk (whose sustained write rate, a few hundred MB/s here once the page cache's dirty limit
  is reached, bounds an upload), each beside a local copy of the same file in the same place.
- PTY: keystroke → echo through the terminal WebSocket, idle and while the sandbox serves proxied HTTP and a
  streaming WebSocket (BenchmarkPTYEcho).
- PTY under load: the load generator (niced), the sandbox's servers, the proxy and the terminal share the machine's
  cores, so a keystroke's ~7 wake-ups (WebSocket → control plane → envd → bash → envd → control plane → WebSocket) more
  often wait behind load; the p99 is the 50th-worst of 5,000 keystrokes and still varies between runs.
- Dashboard: headless Chromium (Debian's package, as a user runs it: frames at 60 Hz) driven over the DevTools
  protocol; the times are the page's own (performance.now() from the navigation's start, a capture keydown listener,
  MutationObservers), never the protocol's round trips. Echo: trusted key events typed into ` + "`cat`" + ` on the sandbox page's
  terminal; the glyph is in xterm's buffer once the page has handled the echo's WebSocket message (xterm parses the first
  write after input at once) and drawn once xterm's rows read it; a Go WebSocket client types the same keys into a ` + "`cat`" + `
  of its own in the same sandbox, in turn with the browser. After a key, Chromium holds the page's other tasks until its
  next frame (DeferRendererTasksAfterInput), so the echo's message waits up to a frame (16.7 ms) in the browser whatever
  the page does; a second Chromium with that feature off shows the rest; drawing then waits for xterm's next frame.
- Dashboard table: ` + "`roost up`" + ` with its sandboxes running (created through POST /v2/sandboxes by 4 clients: 1000, 50 quick);
  each load with the browser's cache off, from the navigation's start to the status line reading "N of N sandboxes" with
  rows in the document, and a frame later (drawn, the main thread free); the baseline is the same pages of GET
  /v2/sandboxes (100 a page) fetched and decoded by Go. Scroll: the table's scrollTop set to its end, animation frames
  counted until its last row is in the document. Before the loads, how busy the host's CPUs are for 5 s with the
  sandboxes idle: an idle sandbox still costs CPU (its envd scans its listening sockets every 250-750 ms, for port
  forwarding), and the browser shares the cores with a thousand of them. First page: the sign-in form with its button enabled, a frame later;
  its baseline GET / and the assets it names (gzip, in parallel) by Go on a new connection. JavaScript: every dist/*.js
  gzipped at level 9, as the build checks its budget.
- Templates: the unpack imports an OCI layout of the base template (its tree cut into 3 gzip layers) into fresh blobs and
  materializes it into a fresh store, then ` + "`tar -xzf`" + `s the same layer files into a fresh dir on the same disk, both
  followed by a sync (MB = uncompressed layer bytes). The rebuild, pull and start-command rows run the agent over the
  namespace runtime: a 10-step Dockerfile built once and rebuilt unchanged through Manager.Build; per iteration a fresh
  data dir pulling base (one layer) from a blob server on loopback, then creates of it alternating with creates of the
  host's base; a template whose start command is ` + "`python3 -m http.server 8000`" + ` with ` + "`curl -fs localhost:8000`" + ` as ready
  check, alternating with a plain create followed by the same server started through envd and the same check run until it
  passes, back to back (the server's own ready time). Destroys are not timed.
- Density: idle sandboxes started one after another; memory per sandbox is the fall of MemAvailable divided by their
  number, after 5 s to settle. Idle CPU is what the sandboxes' cgroups use in the 20 s after that (those started in the
  fill's last 15 s or so still look for new servers more often than idle ones). Create latency (network, create, envd
  healthy) is the p50 of 20 creates, each destroyed before the next, with the sandboxes running after that, beside 20 on
  the empty host before the fill.
- The machine is shared and has no usable KVM; absolute numbers drift between runs, which is why every baseline is measured in
  the same run. The ratio is roost / baseline.
`
