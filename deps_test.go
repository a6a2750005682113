package roost_test

import (
	"os/exec"
	"strings"
	"testing"
)

// module is this repository's module path.
const module = "roost.dev/roost"

// allowed lists, for each package prefix, the only roost packages it may
// depend on, directly or not: "p" allows exactly p, "p/..." allows p and
// everything below it. The rules that matter most: envd runs inside
// sandboxes and must never pull in host-side code; the agent drives
// runtimes only through the runtime interfaces, never a driver (cmd/roost
// wires drivers in), and knows nothing of the control plane; drivers never
// import the agent or the control plane.
var allowed = map[string][]string{
	module + "/envd":     {module + "/envd/...", module + "/gen/..."},
	module + "/cmd/envd": {module + "/envd/...", module + "/gen/..."},
	module + "/gen":      {module + "/gen/..."},
	module + "/agent": {module + "/agent/...", module + "/runtime", module + "/errdefs", module + "/wire", module + "/proxy", module + "/bufpool", module + "/atomicfile", module + "/network/...",
		module + "/template/...", module + "/cgroup/...", module + "/mountinfo", module + "/gen/..."},
	// The control plane's sandbox proxy talks to agents over HTTP only:
	// no agent, driver or control-plane code, just the error categories.
	module + "/proxy": {module + "/proxy", module + "/errdefs", module + "/wire", module + "/bufpool"},
	// The control plane drives agents over their Connect API only: no agent
	// or runtime driver code, just the error categories of runtime.
	module + "/controlplane": {module + "/controlplane", module + "/store", module + "/proxy", module + "/runtime", module + "/errdefs", module + "/wire", module + "/bufpool",
		module + "/gen/..."},
	module + "/runtime": {module + "/runtime/...", module + "/errdefs", module + "/wire", module + "/atomicfile", module + "/cgroup/...", module + "/network/...",
		module + "/template/...", module + "/mountinfo", module + "/gen/..."},
	// Flags and wiring only: it may assemble everything host-side (add the
	// control plane here), but nothing that runs inside a sandbox.
	module + "/cmd/roost": {module + "/agent/...", module + "/runtime/...", module + "/network/...",
		module + "/template/...", module + "/cgroup/...", module + "/mountinfo", module + "/gen/...",
		module + "/client", module + "/controlplane", module + "/store", module + "/proxy", module + "/bufpool", module + "/atomicfile",
		module + "/errdefs", module + "/wire"},
	// The namespace sandbox's init runs inside sandboxes, and every sandbox
	// start pays for its start-up: nothing host-side, nothing heavy.
	module + "/runtime/namespace/sandboxinit": {module + "/runtime/namespace/sandboxinit"},
	module + "/cmd/roost-init":                {module + "/runtime/namespace/sandboxinit"},
	// The VM guest's init runs inside sandboxes, like envd: nothing
	// host-side.
	module + "/guest":           {module + "/guest"},
	module + "/cmd/roost-guest": {module + "/guest"},
	// The Go client speaks the public wire contracts only.
	module + "/client": {module + "/client", module + "/gen/..."},
}

func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, deps := fields[0], fields[1:]
		rules := rulesFor(pkg)
		if rules == nil {
			continue
		}
		checked++
		for _, d := range deps {
			if !strings.HasPrefix(d, module+"/") && d != module {
				continue
			}
			if !hasPrefix(d, rules) {
				t.Errorf("%s imports %s; it may only import %v", pkg, d, rules)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no package matched a rule: the test is not checking anything")
	}
}

func rulesFor(pkg string) []string {
	best := ""
	for prefix := range allowed {
		if (pkg == prefix || strings.HasPrefix(pkg, prefix+"/")) && len(prefix) > len(best) {
			best = prefix
		}
	}
	return allowed[best]
}

func hasPrefix(pkg string, patterns []string) bool {
	for _, p := range patterns {
		if base, tree := strings.CutSuffix(p, "/..."); tree {
			if pkg == base || strings.HasPrefix(pkg, base+"/") {
				return true
			}
		} else if pkg == p {
			return true
		}
	}
	return false
}
