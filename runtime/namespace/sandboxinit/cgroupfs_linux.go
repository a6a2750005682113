package sandboxinit

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// The sandbox's view of cgroupfs. /sys is a bind of the host's, whose
// /sys/fs/cgroup shows every group on the host. It is covered with one
// that shows only the sandbox's own groups: the group the driver placed
// the init in, in each hierarchy where that is a roost group, is bound
// read-only where the hierarchy's root was (as the cgroup namespace shows
// it: /proc/self/cgroup says "/"); the other hierarchies are left out.
// envd reads its limits and use there. (A bind, not a fresh cgroupfs
// mount from inside the namespace: the kernel refuses those now and then
// with EPERM while the group is new.)

// cgroupMountFlags mount a hierarchy for reading only.
const cgroupMountFlags = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC

// hostCgroupRoot is where hosts mount cgroupfs.
const hostCgroupRoot = "/sys/fs/cgroup"

// ownHierarchies reads /proc/self/cgroup before the cgroup namespace hides
// the paths: the process's group, by the controller list of its hierarchy
// ("memory", "cpu,cpuacct", "" for the unified one), where that is a
// roost group.
func ownHierarchies() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroups: %w", err)
	}
	own := map[string]string{}
	for line := range strings.Lines(string(b)) {
		parts := strings.SplitN(strings.TrimSpace(line), ":", 3)
		if len(parts) == 3 && strings.HasPrefix(parts[2], "/roost") {
			own[parts[1]] = parts[2]
		}
	}
	return own, nil
}

// HostCgroupMounts lists the host's cgroupfs mounts below /sys/fs/cgroup
// from this process's mountinfo, for Config.CgroupMounts. Reading
// mountinfo costs time in proportion to the host's mounts (a dozen for
// every running sandbox), so the driver reads it once rather than every
// init at every start.
func HostCgroupMounts() ([]CgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	out := []CgroupMount{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, after := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(after) < 3 {
			continue
		}
		target := fields[4]
		if (after[0] != "cgroup" && after[0] != "cgroup2") || !strings.HasPrefix(target, hostCgroupRoot) {
			continue
		}
		out = append(out, CgroupMount{Target: target, V2: after[0] == "cgroup2", Options: strings.Split(after[2], ",")})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// group is the process's group in m's hierarchy, if it is a roost group:
// own's entry whose controller list m's options hold.
func (m CgroupMount) group(own map[string]string) (string, bool) {
	if m.V2 {
		g, ok := own[""]
		return g, ok
	}
	for key, g := range own {
		if key != "" && !slices.ContainsFunc(strings.Split(key, ","), func(c string) bool { return !slices.Contains(m.Options, c) }) {
			return g, true
		}
	}
	return "", false
}

// mountCgroups covers root's /sys/fs/cgroup with the sandbox's own view
// of the host's cgroupfs mounts; nil mounts are read from mountinfo.
func mountCgroups(root string, own map[string]string, mounts []CgroupMount) error {
	if mounts == nil {
		var err error
		if mounts, err = HostCgroupMounts(); err != nil {
			return err
		}
	}
	dir := filepath.Join(root, hostCgroupRoot)
	if len(mounts) == 1 && mounts[0].Target == hostCgroupRoot && mounts[0].V2 {
		g, ok := mounts[0].group(own)
		if !ok {
			return mountEmpty(dir)
		}
		return bindReadOnly(filepath.Join(hostCgroupRoot, g), dir)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "mode=755,size=64k"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", hostCgroupRoot, err)
	}
	for _, m := range mounts {
		g, ok := m.group(own)
		if !ok || m.Target == hostCgroupRoot {
			continue
		}
		target := filepath.Join(dir, strings.TrimPrefix(m.Target, hostCgroupRoot))
		if err := os.MkdirAll(target, 0o555); err != nil {
			return err
		}
		if err := bindReadOnly(filepath.Join(m.Target, g), target); err != nil {
			return err
		}
	}
	return remountReadOnly(dir)
}

// bindReadOnly binds the host's group directory src onto target.
func bindReadOnly(src, target string) error {
	if err := syscall.Mount(src, target, "", syscall.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, target, err)
	}
	if err := syscall.Mount("", target, "", syscall.MS_BIND|syscall.MS_REMOUNT|cgroupMountFlags, ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", target, err)
	}
	return nil
}

// mountEmpty covers dir with an empty read-only tmpfs.
func mountEmpty(dir string) error {
	if err := syscall.Mount("tmpfs", dir, "tmpfs", cgroupMountFlags, "mode=755,size=4k"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	return nil
}

func remountReadOnly(dir string) error {
	if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|cgroupMountFlags, "mode=755,size=64k"); err != nil {
		return fmt.Errorf("remount %s read-only: %w", dir, err)
	}
	return nil
}
