package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"roost.dev/roost/errdefs"
)

// Limits bound a group. Zero in a field means no limit.
type Limits struct {
	// CPUs is CPU time as a number of CPUs (1.5 = one and a half CPUs'
	// worth of time per period, spread over any CPUs). At least 0.01.
	CPUs float64
	// MemoryBytes caps memory, swap included where the kernel can limit
	// swap (v1 memory.memsw, v2 memory.swap.max): a sandbox never swaps
	// past its limit, it is OOM-killed at it.
	MemoryBytes int64
	// Pids caps the number of tasks (processes and threads).
	Pids int64
}

// Stats is a group's resource use.
type Stats struct {
	CPUUsage    time.Duration // cumulative CPU time of all tasks
	MemoryBytes uint64        // current usage, page cache included
	MemoryLimit uint64        // 0 when there is no limit
	Pids        int           // tasks (processes and threads)
	OOMKills    uint64        // processes the OOM killer killed in the group
}

// Group is one cgroup, present in every hierarchy the Hierarchy uses. Its
// methods are safe for concurrent use, but Freeze, Thaw, Kill and Delete
// act on shared kernel state: callers serialise them per group (the
// sandbox manager serialises calls per sandbox).
type Group struct {
	h    *Hierarchy
	name string
	// dirs are the group's directories, one per mount, in creation order.
	dirs []string
	// v1 maps each v1 controller to the group's directory for it; nil on v2.
	v1 map[string]string
	// v2 is the group's cgroup2 directory: the group itself on v2, its
	// mirror on a hybrid host, "" when there is none.
	v2 string
}

// Name is the group's name as given to Create or Load.
func (g *Group) Name() string { return g.name }

// Hierarchies are the v1 controllers the group has a directory for, and
// whether it has one in the cgroup2 hierarchy.
func (g *Group) Hierarchies() (v1 []string, v2 bool) {
	for _, c := range v1Controllers {
		if _, ok := g.v1[c]; ok {
			v1 = append(v1, c)
		}
	}
	return v1, g.v2 != ""
}

// group returns the Group for a valid name without touching the host.
func (h *Hierarchy) group(name string) *Group {
	g := &Group{h: h, name: name}
	if h.version == 1 {
		g.v1 = map[string]string{}
		for _, c := range v1Controllers {
			mnt, ok := h.v1[c]
			if !ok {
				continue
			}
			d := filepath.Join(mnt, name)
			g.v1[c] = d
			if !slices.Contains(g.dirs, d) {
				g.dirs = append(g.dirs, d)
			}
		}
	}
	if h.v2 != "" {
		g.v2 = filepath.Join(h.v2, name)
		g.dirs = append(g.dirs, g.v2)
	}
	return g
}

// mounts are the roots of the hierarchies groups live in.
func (h *Hierarchy) mounts() []string {
	var out []string
	for _, c := range v1Controllers {
		if m, ok := h.v1[c]; ok && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	if h.v2 != "" {
		out = append(out, h.v2)
	}
	return out
}

// Create makes the group name (e.g. "roost/<id>") in every hierarchy in
// use, with its missing parents, and applies l. On v2 it enables the
// memory, cpu and pids controllers that the parents offer in their
// cgroup.subtree_control. It fails with errdefs.ErrConflict when the group
// exists, and errdefs.ErrUnsupported when a non-zero limit needs a
// controller the host lacks. On failure nothing it made is left behind.
func (h *Hierarchy) Create(name string, l Limits) (_ *Group, err error) {
	if err := validName(name); err != nil {
		return nil, fmt.Errorf("create cgroup: %w", err)
	}
	if err := l.validate(); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", name, err)
	}
	g := h.group(name)
	var made []string // directories this call created, in creation order
	defer func() {
		if err == nil {
			return
		}
		// The group is empty, so rmdir succeeds; a parent another group
		// now lives in stays (EBUSY), which is what we want.
		for i := len(made) - 1; i >= 0; i-- {
			_ = syscall.Rmdir(made[i])
		}
	}()
	for _, mnt := range h.mounts() {
		enable := h.version == 2 && mnt == h.v2
		if err := mkdirGroup(mnt, name, enable, &made); err != nil {
			return nil, fmt.Errorf("create cgroup %s: %w", name, err)
		}
	}
	if err := g.setLimits(l); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", name, err)
	}
	return g, nil
}

// mkdirGroup creates name under the hierarchy root mnt, parents first,
// appending every directory it creates to made. With enable it turns on
// the v2 controllers each parent offers for its children.
func mkdirGroup(mnt, name string, enable bool, made *[]string) error {
	parts := strings.Split(name, "/")
	dir := mnt
	for i, p := range parts {
		if enable {
			if err := enableControllers(dir); err != nil {
				return err
			}
		}
		dir = filepath.Join(dir, p)
		err := os.Mkdir(dir, 0o755)
		switch {
		case err == nil:
			*made = append(*made, dir)
		case errors.Is(err, fs.ErrExist) && i == len(parts)-1:
			return fmt.Errorf("%s exists: %w", dir, errdefs.ErrConflict)
		case errors.Is(err, fs.ErrExist):
		default:
			return err
		}
	}
	return nil
}

// enableControllers turns on, in dir's cgroup.subtree_control, those of
// the memory, cpu and pids controllers dir offers and has not enabled.
func enableControllers(dir string) error {
	avail, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return err
	}
	on, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	var add []string
	for _, c := range v2Controllers {
		if slices.Contains(strings.Fields(string(avail)), c) && !slices.Contains(strings.Fields(string(on)), c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := writeFile(dir, "cgroup.subtree_control", strings.Join(add, " ")); err != nil {
		return fmt.Errorf("enable controllers: %w", err)
	}
	return nil
}

// Load returns the existing group name, for an agent recovering its
// sandboxes. It fails with errdefs.ErrNotFound when the group exists in no
// hierarchy. A group only partly present (a crash mid-Create or
// mid-Delete) loads; Delete removes what there is of it.
func (h *Hierarchy) Load(name string) (*Group, error) {
	if err := validName(name); err != nil {
		return nil, fmt.Errorf("load cgroup: %w", err)
	}
	g := h.group(name)
	if len(g.existing()) == 0 {
		return nil, fmt.Errorf("load cgroup %s: %w", name, errdefs.ErrNotFound)
	}
	return g, nil
}

// List returns the full names ("roost/<id>") of the groups directly under
// parent in any hierarchy, sorted, so that an agent can prune what a crash
// left behind. A missing parent has no children.
func (h *Hierarchy) List(parent string) ([]string, error) {
	if err := validName(parent); err != nil {
		return nil, fmt.Errorf("list cgroups: %w", err)
	}
	var out []string
	for _, mnt := range h.mounts() {
		entries, err := os.ReadDir(filepath.Join(mnt, parent))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list cgroups under %s: %w", parent, err)
		}
		for _, e := range entries {
			n := parent + "/" + e.Name()
			if e.IsDir() && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// AddProc moves process pid, with all its threads, into the group in
// every hierarchy. Its children forked afterwards are born in the group.
func (g *Group) AddProc(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, g.name, errdefs.ErrInvalid)
	}
	for _, d := range g.dirs {
		if err := writeFile(d, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("add pid %d to cgroup %s: %w", pid, g.name, err)
		}
	}
	return nil
}

// Procs returns the processes in the group in any hierarchy, sorted.
func (g *Group) Procs() ([]int, error) {
	dirs := g.existing()
	if len(dirs) == 0 {
		return nil, fmt.Errorf("cgroup %s procs: %w", g.name, errdefs.ErrNotFound)
	}
	pids, err := readProcs(dirs)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s procs: %w", g.name, err)
	}
	return pids, nil
}

// Delete kills every process in the group and removes its directories
// everywhere. Deleting a group that does not exist (any more) is nil.
// A group with child groups cannot be deleted.
func (g *Group) Delete(ctx context.Context) error {
	dirs := g.existing()
	if len(dirs) == 0 {
		return nil
	}
	if err := g.kill(ctx, dirs); err != nil {
		return fmt.Errorf("delete cgroup %s: %w", g.name, err)
	}
	// rmdir fails with EBUSY while a dying task still holds the group or
	// a process raced in after the kill: kill again and retry, briefly.
	rctx, cancel := context.WithTimeout(ctx, rmdirPatience)
	defer cancel()
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		err := poll(rctx, func() (bool, error) {
			err := syscall.Rmdir(d)
			switch {
			case err == nil || errors.Is(err, syscall.ENOENT):
				return true, nil
			case errors.Is(err, syscall.EBUSY):
				if pids, _ := readProcs([]string{d}); len(pids) > 0 {
					return false, g.kill(rctx, []string{d})
				}
				return false, nil
			default:
				return false, err
			}
		})
		if err != nil {
			return fmt.Errorf("delete cgroup %s: remove %s: %w", g.name, d, err)
		}
	}
	return nil
}

// rmdirPatience bounds Delete's retries of an rmdir that fails with EBUSY.
const rmdirPatience = 2 * time.Second

// existing returns the group's directories that exist.
func (g *Group) existing() []string {
	var out []string
	for _, d := range g.dirs {
		if _, err := os.Stat(d); err == nil {
			out = append(out, d)
		}
	}
	return out
}

// readProcs returns the union of the cgroup.procs of dirs, sorted.
func readProcs(dirs []string) ([]int, error) {
	var out []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			return nil, err
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("parse %s: %w", filepath.Join(d, "cgroup.procs"), err)
			}
			if !slices.Contains(out, pid) {
				out = append(out, pid)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// validName checks a group name: slash-separated elements of letters,
// digits, '.', '_' and '-', not "." or "..", the first starting with
// "roost".
func validName(name string) error {
	if !strings.HasPrefix(name, "roost") {
		return fmt.Errorf("cgroup name %q: must start with \"roost\": %w", name, errdefs.ErrInvalid)
	}
	if len(name) > 512 {
		return fmt.Errorf("cgroup name %q: longer than 512 bytes: %w", name, errdefs.ErrInvalid)
	}
	for _, p := range strings.Split(name, "/") {
		if p == "" || p == "." || p == ".." {
			return fmt.Errorf("cgroup name %q: empty, \".\" or \"..\" element: %w", name, errdefs.ErrInvalid)
		}
		for _, r := range p {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
				return fmt.Errorf("cgroup name %q: character %q not allowed: %w", name, r, errdefs.ErrInvalid)
			}
		}
	}
	return nil
}

// writeFile writes value to a cgroup control file in a single write, as
// cgroupfs requires. It never creates the file: a missing file is a
// missing controller.
func writeFile(dir, file, value string) error {
	f, err := os.OpenFile(filepath.Join(dir, file), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
