package roost_test

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// module is this repository's module path.
const module = "roost.dev/roost"

// allowed lists, for every package of the repository, the only roost
// packages it may depend on, directly or not. A pattern "p" is exactly p,
// "p/..." is p and everything below it; a package follows the most
// specific pattern that matches it. Every package needs a rule, and every
// rule must match a package, so that a moved package cannot slip out of
// its rule unnoticed.
//
// The rules that matter most: envd and the inits run inside sandboxes and
// must never pull in host-side code; the agent drives runtimes only
// through the runtime interfaces, never a driver (cmd/roost wires drivers
// in), and knows nothing of the control plane; drivers never import the
// agent or the control plane; errdefs and wire are leaves every package
// may import.
var allowed = map[string][]string{
	// The module's root package holds its documentation only.
	module: {},

	// Leaves: the error categories, the cross-process constants, and
	// small helpers of the host side.
	module + "/errdefs":    {},
	module + "/wire":       {},
	module + "/bufpool":    {},
	module + "/atomicfile": {},
	module + "/mountinfo":  {},
	module + "/sparse":     {},
	// The web dashboard's files, embedded: it knows nothing of roost's
	// Go code (it is a client of the public API, in TypeScript).
	module + "/dashboard": {},
	module + "/gen/...":   {module + "/gen/..."},
	// What benchmarks write for make bench (bench/run, its own module):
	// any package's tests use it, envd's included.
	module + "/bench/samples": {},
	// make bench's runner and its envd benchmark (their own module; see
	// bench/run/go.mod) speak to envd over its public API.
	module + "/bench/run/...": {module + "/bench/run/...", module + "/bench/samples", module + "/gen/process/...", module + "/wire"},

	// envd runs inside sandboxes: nothing host-side, and of the generated
	// code only the APIs it serves.
	module + "/envd/...": {module + "/envd/...", module + "/gen/process/...", module + "/gen/filesystem/...", module + "/wire"},
	module + "/cmd/envd": {module + "/envd/...", module + "/gen/process/...", module + "/gen/filesystem/...", module + "/wire"},
	// The namespace sandbox's init runs inside sandboxes, and every sandbox
	// start pays for its start-up: nothing host-side, nothing heavy.
	module + "/runtime/namespace/sandboxinit": {module + "/wire"},
	module + "/cmd/roost-init":                {module + "/runtime/namespace/sandboxinit", module + "/wire"},
	// The VM guest's init runs inside sandboxes, like envd: nothing
	// host-side.
	module + "/guest":           {module + "/wire"},
	module + "/cmd/roost-guest": {module + "/guest", module + "/wire"},
	// The code interpreter runs inside sandboxes, like envd.
	module + "/interpreter":           {module + "/wire"},
	module + "/cmd/roost-interpreter": {module + "/interpreter", module + "/wire"},

	// make test-attacks' table of results reads go test's output and
	// the attack tests' source: nothing of roost.
	module + "/test/attacktable": {},

	// The Go client speaks the public wire contracts only.
	module + "/client": {module + "/gen/...", module + "/wire"},

	// Host-side building blocks the agent and the drivers share.
	module + "/cgroup/...":   {module + "/cgroup/...", module + "/errdefs", module + "/mountinfo"},
	module + "/template/...": {module + "/template/...", module + "/errdefs", module + "/mountinfo"},
	module + "/network/...":  {module + "/network/...", module + "/runtime", module + "/errdefs"},
	module + "/store/...":    {module + "/store/...", module + "/errdefs"},
	// The control plane's TLS certificates: the standard library's crypto.
	module + "/tlscert": {module + "/errdefs", module + "/atomicfile"},
	// Template content (blobs, manifests) is shared by the agent, the
	// control plane and the builder: a leaf beside errdefs.
	module + "/template/content": {module + "/errdefs"},
	// The agent's in-memory metrics history: a data structure, a leaf.
	module + "/metrichistory": {module + "/errdefs"},

	module + "/agent/...": {module + "/agent/...", module + "/runtime", module + "/errdefs", module + "/wire", module + "/proxy", module + "/bufpool", module + "/atomicfile", module + "/network/...",
		module + "/template/...", module + "/cgroup/...", module + "/mountinfo", module + "/gen/...", module + "/tlscert", module + "/metrichistory", module + "/sparse"},
	// The control plane's sandbox proxy talks to agents over HTTP only:
	// no agent, driver or control-plane code, just the error categories.
	module + "/proxy/...": {module + "/proxy/...", module + "/errdefs", module + "/wire", module + "/bufpool"},
	// The control plane drives agents over their Connect API only: no agent
	// or runtime driver code, just the error categories of runtime. Of
	// templates it keeps the content (blobs, manifests) and turns build
	// requests into specs; it never builds or unpacks a tree (template
	// and mountinfo come in with template/build's Builder, unused here).
	module + "/controlplane/...": {module + "/dashboard", module + "/controlplane/...", module + "/store", module + "/proxy", module + "/runtime", module + "/errdefs", module + "/wire", module + "/bufpool",
		module + "/gen/...", module + "/tlscert", module + "/atomicfile", module + "/template/content", module + "/template/build", module + "/template", module + "/mountinfo"},
	// The runtime interfaces and their drivers (and the drivers' test
	// helpers): never the agent or the control plane.
	module + "/runtime/...": {module + "/runtime/...", module + "/errdefs", module + "/wire", module + "/atomicfile", module + "/cgroup/...", module + "/network/...",
		module + "/template/...", module + "/mountinfo", module + "/gen/...", module + "/sparse"},
	// Flags and wiring only: it may assemble everything host-side, but
	// nothing that runs inside a sandbox.
	module + "/cmd/roost": {module + "/dashboard", module + "/agent/...", module + "/runtime/...", module + "/network/...",
		module + "/template/...", module + "/cgroup/...", module + "/mountinfo", module + "/gen/...",
		module + "/client", module + "/controlplane", module + "/store", module + "/proxy", module + "/bufpool", module + "/atomicfile",
		module + "/tlscert", module + "/errdefs", module + "/wire", module + "/metrichistory", module + "/sparse"},
	// The whole host-side stack, in process, for end-to-end tests; the
	// in-sandbox programs only as binaries.
	module + "/testenv": {module + "/dashboard", module + "/agent/...", module + "/controlplane", module + "/proxy", module + "/store/...", module + "/runtime/...",
		module + "/network/...", module + "/template/...", module + "/cgroup/...", module + "/mountinfo", module + "/bufpool", module + "/atomicfile",
		module + "/errdefs", module + "/wire", module + "/gen/...", module + "/tlscert", module + "/metrichistory", module + "/sparse"},
}

// external lists, for the packages that must stay small or run inside
// sandboxes, the only packages from outside the standard library and this
// repository they may depend on, directly or not ("p" or "p/..." again).
// Those not listed here may use any module go.mod requires.
var external = map[string][]string{
	// envd's RPC stack, its PTYs and its filesystem watches, exactly.
	module + "/envd/...": envdExternal,
	module + "/cmd/envd": envdExternal,
	// The inits run at every sandbox start: the standard library only.
	module + "/runtime/namespace/sandboxinit": {},
	module + "/cmd/roost-init":                {},
	module + "/guest":                         {},
	module + "/cmd/roost-guest":               {},
	// Leaves every package may import, envd included.
	module + "/errdefs":       {"connectrpc.com/connect/...", "google.golang.org/protobuf/..."},
	module + "/wire":          {},
	module + "/bench/samples": {},
	// Content is imported by the control plane too: the standard library
	// and errdefs' own dependencies only.
	module + "/template/content": {"connectrpc.com/connect/...", "google.golang.org/protobuf/..."},
}

var envdExternal = []string{
	"connectrpc.com/connect/...",
	"google.golang.org/protobuf/...",
	"github.com/creack/pty",
	"github.com/fsnotify/fsnotify/...",
	"golang.org/x/sys/unix",
}

// modules are the directories of this repository's Go modules, each
// checked with its packages.
var modules = []string{".", filepath.Join("bench", "run")}

func TestDependencyDirection(t *testing.T) {
	used := map[string]bool{}
	for _, dir := range modules {
		checkModule(t, dir, used)
	}
	for _, rules := range []map[string][]string{allowed, external} {
		for pattern := range rules {
			if !used[pattern] {
				t.Errorf("the rule for %s matches no package: remove it or fix its path", pattern)
			}
		}
	}
}

// checkModule checks the packages of the module in dir, recording in used
// the patterns that matched one.
func checkModule(t *testing.T, dir string, used map[string]bool) {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}} {{.Standard}} {{.DepOnly}}{{range .Deps}} {{.}}{{end}}`, "./...")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list in %s: %v", dir, err)
	}
	type pkg struct {
		path string
		deps []string
	}
	var own []pkg
	standard := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		switch {
		case f[1] == "true":
			standard[f[0]] = true
		case f[2] == "false": // one of ./..., not only a dependency
			own = append(own, pkg{f[0], f[3:]})
		}
	}
	if len(own) == 0 {
		t.Fatalf("go list in %s listed no package", dir)
	}
	for _, p := range own {
		pattern, ok := mostSpecific(allowed, p.path)
		if !ok {
			t.Errorf("%s has no rule in allowed: give it one", p.path)
			continue
		}
		used[pattern] = true
		ext, checkExt := mostSpecific(external, p.path)
		if checkExt {
			used[ext] = true
		}
		for _, d := range p.deps {
			switch {
			case standard[d]:
			case d == module || strings.HasPrefix(d, module+"/"):
				if !matchesAny(d, allowed[pattern]) {
					t.Errorf("%s depends on %s; it may only import %v", p.path, d, allowed[pattern])
				}
			case checkExt && !matchesAny(d, external[ext]):
				t.Errorf("%s depends on %s; outside the standard library it may only import %v", p.path, d, external[ext])
			}
		}
	}
}

// mostSpecific returns the longest pattern of rules that matches pkg.
func mostSpecific(rules map[string][]string, pkg string) (string, bool) {
	best, found := "", false
	for pattern := range rules {
		if matches(pkg, pattern) && (!found || len(pattern) > len(best)) {
			best, found = pattern, true
		}
	}
	return best, found
}

func matchesAny(pkg string, patterns []string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return matches(pkg, p) })
}

// matches reports whether pkg is pattern ("p") or lies under it ("p/...").
func matches(pkg, pattern string) bool {
	if base, tree := strings.CutSuffix(pattern, "/..."); tree {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}
