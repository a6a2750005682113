package firecracker

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"roost.dev/roost/runtime/runtimetest"
)

// A guest that takes over its Firecracker finds a jail: launched as the
// launcher launches it (no KVM here, so a static stand-in runs in
// Firecracker's place), the process runs as the VMM's uid and gid with
// no groups, is pid 1 of its own pid namespace, sees in its root only the
// jail's files (no /etc/passwd, no /proc of the host), and can neither
// chroot out nor become root. The jail holds the devices Firecracker
// opens, owned by the VMM's uid, and the root is closed to other users.
func TestAttackFirecrackerJail(t *testing.T) {
	runtimetest.RequireRoot(t)
	probe := filepath.Join(t.TempDir(), "firecracker")
	if b, err := exec.Command("go", "build", "-o", probe, "./testdata/jailprobe").CombinedOutput(); err != nil {
		t.Skipf("cannot build the stand-in: %v: %s", err, b)
	}
	const uid = 536870999
	stateDir := filepath.Join(t.TempDir(), "sb")
	kernel := filepath.Join(t.TempDir(), "vmlinux")
	os.WriteFile(kernel, []byte("kernel"), 0o644)
	if err := makeJailRoot(stateDir, "sb1"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(paths(stateDir).disk, []byte("disk"), 0o600)
	j := jail{stateDir: stateDir, id: "sb1", uid: uid}
	if err := j.prepare(probe, kernel, ""); err != nil {
		t.Fatal(err)
	}
	root := jailerRoot(stateDir, "sb1")
	for name, mode := range map[string]os.FileMode{"": os.ModeDir | 0o700, "rootfs.ext4": 0o600, "dev/kvm": os.ModeDevice | os.ModeCharDevice | 0o600, "dev/net/tun": os.ModeDevice | os.ModeCharDevice | 0o600} {
		st, err := os.Lstat(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode || st.Sys().(*syscall.Stat_t).Uid != uid {
			t.Errorf("jail /%s: mode %v owner %d, want %v owned by the vmm's uid", name, st.Mode(), st.Sys().(*syscall.Stat_t).Uid, mode)
		}
	}
	if got, _ := os.Readlink(jailDir(stateDir)); got != root {
		t.Errorf("%s links to %q, want %s", jailDir(stateDir), got, root)
	}

	cmd, err := j.command(probe)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("jailed launch: %v", err)
	}
	var got struct {
		UID, GID, Pid                int
		Groups                       []int
		Root                         []string
		Passwd, Proc, Chroot, Setuid bool
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	slices.Sort(got.Root)
	switch {
	case got.UID != uid || got.GID != uid || len(got.Groups) != 0:
		t.Errorf("runs as uid %d gid %d groups %v, want %d and none", got.UID, got.GID, got.Groups, uid)
	case got.Pid != 1:
		t.Errorf("pid %d: not in a pid namespace of its own", got.Pid)
	case !slices.Equal(got.Root, []string{"dev", "firecracker", "rootfs.ext4", "vmlinux"}):
		t.Errorf("its root holds %v, want only the jail's files", got.Root)
	case got.Passwd || got.Proc:
		t.Error("the host's files are reachable from the jail")
	case got.Chroot || got.Setuid:
		t.Errorf("the jailed process could chroot (%v) or become root (%v)", got.Chroot, got.Setuid)
	}
	// The jail still works for its use: the same launch runs again.
	again, _ := j.command(probe)
	if err := again.Run(); err != nil {
		t.Errorf("second jailed launch: %v", err)
	}
}
