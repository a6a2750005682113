package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/guest"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/wire"
)

// Firecracker runs jailed: chrooted into its jail, as the VMM's uid and
// gid, in new pid and mount namespaces, and in the sandbox's network
// namespace (which the launcher enters: no new one), with the paths it
// sees inside.
func TestLauncherCommandLine(t *testing.T) {
	j := jail{stateDir: "/var/lib/roost/sandboxes/abc123", id: "abc123", uid: 536870913, netns: "/run/netns/roost-abc123"}
	cmd, err := j.command("/opt/firecracker/firecracker")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/firecracker", "--api-sock", "/api.sock", "--id", "roost-abc123"}
	if cmd.Path != want[0] || !slices.Equal(cmd.Args, want) {
		t.Errorf("command %s %q, want %q", cmd.Path, cmd.Args, want)
	}
	a := cmd.SysProcAttr
	switch {
	case a == nil:
		t.Fatal("no SysProcAttr")
	case !a.Setsid:
		t.Error("not its own session")
	case a.Chroot != "/var/lib/roost/sandboxes/abc123/firecracker/abc123/root":
		t.Errorf("chroot %q, want the jailer's layout", a.Chroot)
	case a.Credential == nil || a.Credential.Uid != 536870913 || a.Credential.Gid != 536870913 || len(a.Credential.Groups) != 0:
		t.Errorf("credential %+v, want the vmm's uid and gid, no groups", a.Credential)
	case a.Cloneflags&syscall.CLONE_NEWPID == 0 || a.Cloneflags&syscall.CLONE_NEWNS == 0:
		t.Errorf("clone flags %#x: want new pid and mount namespaces", a.Cloneflags)
	case a.Cloneflags&syscall.CLONE_NEWNET != 0:
		t.Error("the launcher makes a new network namespace; it must enter the sandbox's")
	}
	if cmd.Dir != "/" {
		t.Errorf("runs in %q, want the jail's root", cmd.Dir)
	}
	if _, err := (jail{stateDir: j.stateDir, id: j.id}).command("/opt/firecracker/firecracker"); err == nil {
		t.Error("launched firecracker with no uid of its own (root)")
	}
}

// With the jailer next to firecracker, the jailer does the jail's steps:
// its command line says which, and Firecracker's own arguments follow.
func TestJailerCommandLine(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"firecracker", "jailer"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	jailer := findJailer(filepath.Join(dir, "firecracker"))
	if jailer != filepath.Join(dir, "jailer") {
		t.Fatalf("jailer %q, want the one next to firecracker", jailer)
	}
	j := jail{stateDir: "/var/lib/roost/sandboxes/abc123", id: "abc123", uid: 536870913, netns: "/run/netns/roost-abc123", jailer: jailer}
	cmd, err := j.command(filepath.Join(dir, "firecracker"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{jailer, "--id", "abc123", "--exec-file", filepath.Join(dir, "firecracker"),
		"--uid", "536870913", "--gid", "536870913", "--chroot-base-dir", "/var/lib/roost/sandboxes/abc123",
		"--netns", "/run/netns/roost-abc123", "--", "--api-sock", "/api.sock", "--id", "roost-abc123"}
	if !slices.Equal(cmd.Args, want) {
		t.Errorf("jailer command %q, want %q", cmd.Args, want)
	}
	if a := cmd.SysProcAttr; a == nil || !a.Setsid || a.Cloneflags&syscall.CLONE_NEWPID == 0 || a.Credential != nil {
		t.Errorf("jailer SysProcAttr %+v: want root (it drops itself), its own session, a new pid namespace", a)
	}
	if got := jailerRoot(j.stateDir, j.id); got != "/var/lib/roost/sandboxes/abc123/firecracker/abc123/root" {
		t.Errorf("jail root %s is not where the jailer puts it", got)
	}
}

func TestBootArgs(t *testing.T) {
	spec := runtime.Spec{ID: "sb1", Env: map[string]string{"A": "1"}}
	line := New(Config{}, nil).vmm.bootArgs(spec)
	for _, want := range []string{"console=ttyS0", "init=/.roost/init", "roost.ip=10.0.2.2/30,10.0.2.1", "roost.hostname=sb1"} {
		if !strings.Contains(line, want) {
			t.Errorf("boot args %q lack %q", line, want)
		}
	}
	if strings.Contains(line, "root=") && !strings.Contains(line, "roost.root=") {
		t.Errorf("boot args %q name the root device; Firecracker adds it", line)
	}
	c, err := guest.ParseCmdline(line)
	if err != nil {
		t.Fatal(err)
	}
	if c.Address != microvm.GuestAddr || c.Hostname != "sb1" || c.Env["A"] != "1" {
		t.Errorf("guest parsed %+v", c)
	}
	if line := New(Config{Initrd: "/boot/initrd"}, nil).vmm.bootArgs(spec); strings.Contains(line, "init=/") {
		t.Errorf("with an initramfs the guest init comes from it, not init=: %q", line)
	}
}

func TestValidateRefusesWhatFirecrackerWould(t *testing.T) {
	tpl, envd := t.TempDir(), filepath.Join(t.TempDir(), "envd")
	os.WriteFile(envd, []byte("x"), 0o755)
	base := runtime.Spec{ID: "ok-1", StateDir: t.TempDir(), RootFS: tpl, Envd: envd, Network: runtime.Network{Netns: "/run/netns/x", Interface: "v", Address: microvm.GuestAddr}}
	d := New(Config{}, nil)
	if err := d.vmm.Validate(base); err != nil {
		t.Fatalf("valid spec: %v", err)
	}
	for name, mod := range map[string]func(*runtime.Spec){
		"underscore in id": func(s *runtime.Spec) { s.ID = "a_b" },
		"long id":          func(s *runtime.Spec) { s.ID = strings.Repeat("a", 60) },
		"33 vcpus":         func(s *runtime.Spec) { s.Limits.VCPUs = 33 },
		"no network":       func(s *runtime.Spec) { s.Network = runtime.Network{} },
		"long state dir":   func(s *runtime.Spec) { s.StateDir = "/" + strings.Repeat("d", 110) },
		"long environment": func(s *runtime.Spec) { s.Env = map[string]string{"A": strings.Repeat("a", 2048)} },
	} {
		s := base
		mod(&s)
		// Create refuses before it makes anything.
		if _, err := d.Create(context.Background(), s); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func TestProbeSaysWhatIsMissing(t *testing.T) {
	d := New(Config{DataDir: t.TempDir(), Firecracker: "/nonexistent/firecracker", KVM: "/nonexistent/kvm",
		Kernel: "/nonexistent/vmlinux", Init: "/nonexistent/roost-guest"}, nil)
	av := d.Probe(context.Background())
	if av.Available {
		t.Fatal("available without KVM, binary, kernel or init")
	}
	for _, want := range []string{"/nonexistent/kvm", "Firecracker needs KVM", "/nonexistent/firecracker not found", "/nonexistent/vmlinux not found", "roost-guest", "reflinks"} {
		if !strings.Contains(av.Reason, want) {
			t.Errorf("reason %q does not mention %q", av.Reason, want)
		}
	}
	bz := filepath.Join(t.TempDir(), "bzImage")
	os.WriteFile(bz, []byte("MZ\x00\x00not an elf"), 0o644)
	if err := checkKernel(bz); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("a bzImage as kernel: %v", err)
	}
}

func TestMergeDiff(t *testing.T) {
	dir := t.TempDir()
	base, diff := filepath.Join(dir, "base"), filepath.Join(dir, "diff")
	if err := writeFakeMemory(base, false); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "x"), nil, 0)
	f, _ := os.Create(diff)
	f.Truncate(16 << 10)
	f.WriteAt([]byte("AAAA"), 4<<10)
	f.WriteAt([]byte("BBBB"), 12<<10)
	f.Close()
	if err := mergeDiff(diff, base); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(base)
	if len(b) != 16<<10 || string(b[:4]) != "full" || string(b[4<<10:4<<10+4]) != "AAAA" || string(b[12<<10:12<<10+4]) != "BBBB" {
		t.Errorf("merged memory wrong: %q %q %q", b[:4], b[4<<10:4<<10+4], b[12<<10:12<<10+4])
	}
}

func TestCloneNeedsReflinks(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.WriteFile(src, []byte("image"), 0o600)
	err := cloneFile(src, filepath.Join(dir, "dst"))
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) == nil && st.Type == 0xef53 { // ext4
		if err == nil || !strings.Contains(err.Error(), "XFS or btrfs") {
			t.Errorf("clone on ext4: %v, want advice to use XFS or btrfs", err)
		}
	}
	if runtimetest.RequireRoot(t); true {
		dir := reflinkDir(t)
		src := filepath.Join(dir, "src")
		os.WriteFile(src, []byte("image"), 0o600)
		if err := cloneFile(src, filepath.Join(dir, "dst")); err != nil {
			t.Fatalf("clone on XFS: %v", err)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "dst")); string(b) != "image" {
			t.Errorf("clone holds %q", b)
		}
	}
}

// reflinkDir mounts a small XFS filesystem (which has reflinks) for the
// test's images and state directories.
func reflinkDir(t *testing.T) string {
	t.Helper()
	runtimetest.RequireRoot(t)
	mkfs, err := exec.LookPath("mkfs.xfs")
	if err != nil {
		t.Skip("mkfs.xfs not found (scripts/deps.sh installs xfsprogs)")
	}
	img := filepath.Join(t.TempDir(), "xfs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 512<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount XFS here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	})
	return mnt
}

// fakeEnv points new Firecracker processes of the driver at the fake and
// returns the file it logs requests to. The fake checks every request
// against the API descriptions (apiSpecFiles).
func fakeEnv(t *testing.T) string {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "requests.jsonl")
	t.Setenv(fakeLogEnv, logPath)
	t.Setenv(fakeSpecEnv, strings.Join(apiSpecFiles(t), string(filepath.ListSeparator)))
	return logPath
}

func readRequests(t *testing.T, path string) []fakeRequest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []fakeRequest
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r fakeRequest
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// testDriver is a driver whose Firecracker is the fake, with its images
// and state on XFS, and a sandbox spec with a real network slot.
func testDriver(t *testing.T, cfg Config) (*Driver, runtime.Spec, string) {
	t.Helper()
	r := newTestRig(t, cfg)
	return r.d, r.newSpec(t), r.logPath
}

// testRig is testDriver's setup, for tests that need several sandboxes.
type testRig struct {
	d            *Driver
	dir, logPath string
	tree, envd   string
	nm           *network.Manager
}

func newTestRig(t *testing.T, cfg Config) *testRig {
	t.Helper()
	dir := reflinkDir(t)
	logPath := fakeEnv(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	small := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("\x7fELF small stand-in for "+name), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg.DataDir, cfg.Firecracker = filepath.Join(dir, "data"), self
	cfg.Kernel, cfg.Init = small("vmlinux"), small("roost-guest")
	d := New(cfg, testLogger(t))
	d.vmm.noJail = true // the fake, a test binary, cannot run in a chroot (TestJailLayout checks the jail)

	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "etc"), 0o755)
	os.WriteFile(filepath.Join(tree, "etc", "hostname"), []byte("template\n"), 0o644)
	return &testRig{d: d, dir: dir, logPath: logPath, tree: tree, envd: small("envd"), nm: runtimetest.Network(t)}
}

// newSpec is the spec of a new sandbox with a real network slot, given
// back (and the sandbox destroyed) when the test ends.
func (r *testRig) newSpec(t *testing.T) runtime.Spec {
	t.Helper()
	slot, err := r.nm.Acquire()
	if err != nil {
		t.Fatal(err)
	}
	id := "fc" + runtimetest.ID()[1:9]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nw, err := r.nm.Setup(ctx, id, slot, false)
	if err != nil {
		r.nm.Release(slot)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.d.Destroy(context.Background(), id)
		_ = r.nm.Teardown(context.Background(), id, slot)
		r.nm.Release(slot)
	})
	return runtime.Spec{ID: id, StateDir: filepath.Join(r.dir, "sandboxes", id), RootFS: r.tree, Envd: r.envd,
		Limits: runtime.Limits{DiskMB: 64}, Network: nw, Metadata: map[string]string{"team": "blue"}}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func nsOf(t *testing.T, pid int, ns string) string {
	t.Helper()
	l, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "ns", ns))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestDriverAgainstFake runs a sandbox's whole life through the driver,
// with the fake as Firecracker: every request must pass Firecracker's API
// description and state machine, and the launcher must put the process in
// the sandbox's network namespace and a mount namespace of its own.
func TestDriverAgainstFake(t *testing.T) {
	for _, diff := range []bool{false, true} {
		t.Run(map[bool]string{false: "full snapshots", true: "diff snapshots"}[diff], func(t *testing.T) {
			d, spec, logPath := testDriver(t, Config{DiffSnapshots: diff})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			inst, err := d.Create(ctx, spec)
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if inst.Envd.Addr() != spec.Network.Address.Addr() || inst.Envd.Port() != wire.EnvdPort || inst.Pid == 0 {
				t.Errorf("instance %+v", inst)
			}
			if got, want := nsOf(t, inst.Pid, "net"), netnsID(t, spec.Network.Netns); got != want {
				t.Errorf("firecracker in network namespace %s, want the sandbox's %s", got, want)
			}
			if nsOf(t, inst.Pid, "mnt") == nsOf(t, os.Getpid(), "mnt") {
				t.Error("firecracker shares the agent's mount namespace")
			}
			if _, err := os.Stat(paths(spec.StateDir).disk); err != nil {
				t.Errorf("no disk: %v", err)
			}
			if st, err := d.Stats(ctx, spec.ID); err != nil || st.MemoryLimit != uint64(microvm.DefaultLimits.MemoryMB)<<20 || st.MemoryBytes == 0 {
				t.Errorf("stats %+v, %v", st, err)
			}
			if err := d.Pause(ctx, spec.ID); err != nil {
				t.Fatalf("pause: %v", err)
			}
			if err := d.Resume(ctx, spec.ID); err != nil {
				t.Fatalf("resume: %v", err)
			}

			for round := 1; round <= 2; round++ {
				state, err := d.Snapshot(ctx, spec.ID)
				if err != nil {
					t.Fatalf("snapshot %d: %v", round, err)
				}
				file := paths(spec.StateDir).vmstate
				if _, err := os.Stat(file); err != nil {
					t.Errorf("snapshot file: %v", err)
				}
				if syscall.Kill(inst.Pid, 0) == nil {
					t.Errorf("firecracker %d still runs after the snapshot", inst.Pid)
				}
				mem, _ := os.ReadFile(paths(spec.StateDir).memory)
				if string(mem[:4]) != "full" || (diff && round == 2) != (string(mem[8<<10:8<<10+4]) == "diff") {
					t.Errorf("round %d: memory file does not hold the expected full/diff pages", round)
				}
				if inst, err = d.Restore(ctx, spec, state); err != nil {
					t.Fatalf("restore %d: %v", round, err)
				}
				if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("vm state file kept after restore: %v", err)
				}
				if _, err := os.Stat(paths(spec.StateDir).memory); diff != (err == nil) {
					t.Errorf("memory file after restore: %v (kept only as the base of diff snapshots)", err)
				}
			}

			// An agent restart: a new driver re-adopts the running VMM,
			// twice, from the state the agent kept; an agent of the
			// version before kept none, and the driver reads the
			// firecracker.json it wrote then.
			d2 := New(d.vmm.cfg, testLogger(t))
			for _, st := range []runtime.DriverState{inst.State, inst.State} {
				if again, err := d2.Recover(ctx, spec, st); err != nil || again.Pid != inst.Pid {
					t.Fatalf("recover: %+v, %v; want pid %d", again, err, inst.Pid)
				}
			}
			runtimetest.WriteLegacyState(t, spec.StateDir, legacyState, inst.State)
			if again, err := New(d.vmm.cfg, testLogger(t)).Recover(ctx, spec, runtime.DriverState{}); err != nil || again.Pid != inst.Pid {
				t.Fatalf("recover from the legacy state file: %+v, %v; want pid %d", again, err, inst.Pid)
			}
			// Prune spares known sandboxes and kills strays.
			strayDir := t.TempDir()
			if err := makeJailRoot(strayDir, "stray1"); err != nil {
				t.Fatal(err)
			}
			stray, err := d.vmm.command(&microvm.Machine{State: microvm.State{ID: "stray1", StateDir: strayDir}})
			if err != nil {
				t.Fatal(err)
			}
			if err := stray.Start(); err != nil {
				t.Fatal(err)
			}
			if err := d2.Prune(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if err := stray.Wait(); err == nil {
				t.Error("stray firecracker was not killed")
			}
			if syscall.Kill(inst.Pid, 0) != nil {
				t.Fatal("prune killed a known sandbox")
			}

			if err := d2.Destroy(ctx, spec.ID); err != nil {
				t.Fatalf("destroy: %v", err)
			}
			if _, err := os.Stat(paths(spec.StateDir).disk); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("disk after destroy: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
			if syscall.Kill(inst.Pid, 0) == nil {
				t.Error("firecracker still runs after destroy")
			}

			// The contract: every request passed the spec and the model,
			// and the driver sent every kind of request it can.
			seen := map[string]bool{}
			loaded, mmds := map[int]bool{}, map[int]bool{}
			for _, r := range readRequests(t, logPath) {
				if r.Error != "" {
					t.Errorf("%s %s %s: refused: %s", r.Method, r.Path, r.Body, r.Error)
				}
				switch {
				case r.Path == "/snapshot/load":
					loaded[r.Pid] = true
				case r.Path == "/mmds" && strings.Contains(string(r.Body), `"sandboxID":"`+spec.ID+`"`):
					mmds[r.Pid] = true
				}
				key := r.Path
				if strings.HasPrefix(key, "/drives/") || strings.HasPrefix(key, "/network-interfaces/") {
					key = resource(key)
				}
				seen[r.Method+" "+key] = true
			}
			want := []string{"GET /", "PUT /logger", "PUT /machine-config", "PUT /boot-source", "PUT /drives/", "PUT /network-interfaces/",
				"PUT /mmds/config", "PUT /mmds", "PUT /actions", "PATCH /vm", "PUT /snapshot/create", "PUT /snapshot/load"}
			for _, w := range want {
				if !seen[w] {
					t.Errorf("the driver never sent %s", w)
				}
			}
			// A snapshot does not hold MMDS contents: each restore puts
			// the sandbox's back.
			for pid := range loaded {
				if !mmds[pid] {
					t.Errorf("restored firecracker %d was not given the sandbox's MMDS contents", pid)
				}
			}
		})
	}
}

func netnsID(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return "net:[" + strconv.FormatUint(st.Ino, 10) + "]"
}

// A request Firecracker refuses fails Create with its fault message, and
// leaves nothing behind.
func TestCreateFailsCleanlyWhenRefused(t *testing.T) {
	d, spec, _ := testDriver(t, Config{})
	t.Setenv(fakeRefuseEnv, "/network-interfaces/eth0")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := d.Create(ctx, spec)
	if err == nil || !strings.Contains(err.Error(), "refused by the test") {
		t.Fatalf("create: %v, want the fault message", err)
	}
	if _, err := d.Stats(ctx, spec.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a failed sandbox stays known: %v", err)
	}
	if _, err := os.Stat(paths(spec.StateDir).disk); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("disk of a failed create: %v", err)
	}
	if vmms, _ := microvm.StrayVMMs("firecracker", "--id", microvm.NamePrefix+spec.ID); len(vmms) > 0 {
		t.Errorf("firecracker of a failed create still runs: %v", vmms)
	}
}
