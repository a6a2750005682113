package namespace

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/cgroup"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/console"
	"roost.dev/roost/runtime/handles"
	"roost.dev/roost/runtime/namespace/sandboxinit"
	"roost.dev/roost/runtime/proc"
	"roost.dev/roost/wire"
)

// Hibernation writes a sandbox's processes and memory to disk with CRIU
// and ends them; Restore brings them back in a new pid namespace, in the
// network namespace the spec gives. What CRIU is told, and why:
//
//   - CRIU runs inside the sandbox's network namespace, so the namespace is
//     CRIU's own: it neither dumps it nor makes one on restore, and the
//     restored processes live in the one the manager prepared. (CRIU's
//     external netns needs the namespace to belong to the sandbox's user
//     namespace, which the manager's does not.)
//   - --tcp-close: established connections (envd's clients) are not kept;
//     listening sockets are. --network-lock skip: with the namespace not
//     CRIU's to dump, there is nothing to lock.
//   - The mounts the driver made from the host's mount namespace are
//     external: the device nodes bound from the host's /dev, the sysfs of
//     the network namespace (a user namespace cannot mount it) and the
//     empty tmpfs masks. Restore hands CRIU new ones. The procfs is CRIU's
//     to mount anew, in the new pid namespace.
//   - The init's and envd's executables live outside the sandbox's mount
//     namespace (the init was given them by descriptor): they are external
//     files, kept (content-addressed, in the data directory) so that a
//     restore maps the very bytes the processes ran, whatever replaced the
//     binaries since, and handed to CRIU with --inherit-fd.
//   - The init's output pipe becomes a new console pipe (--inherit-fd).
//   - --freeze-cgroup: CRIU stops the sandbox with its cgroup freezer,
//     whether or not the sandbox was paused, once the driver has frozen
//     it at a moment no process of it is in a vfork (vfork_linux.go).
//   - --file-locks, --link-remap: a held lock or an open unlinked file
//     does not stop a dump.
//
// Mounts CRIU restores are made in a mount namespace of the sandbox's user
// namespace, where they are not locked: once CRIU is done, relock replaces
// /proc and /sys and their masks with locked ones (relock_linux.go).

// hibernation is what the driver keeps of a hibernated sandbox.
type hibernation struct {
	// Images is the directory of CRIU's images.
	Images string `json:"images"`
	// Console is CRIU's name of the pipe the init writes its output to.
	Console string `json:"console,omitempty"`
	// Files are the host files the sandbox's processes held from outside
	// its mount namespace.
	Files []hostFile `json:"files,omitempty"`
	// Devices are the host device nodes bound into the sandbox (the
	// paths below /dev).
	Devices []string `json:"devices,omitempty"`
	// Limits are the sandbox's limits, for a restore whose spec has none.
	Limits runtime.Limits `json:"limits"`
}

// hostFile is a file a sandbox's process holds from outside the
// sandbox's mount namespace, as CRIU names it, and where a restore opens
// it.
type hostFile struct {
	Key  string `json:"key"`  // file[MNT:INO]
	Path string `json:"path"` // a kept copy
}

// Mount keys of the mounts a restore provides (see Snapshot).
const (
	keySys   = "sys"
	keyEmpty = "empty"
	keyDev   = "dev"
)

var _ runtime.Snapshotter = (*Driver)(nil)

// Snapshot implements runtime.Snapshotter. Where CRIU cannot dump the
// sandbox, the sandbox stays as it was (frozen if it was paused) and the
// error wraps errdefs.ErrUnsupported with CRIU's reason.
func (d *Driver) Snapshot(ctx context.Context, id string) (runtime.DriverState, error) {
	h, err := d.handles.Get(id)
	if err != nil {
		return runtime.DriverState{}, err
	}
	if h.rec.Hibernation != nil {
		return runtime.DriverState{}, fmt.Errorf("sandbox %s is hibernated already: %w", id, errdefs.ErrConflict)
	}
	if h.rec.Halted {
		return runtime.DriverState{}, fmt.Errorf("sandbox %s is halted: %w", id, errdefs.ErrConflict)
	}
	criu, err := d.criu()
	if err != nil {
		return runtime.DriverState{}, fmt.Errorf("hibernate sandbox %s: %w", id, err)
	}
	hib, args, err := d.dumpPlan(h)
	if err != nil {
		return runtime.DriverState{}, fmt.Errorf("hibernate sandbox %s: %w", id, err)
	}
	t0 := time.Now()
	if err := d.dump(ctx, criu, h, hib, args); err != nil {
		return runtime.DriverState{}, fmt.Errorf("hibernate sandbox %s: criu dump: %s: %w", id, err, errdefs.ErrUnsupported)
	}
	d.release(ctx, h)
	rec := h.rec
	rec.Process, rec.Hibernation = proc.Process{}, hib
	d.handles.Publish(id, &handle{rec: rec, log: h.log})
	h.log.Info("sandbox hibernated", "took", time.Since(t0), "images", hib.Images)
	inst, err := rec.instance()
	return inst.State, err
}

// dump runs CRIU's dump of the sandbox's init tree. On failure the
// sandbox's processes run on, in the freezer state they had.
func (d *Driver) dump(ctx context.Context, criu string, h *handle, hib *hibernation, args []string) error {
	frozen := h.group.Frozen()
	if err := os.RemoveAll(hib.Images); err != nil {
		return err
	}
	// The restored processes read some images themselves, as the
	// sandbox's root: its group may read the directory, no one else.
	if err := os.Mkdir(hib.Images, 0o750); err != nil {
		return err
	}
	if err := os.Chown(hib.Images, 0, hostID(h.rec.IDs)); err != nil {
		return err
	}
	base := []string{"dump", "-t", strconv.Itoa(h.rec.Pid), "-D", hib.Images, "-o", "dump.log",
		"--tcp-close", "--network-lock", "skip", "--file-locks", "--link-remap"}
	var err error
	if dir := h.group.FreezerDir(); dir != "" {
		base = append(base, "--freeze-cgroup", dir)
		err = freezeOutsideVfork(ctx, h.group)
	}
	if err == nil {
		netns := fmt.Sprintf("/proc/%d/ns/net", h.rec.Pid)
		if err = runCRIU(ctx, criu, netns, filepath.Join(hib.Images, "dump.log"), nil, append(base, args...)...); err == nil {
			return nil
		}
	}
	// CRIU leaves the tasks as it found them, save the freezer it used.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if frozen {
		_ = h.group.Freeze(sctx)
	} else {
		_ = h.group.Thaw(sctx)
	}
	// CRIU's log of the failure stays for the operator; the images go.
	_ = os.Rename(filepath.Join(hib.Images, "dump.log"), filepath.Join(h.rec.StateDir, "criu-dump.log"))
	_ = os.RemoveAll(hib.Images)
	return err
}

// release frees what a hibernated sandbox no longer needs: its cgroup and
// its mounts (whose page cache would stay charged). Its disk image, ID
// range and state directory stay.
func (d *Driver) release(ctx context.Context, h *handle) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	h.closeMeter()
	if err := h.group.Delete(ctx); err != nil {
		h.log.Warn("hibernated sandbox's cgroup not removed", "err", err)
	}
	_, disk, rootfs := paths(h.rec.StateDir)
	for _, m := range []string{rootfs, procStaging(h.rec.StateDir), disk} {
		if err := unmount(m); err != nil {
			h.log.Warn("hibernated sandbox's mount not removed", "err", err)
		}
	}
}

// dumpPlan lists what CRIU must be told of the sandbox h: the mounts and
// files it holds from the host, and what a restore will need of them.
func (d *Driver) dumpPlan(h *handle) (*hibernation, []string, error) {
	pid := h.rec.Pid
	mounts, err := readMountinfo(pid)
	if err != nil {
		return nil, nil, err
	}
	hib := &hibernation{Images: imagesDir(h.rec.StateDir)}
	args := mountExternals(mounts, hib)
	pids, err := h.group.Procs()
	if err != nil {
		return nil, nil, err
	}
	own := map[int]bool{}
	for _, m := range mounts {
		own[m.id] = true
	}
	files, err := d.hostFiles(pids, own)
	if err != nil {
		return nil, nil, err
	}
	for _, f := range files {
		hib.Files = append(hib.Files, f)
		args = append(args, "--external", f.Key)
	}
	hib.Console, _ = os.Readlink(fmt.Sprintf("/proc/%d/fd/1", pid))
	if !strings.HasPrefix(hib.Console, "pipe:") {
		hib.Console = ""
	}
	if st, err := h.group.Stats(); err == nil && st.MemoryLimit > 0 && st.MemoryLimit < 1<<50 {
		hib.Limits.MemoryMB = int(st.MemoryLimit >> 20)
	}
	return hib, args, nil
}

// mountExternals names the mounts of the sandbox that came from the host:
// the device nodes bound from the host's /dev, /sys, and the empty masks.
func mountExternals(mounts []mountEntry, hib *hibernation) []string {
	masks := map[string]bool{}
	for _, p := range maskedPaths {
		masks["/"+p] = true
	}
	var args []string
	for _, m := range mounts {
		var key string
		switch {
		case m.fstype == "devtmpfs":
			key = keyDev + strings.ReplaceAll(m.root, "/", "-")
			hib.Devices = appendNew(hib.Devices, m.root)
		case m.fstype == "sysfs" && m.target == "/sys":
			key = keySys
		case m.fstype == "tmpfs" && (masks[m.target] || m.target == "/sys"): // a restore's base of /sys (see relock)
			key = keyEmpty
		case m.target == "/"+bootIDPath:
			key = keyBootID
		default:
			continue
		}
		args = append(args, "--external", fmt.Sprintf("mnt[%s]:%s", m.target, key))
	}
	return args
}

func appendNew(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// hostFiles finds the files the processes pids hold (as executables or
// descriptors) on mounts not in own, the sandbox's mount namespace. The
// executables are kept; any other such file is one a restore could not
// give back, and is refused.
func (d *Driver) hostFiles(pids []int, own map[int]bool) ([]hostFile, error) {
	var files []hostFile
	seen := map[string]bool{}
	for _, pid := range pids {
		f, key, outside, err := openOutside(fmt.Sprintf("/proc/%d/exe", pid), own)
		if err != nil {
			continue // the process ended
		}
		if outside && !seen[key] {
			kept, err := d.keepExe(f)
			if err != nil {
				f.Close()
				return nil, err
			}
			seen[key] = true
			files = append(files, hostFile{Key: key, Path: kept})
		}
		f.Close()
	}
	for _, pid := range pids {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, e := range fds {
			p := fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())
			if target, err := os.Readlink(p); err != nil || !strings.HasPrefix(target, "/") {
				continue // sockets, pipes, anonymous files: CRIU's
			}
			if fi, err := os.Stat(p); err != nil || !(fi.Mode().IsRegular() || fi.IsDir()) {
				continue // device nodes CRIU finds by path in the sandbox
			}
			f, key, outside, err := openOutside(p, own)
			if err != nil {
				continue
			}
			f.Close()
			if outside && !seen[key] {
				target, _ := os.Readlink(p)
				return nil, fmt.Errorf("process %d holds %s, a file from outside the sandbox: %w", pid, target, errdefs.ErrUnsupported)
			}
		}
	}
	return files, nil
}

// openOutside opens path (a /proc link to a process's file) and says
// whether the file is on a mount outside own, with CRIU's name for it.
func openOutside(path string, own map[int]bool) (*os.File, string, bool, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", false, err
	}
	mnt, err := fdMountID(f)
	if err != nil {
		f.Close()
		return nil, "", false, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, "", false, err
	}
	return f, fmt.Sprintf("file[%x:%x]", mnt, st.Ino), !own[mnt], nil
}

// fdMountID is the mount ID of the file f, from the agent's fdinfo.
func fdMountID(f *os.File) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", f.Fd()))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "mnt_id:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, fmt.Errorf("no mnt_id in fdinfo")
}

// mountEntry is one line of a process's mountinfo.
type mountEntry struct {
	id                   int
	root, target, fstype string
}

func readMountinfo(pid int) ([]mountEntry, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return nil, fmt.Errorf("sandbox mounts: %w", err)
	}
	var out []mountEntry
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			continue
		}
		id, _ := strconv.Atoi(f[0])
		out = append(out, mountEntry{id: id, root: unescapeMount(f[3]), target: unescapeMount(f[4]), fstype: f[sep+1]})
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Restore implements runtime.Snapshotter: it mounts the sandbox's root
// again, makes its cgroup, and has CRIU restore its processes into
// spec.Network's namespace. It returns once the init runs.
func (d *Driver) Restore(ctx context.Context, spec runtime.Spec, st runtime.DriverState) (runtime.Instance, error) {
	if err := validate(spec); err != nil {
		return runtime.Instance{}, err
	}
	rec, err := d.hibernated(spec, st)
	if err != nil {
		return runtime.Instance{}, err
	}
	criu, err := d.criu()
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("restore sandbox %s: %w", spec.ID, err)
	}
	log := d.log.With("sandbox", spec.ID)
	d.handles.Delete(spec.ID)
	r, err := d.handles.Reserve(spec.ID)
	if err != nil {
		return runtime.Instance{}, err
	}
	published := false
	defer func() {
		r.Release()
		if !published { // still hibernated, for another try
			d.handles.Publish(spec.ID, &handle{rec: rec, log: log})
		}
	}()
	t0 := time.Now()
	inst, err := d.restoreInto(ctx, r, criu, spec, rec, log)
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("restore sandbox %s: %w", spec.ID, err)
	}
	published = true
	log.Info("sandbox restored", "pid", inst.Pid, "took", time.Since(t0))
	return inst, nil
}

// restoreInto restores the processes of rec (whose Hibernation names the
// images) as the sandbox spec, on spec's network even where rec had
// another address, and publishes it through r running; it removes the
// images once they are no longer needed.
func (d *Driver) restoreInto(ctx context.Context, r *handles.Reservation[handle], criu string, spec runtime.Spec, rec record, log *slog.Logger) (runtime.Instance, error) {
	giveBack, err := lendFormerAddress(spec, rec)
	if err != nil {
		return runtime.Instance{}, err
	}
	p, group, err := d.restoreProcs(ctx, r, criu, spec, rec)
	giveBack()
	if err != nil {
		return runtime.Instance{}, err
	}
	images := rec.Hibernation.Images
	rec.Process, rec.Hibernation, rec.Cgroup = p, nil, group.Name()
	rec.StateDir = spec.StateDir
	rec.EnvdAddr = netip.AddrPortFrom(spec.Network.Address.Addr(), wire.EnvdPort).String()
	inst, err := rec.instance()
	if err != nil {
		return runtime.Instance{}, err
	}
	r.Publish(&handle{rec: rec, group: group, log: log})
	if err := os.RemoveAll(images); err != nil {
		log.Warn("hibernation images not removed", "err", err)
	}
	return inst, nil
}

// hibernated is the record of the hibernated sandbox spec: the driver's
// own, or st's after an agent restart.
func (d *Driver) hibernated(spec runtime.Spec, st runtime.DriverState) (record, error) {
	if h, err := d.handles.Get(spec.ID); err == nil {
		if h.rec.Hibernation == nil {
			return record{}, fmt.Errorf("sandbox %s is running: %w", spec.ID, errdefs.ErrConflict)
		}
		return h.rec, nil
	}
	rec, err := loadRecord(spec, st)
	if err != nil {
		return record{}, fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	if rec.Hibernation == nil {
		return record{}, fmt.Errorf("sandbox %s was not hibernated: %w", spec.ID, errdefs.ErrInvalid)
	}
	if _, err := os.Stat(rec.Hibernation.Images); err != nil {
		return record{}, fmt.Errorf("sandbox %s: hibernation images: %w", spec.ID, errdefs.ErrNotFound)
	}
	d.mu.Lock()
	d.ids.adoptLocked(rec.IDs, spec.ID)
	d.mu.Unlock()
	return rec, nil
}

// restoreProcs mounts the sandbox's root, makes its cgroup and runs CRIU's
// restore; what it made is undone through r if a later step fails.
func (d *Driver) restoreProcs(ctx context.Context, r *handles.Reservation[handle], criu string, spec runtime.Spec, rec record) (proc.Process, *cgroup.Group, error) {
	hib := rec.Hibernation
	if err := d.closeStateDir(spec.StateDir, hostID(rec.IDs)); err != nil {
		return proc.Process{}, nil, err
	}
	rootfs, err := d.mountRoot(r, spec, rec.IDs, rec.Layers)
	if err != nil {
		return proc.Process{}, nil, err
	}
	sys, empty, err := restoreMounts(spec)
	if err != nil {
		return proc.Process{}, nil, err
	}
	defer func() {
		for _, m := range []string{sys, empty} {
			_ = unmount(m)
			_ = os.Remove(m)
		}
	}()
	lim := withDefaults(spec.Limits.Or(hib.Limits))
	group, err := d.cgrp.Create(cgroupName(spec.ID), cgroup.Limits{
		CPUs: float64(lim.VCPUs), MemoryBytes: int64(lim.MemoryMB) << 20, Pids: int64(lim.Pids + pidsHeadroom),
	})
	if err != nil {
		return proc.Process{}, nil, fmt.Errorf("cgroup: %w", err)
	}
	r.OnFail(func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = group.Delete(cctx)
	})
	args := []string{"restore", "-D", hib.Images, "-o", "restore.log", "-d", "--root", rootfs,
		"--tcp-close", "--file-locks", "--pidfile", filepath.Join(hib.Images, "init.pid"),
		"--external", "mnt[" + keySys + "]:" + sys, "--external", "mnt[" + keyEmpty + "]:" + empty}
	roots, err := cgroupRoots(group)
	if err != nil {
		return proc.Process{}, nil, err
	}
	args = append(args, roots...)
	for _, dev := range hib.Devices {
		if filepath.Clean(dev) != dev || strings.Contains(dev, "..") {
			return proc.Process{}, nil, fmt.Errorf("device %q in hibernation state: %w", dev, errdefs.ErrInvalid)
		}
		args = append(args, "--external", "mnt["+keyDev+strings.ReplaceAll(dev, "/", "-")+"]:/dev"+dev)
	}
	bootArgs, err := restoreBootID(spec.StateDir, rec.BootID)
	defer unstageBootID(spec.StateDir)
	if err != nil {
		return proc.Process{}, nil, err
	}
	args = append(args, bootArgs...)
	files, err := openHostFiles(hib.Files)
	if err != nil {
		return proc.Process{}, nil, err
	}
	defer closeAll(files)
	for i, f := range hib.Files {
		args = append(args, "--inherit-fd", fmt.Sprintf("fd[%d]:%s", 3+i, f.Key))
	}
	if hib.Console != "" {
		logf, err := console.Pipe(d.log.With("sandbox", spec.ID), filepath.Join(spec.StateDir, runtime.LogFile))
		if err != nil {
			return proc.Process{}, nil, err
		}
		defer logf.Close()
		args = append(args, "--inherit-fd", fmt.Sprintf("fd[%d]:%s", 3+len(files), hib.Console))
		files = append(files, logf)
	}
	if err := runCRIU(ctx, criu, spec.Network.Netns, filepath.Join(hib.Images, "restore.log"), files, args...); err != nil {
		return proc.Process{}, nil, fmt.Errorf("criu restore: %s", err)
	}
	p, err := readPidfile(filepath.Join(hib.Images, "init.pid"))
	if err != nil {
		return proc.Process{}, nil, err
	}
	r.OnFail(func() { p.Kill(nil) })
	if err := relock(p.Pid, spec.Network.Netns, spec.StateDir, rootfs, rec.BootID); err != nil {
		return proc.Process{}, nil, err
	}
	if err := detachHostCopies(rootfs); err != nil {
		d.log.Warn("host copies of a sandbox's /proc and /sys left mounted", "sandbox", spec.ID, "err", err)
	}
	if err := reexecInit(ctx, p); err != nil {
		return proc.Process{}, nil, err
	}
	return p, group, nil
}

// cgroupRoots tell CRIU to restore the sandbox into group wherever the
// dumped sandbox's cgroup was (a fork's source's): in each hierarchy the
// group is in, its directory; in the other v1 hierarchies, the agent's
// own, which a created sandbox inherits. CRIU names the cgroup2
// hierarchy with the empty name, which only the default root (no
// controller) reaches.
func cgroupRoots(group *cgroup.Group) ([]string, error) {
	own := "/" + group.Name()
	args := []string{"--cgroup-root", own}
	v1, _ := group.Hierarchies()
	agent, err := cgroup.V1Groups("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	for _, c := range slices.Sorted(maps.Keys(agent)) {
		root := agent[c]
		if slices.Contains(v1, c) {
			root = own
		}
		args = append(args, "--cgroup-root", c+":"+root)
	}
	return args, nil
}

// reexecInit has the restored init execute itself again (see
// sandboxinit.SignalReexec) and waits until it did.
func reexecInit(ctx context.Context, p proc.Process) error {
	if err := unix.Kill(p.Pid, unix.Signal(sandboxinit.SignalReexec)); err != nil {
		return fmt.Errorf("restored init: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid))
		if strings.HasSuffix(string(b), "\x00"+sandboxinit.ResumedArg+"\x00") {
			return nil
		}
		if !p.Alive() {
			return fmt.Errorf("restored init ended")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("restored init did not execute itself again: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// restoreMounts makes, in the sandbox's state directory, the mounts a
// restore hands CRIU for the external ones: a sysfs of spec's network
// namespace and an empty read-only tmpfs.
func restoreMounts(spec runtime.Spec) (sys, empty string, err error) {
	sys, empty = filepath.Join(spec.StateDir, "sys"), filepath.Join(spec.StateDir, "empty")
	for _, dir := range []string{sys, empty} {
		if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
			return "", "", err
		}
	}
	if err := proc.InNetns(spec.Network.Netns, func() error { return unix.Mount("sysfs", sys, "sysfs", sysFlags, "") }); err != nil {
		return "", "", fmt.Errorf("mount sysfs: %w", err)
	}
	if err := attach(emptyTmpfs, empty); err != nil {
		_ = unmount(sys)
		return "", "", err
	}
	return sys, empty, nil
}

func openHostFiles(files []hostFile) ([]*os.File, error) {
	var out []*os.File
	for _, f := range files {
		fd, err := os.Open(f.Path)
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("kept executable: %w", err)
		}
		out = append(out, fd)
	}
	return out, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

func readPidfile(path string) (proc.Process, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return proc.Process{}, fmt.Errorf("restored init: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return proc.Process{}, fmt.Errorf("restored init pid %q: %w", b, err)
	}
	return proc.Of(pid)
}
