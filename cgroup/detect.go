package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/mountinfo"
)

// defaultRoot is where systemd and most distributions mount cgroups.
const defaultRoot = "/sys/fs/cgroup"

// v1Controllers are the v1 controllers this package uses, in the order
// their directories are created.
var v1Controllers = []string{"memory", "cpu", "cpuacct", "pids", "freezer"}

// v2Controllers are the v2 controllers a group needs for its limits; Detect
// prefers v2 only when the root offers all of them.
var v2Controllers = []string{"memory", "cpu", "pids"}

// Hierarchy is the cgroup layout of a host as Detect found it. It is
// immutable and safe for concurrent use.
type Hierarchy struct {
	version int
	// v2 is the cgroup2 mount holding the groups on a v2 hierarchy, or the
	// hybrid unified tree where groups are mirrored for cgroup.kill on a
	// v1 hierarchy ("" when there is none).
	v2 string
	// v1 maps each v1 controller in use to its mount point; co-mounted
	// controllers (cpu,cpuacct) share one. Nil on v2.
	v1 map[string]string
	// useKill says whether Kill may use cgroup.kill where a group has one.
	// Tests turn it off to exercise the freeze-and-signal path.
	useKill bool
}

// Detect finds the host's cgroup hierarchy under /sys/fs/cgroup: v2 when
// it is a cgroup2 mount offering the memory, cpu and pids controllers, else
// v1 with the controllers of memory, cpu, cpuacct, pids and freezer that
// are mounted. It fails with errdefs.ErrUnavailable when neither works.
func Detect() (*Hierarchy, error) {
	return detect(defaultRoot, true)
}

// DetectAt is Detect for a hierarchy mounted at root. A cgroup2 mount there
// is used as v2 even when it lacks controllers: groups, procs, freeze, thaw
// and kill work, and setting a limit whose controller is missing fails with
// errdefs.ErrUnsupported. Otherwise root is searched for v1 mounts.
func DetectAt(root string) (*Hierarchy, error) {
	return detect(filepath.Clean(root), false)
}

func detect(root string, needControllers bool) (*Hierarchy, error) {
	isV2, err := isCgroup2(root)
	if err != nil {
		return nil, fmt.Errorf("detect cgroups at %s: %w", root, err)
	}
	var v2Problem string
	if isV2 {
		missing, err := missingControllers(root, v2Controllers)
		if err != nil {
			return nil, fmt.Errorf("detect cgroups at %s: %w", root, err)
		}
		if !needControllers || len(missing) == 0 {
			return &Hierarchy{version: 2, v2: root, useKill: true}, nil
		}
		v2Problem = fmt.Sprintf("cgroup v2 at %s lacks the %s controllers", root, strings.Join(missing, ", "))
	}

	mounts, err := mountinfo.Read()
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	v1 := v1Mounts(mounts, root)
	if len(v1) == 0 {
		if v2Problem == "" {
			v2Problem = fmt.Sprintf("%s is not a cgroup2 mount", root)
		}
		return nil, fmt.Errorf("detect cgroups: %s and no cgroup v1 controller (%s) is mounted under it: %w",
			v2Problem, strings.Join(v1Controllers, ", "), errdefs.ErrUnavailable)
	}
	h := &Hierarchy{version: 1, v1: v1, useKill: true}
	unified := filepath.Join(root, "unified")
	if ok, _ := isCgroup2(unified); ok && writable(unified) {
		h.v2 = unified
	}
	return h, nil
}

// Version is 1 or 2.
func (h *Hierarchy) Version() int { return h.version }

// String describes the layout for logs, e.g. "cgroup v1 (memory, cpu,
// cpuacct, pids, freezer; cgroup.kill via /sys/fs/cgroup/unified)".
func (h *Hierarchy) String() string {
	if h.version == 2 {
		return "cgroup v2 at " + h.v2
	}
	var have []string
	for _, c := range v1Controllers {
		if _, ok := h.v1[c]; ok {
			have = append(have, c)
		}
	}
	s := "cgroup v1 (" + strings.Join(have, ", ")
	if h.v2 != "" {
		s += "; cgroup.kill via " + h.v2
	}
	return s + ")"
}

// missingControllers reports which of want the cgroup2 root does not offer.
func missingControllers(root string, want []string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return nil, err
	}
	have := strings.Fields(string(b))
	var missing []string
	for _, c := range want {
		if !slices.Contains(have, c) {
			missing = append(missing, c)
		}
	}
	return missing, nil
}

// v1Mounts maps each controller this package uses to the first cgroup v1
// mount under root that carries it.
func v1Mounts(mounts []mountinfo.Mount, root string) map[string]string {
	out := map[string]string{}
	for _, m := range mounts {
		if m.FSType != "cgroup" || !under(m.Target, root) {
			continue
		}
		for _, c := range v1Controllers {
			if _, seen := out[c]; !seen && slices.Contains(m.SuperOptions, c) {
				out[c] = m.Target
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// under reports whether path is root or inside it.
func under(path, root string) bool {
	return path == root || strings.HasPrefix(path, strings.TrimSuffix(root, "/")+"/")
}

// V1Groups maps each v1 controller to a process's (or thread's) group in
// its hierarchy, as file (/proc/<pid>/cgroup, /proc/thread-self/cgroup)
// names it: relative to the hierarchy's root. cgroup2's line is left out.
func V1Groups(file string) (map[string]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 || f[1] == "" {
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			out[c] = f[2]
		}
	}
	return out, nil
}
