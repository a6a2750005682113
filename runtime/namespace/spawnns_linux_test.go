package namespace

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"roost.dev/roost/mountinfo"
	"roost.dev/roost/runtime/proc"
)

// TestSpawnNamespace: the namespace inits start from holds what an init
// uses before its pivot_root and no other mount of the host's, however
// many the host has (sandboxes' disks and roots among them), and a copy
// of it with a sandbox's tree attached is just as small.
func TestSpawnNamespace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount namespaces")
	}
	// A host with many mounts of its own, in a directory of the test's.
	host := t.TempDir()
	const extra = 200
	for i := range extra {
		dir := filepath.Join(host, fmt.Sprint(i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("roost-test-host", dir, "tmpfs", 0, "size=4k"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	}
	// A sandbox's root tree: a mount with one below it.
	rootfs := filepath.Join(host, "rootfs")
	for _, dir := range []string{rootfs, rootfs + "/sys"} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("roost-test-root", dir, "tmpfs", 0, "size=4k"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	}

	d := &Driver{}
	ns, err := d.spawnNamespace()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := d.spawnNamespace(); err != nil || again != ns {
		t.Fatalf("a second call made another namespace: %d, %v (first %d)", again, err, ns)
	}
	want := []string{"/", "/dev", "/proc", "/sys/fs/cgroup"}
	got := mountsIn(t, func() error {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return err
		}
		return unix.Setns(ns, unix.CLONE_NEWNS)
	})
	if !slices.Equal(topMounts(got), want) {
		t.Errorf("spawn namespace's mounts (but for the cgroup hierarchies): %v, want %v", topMounts(got), want)
	}
	for _, m := range got {
		if m.Source == "roost-test-host" || m.Source == "roost-test-root" {
			t.Errorf("spawn namespace holds the host's mount at %s", m.Target)
		}
	}

	tree, err := openRootTree(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tree)
	started := mountsIn(t, func() error { return enterSpawnNS(ns, tree) })
	want = append(want, spawnRoot, spawnRoot+"/sys")
	slices.Sort(want)
	if !slices.Equal(topMounts(started), want) {
		t.Errorf("a start's namespace's mounts: %v, want %v", topMounts(started), want)
	}
	if len(started) > len(got)+2 {
		t.Errorf("a start's namespace holds %d mounts, the spawn namespace %d: want 2 more", len(started), len(got))
	}
}

// mountsIn is the mount table of a thread (ended afterwards) that ran
// enter.
func mountsIn(t *testing.T, enter func() error) []mountinfo.Mount {
	t.Helper()
	var ms []mountinfo.Mount
	err := proc.OnThrowawayThread(func() error {
		if err := enter(); err != nil {
			return err
		}
		f, err := os.Open("/proc/thread-self/mountinfo")
		if err != nil {
			return err
		}
		defer f.Close()
		ms, err = mountinfo.Parse(f)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// topMounts are the mount points of ms, sorted, the ones below
// /sys/fs/cgroup left out (the host's hierarchies vary).
func topMounts(ms []mountinfo.Mount) []string {
	var out []string
	for _, m := range ms {
		if !strings.HasPrefix(m.Target, "/sys/fs/cgroup/") {
			out = append(out, m.Target)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
