package namespace

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/mountinfo"

	"roost.dev/roost/cgroup"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/console"
	"roost.dev/roost/runtime/namespace/sandboxinit"
	"roost.dev/roost/runtime/proc"
)

// startInit launches the sandbox's init in new namespaces inside the
// sandbox's network namespace, places it in its cgroup, hands it its
// config, and waits for it to report that envd runs. The sandbox reads
// bootID as its boot id. The init is not tied to the agent: it outlives a
// crash or restart of the agent.
func (d *Driver) startInit(ctx context.Context, spec runtime.Spec, ids int, group *cgroup.Group, cfg sandboxinit.Config, bootID string) (proc.Process, error) {
	if err := d.confinement(&cfg); err != nil {
		return proc.Process{}, err
	}
	// The init runs as the sandbox's root, an unprivileged host user that
	// may not traverse the directories holding the init binary or envd: it
	// gets both as open files. The sandbox's root it must reach by path, in
	// its own mount namespace, so Create made that path traversable.
	self, err := os.Open(d.cfg.Init)
	if err != nil {
		return proc.Process{}, fmt.Errorf("open sandbox init (build cmd/roost-init): %w", err)
	}
	defer self.Close()
	envd, err := os.Open(spec.Envd)
	if err != nil {
		return proc.Process{}, fmt.Errorf("open envd: %w", err)
	}
	defer envd.Close()
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return proc.Process{}, err
	}
	defer cfgR.Close()
	defer cfgW.Close()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return proc.Process{}, err
	}
	defer statusR.Close()
	defer statusW.Close()
	// The init's output, and envd's, reaches the log through a pipe the
	// agent drains within bounds: the sandbox's root can write to it.
	logPath := filepath.Join(spec.StateDir, runtime.LogFile)
	logf, err := console.Pipe(d.log.With("sandbox", spec.ID), logPath)
	if err != nil {
		return proc.Process{}, err
	}
	defer logf.Close()

	cmd := exec.Command(fmt.Sprintf("/proc/self/fd/%d", sandboxinit.FDSelf))
	// No sandbox ID in its command line, which the sandbox's ps shows: a
	// warm pool's sandbox gets its ID only when a create claims it.
	cmd.Args = []string{"roost-init"}
	// One P is plenty for an init that mostly sleeps in wait4, and keeps
	// its thread count (which counts against pids limits) low.
	// The Go runtime of the init would otherwise keep the host's cgroup
	// files open to follow CPU limits: files from outside the sandbox's
	// mount namespace, which a hibernation could not restore.
	cmd.Env = []string{sandboxinit.ModeEnv + "=" + sandboxinit.ModeInit, "GOMAXPROCS=1", "GODEBUG=containermaxprocs=0,updatemaxprocs=0"}
	// Its stdin opened here, in the host's mount namespace: os/exec would
	// open /dev/null on the starting thread, in the spawn namespace, whose
	// mounts no sandbox holds (CRIU could not dump the descriptor).
	null, err := os.Open(os.DevNull)
	if err != nil {
		return proc.Process{}, err
	}
	defer null.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, logf, logf
	cmd.ExtraFiles = []*os.File{cfgR, statusW, envd, self} // fds 3 to 6
	caps, err := everyCapability()
	if err != nil {
		return proc.Process{}, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: vforkUserns | syscall.CLONE_NEWUSER | syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		// The agent's uid is not mapped in the new namespace until the
		// driver writes the maps, after the exec: ambient, the
		// capabilities the init has there as its creator survive the exec
		// (an unmapped process keeps none otherwise). The init becomes
		// the sandbox's root, and drops its ambient set, once the maps
		// are written (sandboxinit.IDsMapped).
		AmbientCaps: caps,
		Setsid:      true,
	}
	// Started from a small mount namespace holding the sandbox's root
	// tree (spawnns_linux.go); reaped if it ends while this agent runs.
	ns, err := d.spawnNamespace()
	if err != nil {
		return proc.Process{}, err
	}
	tree, err := openRootTree(cfg.RootFS)
	if err != nil {
		return proc.Process{}, err
	}
	defer unix.Close(tree)
	// Born in its cgroup from a thread that joined it (Group.JoinThread):
	// not moved into it after the start, which took a host-wide lock.
	prepare := func() (func() error, error) {
		fd, leave, err := group.JoinThread()
		if err != nil {
			return nil, err
		}
		if err := enterSpawnNS(ns, tree); err != nil {
			return nil, errors.Join(err, leave())
		}
		if fd >= 0 {
			cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
		}
		return leave, nil
	}
	p, exited, err := proc.StartPrepared(spec.Network.Netns, prepare, cmd)
	if err != nil {
		return proc.Process{}, fmt.Errorf("start init: %w", err)
	}
	kill := func() { p.Kill(exited) }
	statusW.Close()
	cfgR.Close()
	if err := writeIDMaps(p.Pid, idMap(hostID(ids))); err != nil {
		kill()
		return proc.Process{}, fmt.Errorf("sandbox init: %w", err)
	}
	if _, err := cfgW.Write([]byte{sandboxinit.IDsMapped}); err != nil {
		kill()
		return proc.Process{}, fmt.Errorf("sandbox init: %w", err)
	}
	status := readStatus(statusR)
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	next := func() (string, error) {
		select {
		case a := <-status:
			if a.err == nil && !strings.HasPrefix(a.line, "error: ") {
				return a.line, nil
			}
			msg := strings.TrimPrefix(a.line, "error: ")
			if msg == "" {
				console.Wait(logPath, time.Second) // the init's last words
				msg = "init exited during setup: " + tail(logPath)
			}
			return "", fmt.Errorf("sandbox init: %s", msg)
		case <-ctx.Done():
			return "", ctx.Err()
		case <-timer.C:
			return "", fmt.Errorf("sandbox init did not report within %v", startTimeout)
		}
	}
	line, err := next()
	if err == nil {
		err = attachProc(p.Pid, spec.StateDir, cfg.RootFS, line, bootID)
	}
	if err != nil {
		kill()
		return proc.Process{}, err
	}
	initCfg := cfg
	initCfg.RootFS = spawnRoot // where the init has it
	if err := json.NewEncoder(cfgW).Encode(initCfg); err != nil {
		kill()
		return proc.Process{}, fmt.Errorf("send init config: %w", err)
	}
	cfgW.Close()
	if line, err = next(); err == nil && line != "ok" {
		err = fmt.Errorf("sandbox init: unexpected %q", line)
	}
	if err != nil {
		kill()
		return proc.Process{}, err
	}
	return p, nil
}

// vforkUserns are the clone flags that start a process in a new user
// namespace as os/exec starts every other: sharing the agent's memory
// until it executes (vfork). os/exec otherwise copies the agent's page
// tables for a child that makes a user namespace, so that the child can
// wait for its ID maps before it executes; a cost that grows with the
// agent's memory, that is, with the sandboxes it runs, and that stalls
// the agent's other threads while it lasts. Such a child executes
// unmapped, and the driver writes its maps once it runs (writeIDMaps).
const vforkUserns = syscall.CLONE_VM | syscall.CLONE_VFORK

// everyCapability lists the capabilities this kernel knows: an init's
// ambient set.
var everyCapability = sync.OnceValues(func() ([]uintptr, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return nil, err
	}
	last, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("cap_last_cap: %w", err)
	}
	caps := make([]uintptr, last+1)
	for c := range caps {
		caps[c] = uintptr(c)
	}
	return caps, nil
})

// statusAnswer is a line the init wrote on its status pipe, or the error
// that ended the pipe.
type statusAnswer struct {
	line string
	err  error
}

// readStatus reads the init's status lines (at most the two it writes,
// then the end of the pipe) until the pipe ends, which it does when the
// init reported or died, or when startInit returns and closes r.
func readStatus(r *os.File) <-chan statusAnswer {
	const most = 3
	ch := make(chan statusAnswer, most)
	go func() {
		br := bufio.NewReader(r)
		for range most {
			line, err := br.ReadString('\n')
			ch <- statusAnswer{strings.TrimSpace(line), err}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = s[len(s)-2000:]
	}
	return s
}

// Destroy implements runtime.Runtime.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	h, err := d.handles.Get(id)
	if err != nil {
		return err
	}
	h.closeMeter()
	if err := d.teardown(ctx, h.rec, h.group); err != nil {
		return err
	}
	d.handles.Delete(id)
	h.log.Info("sandbox destroyed")
	return nil
}

// teardown kills a sandbox's processes and removes its mounts, cgroup and
// files. Every step tolerates what an earlier, interrupted teardown left.
func (d *Driver) teardown(ctx context.Context, rec record, group *cgroup.Group) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var errs []error
	if group == nil {
		if g, err := d.cgrp.Load(cgroupName(rec.ID)); err == nil {
			group = g
		}
	}
	if group != nil {
		if err := group.Delete(ctx); err != nil {
			errs = append(errs, fmt.Errorf("delete cgroup: %w", err))
		}
	} else {
		rec.Kill(nil)
	}
	image, disk, rootfs := paths(rec.StateDir)
	// Detaching the root takes what is mounted below it (/proc, /sys).
	for _, m := range []string{rootfs, lowerPath(rec.StateDir), procStaging(rec.StateDir), bootIDStaging(rec.StateDir), disk} {
		if err := unmount(m); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range []string{image, filepath.Join(rec.StateDir, legacyState)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(imagesDir(rec.StateDir)); err != nil {
		errs = append(errs, err)
	}
	_ = os.Remove(rootfs)
	_ = os.Remove(lowerPath(rec.StateDir))
	_ = os.Remove(procStaging(rec.StateDir))
	_ = os.Remove(bootIDStaging(rec.StateDir))
	_ = os.Remove(disk)
	if err := d.releaseIDs(rec.IDs, rec.ID); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Recover implements runtime.Runtime.
func (d *Driver) Recover(ctx context.Context, spec runtime.Spec, st runtime.DriverState) (runtime.Instance, error) {
	if h, err := d.handles.Get(spec.ID); err == nil {
		return h.rec.instance() // already adopted
	}
	log := d.log.With("sandbox", spec.ID)
	rec, err := loadRecord(spec, st)
	if err != nil {
		log.Info("sandbox not recoverable, cleaning up", "reason", err.Error())
		_ = d.teardown(ctx, record{ID: spec.ID, StateDir: spec.StateDir}, nil)
		return runtime.Instance{}, fmt.Errorf("sandbox %s: %w", spec.ID, errdefs.ErrNotFound)
	}
	if rec.Hibernation != nil {
		return d.recoverStopped(ctx, spec, rec, rec.Hibernation.Images)
	}
	if rec.Halted {
		image, _, _ := paths(spec.StateDir)
		return d.recoverStopped(ctx, spec, rec, image)
	}
	group, gerr := d.cgrp.Load(rec.Cgroup)
	if !rec.Alive() || gerr != nil {
		log.Info("sandbox init gone, cleaning up", "pid", rec.Pid)
		_ = d.teardown(ctx, rec, nil)
		return runtime.Instance{}, fmt.Errorf("sandbox %s: %w", spec.ID, errdefs.ErrNotFound)
	}
	r, err := d.handles.Reserve(spec.ID)
	if err != nil {
		h, gerr := d.handles.Get(spec.ID)
		if gerr != nil {
			return runtime.Instance{}, err
		}
		return h.rec.instance()
	}
	defer r.Release()
	d.mu.Lock()
	d.ids.adoptLocked(rec.IDs, spec.ID)
	d.mu.Unlock()
	// The init holds the console pipe as its stdout and stderr.
	if err := console.Attach(log, filepath.Join(spec.StateDir, runtime.LogFile), rec.Pid, 1, 2); err != nil {
		log.Warn("sandbox console not drained; its output is lost", "err", err)
	}
	r.Publish(&handle{rec: rec, group: group, log: log})
	log.Info("sandbox re-adopted", "pid", rec.Pid)
	return rec.instance()
}

// Prune implements runtime.Runtime.
func (d *Driver) Prune(ctx context.Context, keep []string) error {
	known := func(id string) bool { return slices.Contains(keep, id) || d.handles.Known(id) }
	ms, err := mountinfo.Read()
	if err != nil {
		return fmt.Errorf("read mounts: %w", err)
	}
	var errs []error
	for _, m := range ms {
		id, ok := overlaySandbox(m)
		if !ok || known(id) {
			continue
		}
		stateDir := strings.TrimSuffix(m.Target, "/rootfs")
		d.log.Info("removing leftover sandbox mounts", "sandbox", id, "dir", stateDir)
		if err := d.teardown(ctx, record{ID: id, StateDir: stateDir}, nil); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.pruneLowers(ms); err != nil {
		errs = append(errs, err)
	}
	if err := d.pruneCgroups(ctx, known); err != nil {
		errs = append(errs, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ids.pruneLocked(known); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// pruneCgroups deletes the roost cgroups of sandboxes not known.
func (d *Driver) pruneCgroups(ctx context.Context, known func(id string) bool) error {
	groups, err := d.cgrp.List("roost")
	if err != nil {
		return fmt.Errorf("list cgroups: %w", err)
	}
	var errs []error
	for _, name := range groups {
		id := strings.TrimPrefix(name, "roost/")
		if known(id) {
			continue
		}
		d.log.Info("removing leftover sandbox cgroup", "sandbox", id)
		if g, err := d.cgrp.Load(name); err == nil {
			if err := g.Delete(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// pruneLowers unmounts the idmapped template mounts older drivers shared
// between sandboxes, once no sandbox this driver knows uses them: a
// removed template's tree is not kept busy. (An overlay keeps its own
// copy of its layers' mounts, so a sandbox the driver does not know of
// loses nothing either.)
func (d *Driver) pruneLowers(ms []mountinfo.Mount) error {
	inUse := map[string]bool{}
	for _, h := range d.handles.All() {
		inUse[h.rec.LowerPath] = true
	}
	prefix := filepath.Join(d.cfg.DataDir, "lower") + "/"
	var errs []error
	for _, m := range ms {
		if !strings.HasPrefix(m.Target, prefix) || inUse[m.Target] {
			continue
		}
		d.log.Info("unmounting unused template mount", "path", m.Target)
		if err := unmount(m.Target); err != nil {
			errs = append(errs, err)
			continue
		}
		_ = os.Remove(m.Target)
	}
	return errors.Join(errs...)
}

// Stats implements runtime.Runtime.
func (d *Driver) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	h, err := d.running(id)
	if err != nil {
		return runtime.Stats{}, err
	}
	return h.stats()
}

// Pause implements runtime.Pauser: the cgroup freezer stops every process
// in the sandbox where it is.
func (d *Driver) Pause(ctx context.Context, id string) error {
	h, err := d.running(id)
	if err != nil {
		return err
	}
	return h.group.Freeze(ctx)
}

// Resume implements runtime.Pauser.
func (d *Driver) Resume(ctx context.Context, id string) error {
	h, err := d.running(id)
	if err != nil {
		return err
	}
	return h.group.Thaw(ctx)
}

// hostResolv is the host's resolver configuration (search domains,
// options) with dns as its nameservers: the resolvers the network manager
// opened to the sandbox (runtime.Network.DNS). Without dns, the host's
// nameservers less loopback ones, which mean nothing inside a sandbox's
// network namespace.
func hostResolv(dns []netip.Addr) string {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && dns == nil {
		return ""
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" && (dns != nil || strings.HasPrefix(f[1], "127.") || f[1] == "::1") {
			continue
		}
		out = append(out, line)
	}
	for _, a := range dns {
		out = append(out, "nameserver "+a.String())
	}
	return strings.Trim(strings.Join(out, "\n"), "\n") + "\n"
}

// running returns the handle of sandbox id, which must be running (not
// hibernated or halted: it has no processes or cgroup then).
func (d *Driver) running(id string) (*handle, error) {
	h, err := d.handles.Get(id)
	if err != nil {
		return nil, err
	}
	if h.rec.Hibernation != nil {
		return nil, fmt.Errorf("sandbox %s is hibernated: %w", id, errdefs.ErrConflict)
	}
	if h.rec.Halted {
		return nil, fmt.Errorf("sandbox %s is halted: %w", id, errdefs.ErrConflict)
	}
	return h, nil
}

// recoverStopped re-adopts a hibernated or halted sandbox after an agent
// restart or a host reboot: kept, the files on disk it needs until
// Restore or Boot (its images, its disk image), is all it has.
func (d *Driver) recoverStopped(ctx context.Context, spec runtime.Spec, rec record, kept string) (runtime.Instance, error) {
	log := d.log.With("sandbox", spec.ID, "halted", rec.Halted)
	if _, err := os.Stat(kept); err != nil {
		log.Info("stopped sandbox's files gone, cleaning up", "err", err)
		_ = d.teardown(ctx, rec, nil)
		return runtime.Instance{}, fmt.Errorf("sandbox %s: %w", spec.ID, errdefs.ErrNotFound)
	}
	r, err := d.handles.Reserve(spec.ID)
	if err != nil {
		if h, gerr := d.handles.Get(spec.ID); gerr == nil {
			return h.rec.instance()
		}
		return runtime.Instance{}, err
	}
	defer r.Release()
	d.mu.Lock()
	d.ids.adoptLocked(rec.IDs, spec.ID)
	d.mu.Unlock()
	r.Publish(&handle{rec: rec, log: log})
	log.Info("stopped sandbox re-adopted")
	return rec.instance()
}
