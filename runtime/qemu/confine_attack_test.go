package qemu_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"roost.dev/roost/cgroup"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
	"roost.dev/roost/runtime/runtimetest"
)

// A guest that takes over its QEMU holds a process that is not host root:
// its uid and gid are its own (not 0, no capabilities, no groups), the
// seccomp filter with spawn, privilege, obsolete and resource-control
// denials is on (Seccomp: 2), and it sits in a cgroup of its own whose
// memory limit is the guest's memory plus a bounded overhead. The sandbox
// still runs commands, pauses and resumes, and hibernates and restores
// into a QEMU confined the same way.
func TestAttackVMMRunsConfined(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	d := newDriver(t)
	nw := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, nw, runtimetest.Options{Limits: runtime.Limits{MemoryMB: 384, VCPUs: 1}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pid := sb.Instance.Pid
	checkConfined(t, sb.Spec.ID, pid, 384)
	// The guest touches most of its memory: QEMU's resident memory grows
	// to it, within the cgroup's limit, and QEMU is not killed for it.
	sb.MustExec(t, "python3 -c 'b = b\"x\" * (200 << 20); print(len(b))'")
	if st, err := d.Stats(ctx, sb.Spec.ID); err != nil || st.MemoryBytes < 200<<20 {
		t.Errorf("qemu's memory after the guest filled its own: %+v, %v", st, err)
	} else {
		t.Logf("qemu resident: %d MiB", st.MemoryBytes>>20)
	}

	if err := d.Pause(ctx, sb.Spec.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.Resume(ctx, sb.Spec.ID); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(sb.MustExec(t, "echo alive")); got != "alive" {
		t.Fatalf("after pause/resume: %q", got)
	}

	state, err := d.Snapshot(ctx, sb.Spec.ID)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if _, err := os.Stat(vmmCgroup(sb.Spec.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a hibernated sandbox's vmm cgroup stays: %v", err)
	}
	inst, err := d.Restore(ctx, sb.Spec, state)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := runtimetest.WaitHealthy(ctx, "http://"+inst.Envd.String()); err != nil {
		t.Fatal(err)
	}
	checkConfined(t, sb.Spec.ID, inst.Pid, 384)
	if got := strings.TrimSpace(sb.MustExec(t, "echo restored")); got != "restored" {
		t.Fatalf("after restore: %q", got)
	}
}

// A guest that took over its QEMU tries to reach another sandbox's: as
// its VMM's uid it can neither signal nor ptrace the other QEMU, nor
// read the other's disk or QMP socket. Both sandboxes still run commands.
func TestAttackVMMReachesOtherVMM(t *testing.T) {
	if testing.Short() {
		t.Skip("boots two VMs")
	}
	d := newDriver(t)
	nw := runtimetest.Network(t)
	a := runtimetest.Start(t, d, nw, runtimetest.Options{})
	b := runtimetest.Start(t, d, nw, runtimetest.Options{})
	uidA, uidB := procIDs(t, a.Instance.Pid, "Uid:"), procIDs(t, b.Instance.Pid, "Uid:")
	if uidA == uidB {
		t.Fatalf("two sandboxes' vmms share uid %d", uidA)
	}
	// The attacker: a process with VMM a's credentials, as a shell a
	// compromised QEMU could run if it could spawn one.
	bPid := strconv.Itoa(b.Instance.Pid)
	for _, attack := range []string{
		"kill -STOP " + bPid,
		"cat /proc/" + bPid + "/environ",
		"cat /proc/" + bPid + "/mem",
		"head -c1 " + filepath.Join(b.Spec.StateDir, "disk.qcow2"),
		"ls " + b.Spec.StateDir,
		"echo x > " + filepath.Join(b.Spec.StateDir, "qmp.sock"),
	} {
		cmd := exec.Command("sh", "-c", attack)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uidA), Gid: uint32(uidA)}}
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("as vmm a's uid, %q succeeded: %s", attack, out)
		}
	}
	for _, sb := range []*runtimetest.Sandbox{a, b} {
		if got := strings.TrimSpace(sb.MustExec(t, "echo ok")); got != "ok" {
			t.Errorf("sandbox %s after the attack: %q", sb.Spec.ID, got)
		}
	}
}

// checkConfined checks QEMU pid of sandbox id as the host sees it.
func checkConfined(t *testing.T, id string, pid, memoryMB int) {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("no vmm pid")
	}
	for _, f := range []string{"Uid:", "Gid:"} {
		if n := procIDs(t, pid, f); n == 0 {
			t.Errorf("qemu's %s is 0 (root)", f)
		}
	}
	status := procStatus(t, pid)
	fields := map[string]string{}
	for _, line := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	// Seccomp 2 is a filter; no capabilities; no supplementary groups.
	for k, want := range map[string]string{"Seccomp": "2", "CapEff": "0000000000000000", "CapPrm": "0000000000000000", "Groups": ""} {
		if fields[k] != want {
			t.Errorf("qemu's %s is %q, want %q", k, fields[k], want)
		}
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cmdline), "-sandbox\x00on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny\x00") {
		t.Errorf("qemu runs without the seccomp policy: %q", cmdline)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if !strings.Contains(string(cg), "/roost-vm/"+id+"\n") {
		t.Errorf("qemu is not in its cgroup: %s", cg)
	}
	h, err := cgroup.Detect()
	if err != nil {
		t.Fatal(err)
	}
	g, err := h.Load("roost-vm/" + id)
	if err != nil {
		t.Fatal(err)
	}
	st, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	max := uint64(microvm.VMMLimits(runtime.Limits{MemoryMB: memoryMB}, 1024).MemoryBytes)
	if st.MemoryLimit == 0 || st.MemoryLimit <= uint64(memoryMB)<<20 || st.MemoryLimit > max {
		t.Errorf("qemu's cgroup memory limit %d, want above the guest's %d MiB and at most %d", st.MemoryLimit, memoryMB, max)
	}
	procs, _ := g.Procs()
	if len(procs) != 1 || procs[0] != pid {
		t.Errorf("qemu's cgroup holds %v, want only qemu %d", procs, pid)
	}
}

// procIDs is the real uid (or gid) in a /proc/pid/status line, after
// checking all four (real, effective, saved, filesystem) agree.
func procIDs(t *testing.T, pid int, field string) int {
	t.Helper()
	for _, line := range strings.Split(procStatus(t, pid), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			for _, x := range f[1:] {
				if x != f[0] {
					t.Errorf("%s %v: ids differ", field, f)
				}
			}
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func procStatus(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// vmmCgroup is one of the directories of sandbox id's vmm cgroup.
func vmmCgroup(id string) string {
	for _, d := range []string{"/sys/fs/cgroup/roost-vm", "/sys/fs/cgroup/memory/roost-vm"} {
		if _, err := os.Stat(d); err == nil {
			return filepath.Join(d, id)
		}
	}
	return "/sys/fs/cgroup/roost-vm/" + id
}
