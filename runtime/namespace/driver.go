package namespace

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"roost.dev/roost/cgroup"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/handles"
	"roost.dev/roost/runtime/namespace/sandboxinit"
	"roost.dev/roost/wire"
)

// Defaults for limits a Spec leaves at zero.
const (
	DefaultVCPUs    = 2
	DefaultMemoryMB = 512
	DefaultDiskMB   = 2048
	DefaultPids     = 4096
	// pidsHeadroom is added to a sandbox's pids limit for its init and
	// envd (threads count as tasks), so the user gets the limit they asked
	// for and envd keeps its reserved threads.
	pidsHeadroom = 48
	// envdThreads is how many threads envd reserves at start.
	envdThreads = 12
	// startTimeout bounds how long the init may take to set up.
	startTimeout = 30 * time.Second
)

// Config configures the driver.
type Config struct {
	// DataDir holds the driver's shared state (blank disk images, the
	// claims of host ID ranges); default /var/lib/roost/runtime/namespace.
	DataDir string
	// Init is the sandbox init binary (cmd/roost-init, static); default
	// roost-init next to the running executable. Every sandbox start
	// executes it, so it is a small program of its own rather than this
	// one: Go start-up time grows with the size of the binary.
	Init string
	// Unconfined starts sandboxes with no syscall filter and the full
	// capability set of their user namespace, as before package confine.
	// Only benchmarks and tests set it, to measure what confinement
	// costs; no flag or API reaches it. Default false.
	Unconfined bool
	// CRIU is the criu command that hibernates sandboxes (Snapshot,
	// Restore). Default: `criu` on PATH if `criu check` passes and it is
	// recent enough for the kernel, else DefaultCRIU (scripts/criu.sh
	// installs it). Without one, Snapshot returns errdefs.ErrUnsupported
	// saying why; everything else works.
	CRIU string
}

// Driver runs namespace sandboxes.
type Driver struct {
	cfg  Config
	log  *slog.Logger
	cgrp *cgroup.Hierarchy
	// cgroupMounts are the host's cgroupfs mounts, read once: every
	// init is given them (see sandboxinit.Config.CgroupMounts).
	cgroupMounts []sandboxinit.CgroupMount

	handles handles.Table[handle]

	mu  sync.Mutex // guards ids
	ids *idRanges

	diskMu sync.Mutex // guards making blank disk images (see blankDisk)

	spawn spawnNS // the mount namespace inits start from (spawnns_linux.go)

	criuOnce sync.Once // finds criuTool
	criuTool criuTool

	exeMu sync.Mutex       // guards exes
	exes  map[exeID]string // executables kept for restores (see keepExe)
}

var (
	_ runtime.Runtime = (*Driver)(nil)
	_ runtime.Pauser  = (*Driver)(nil)
)

// New returns a driver. It fails when the host has no usable cgroups.
func New(cfg Config, log *slog.Logger) (*Driver, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "/var/lib/roost/runtime/namespace"
	}
	if cfg.Init == "" {
		if exe, err := os.Executable(); err == nil {
			cfg.Init = filepath.Join(filepath.Dir(exe), "roost-init")
		}
	}
	h, err := cgroup.Detect()
	if err != nil {
		return nil, fmt.Errorf("namespace runtime: %w", err)
	}
	mounts, err := sandboxinit.HostCgroupMounts()
	if err != nil {
		return nil, fmt.Errorf("namespace runtime: %w", err)
	}
	raiseHostLimits(log)
	return &Driver{cfg: cfg, log: log, cgrp: h, cgroupMounts: mounts, ids: newIDRanges(filepath.Join(cfg.DataDir, "ids"))}, nil
}

// Name implements runtime.Runtime.
func (d *Driver) Name() string { return "namespace" }

// Capabilities implements runtime.Runtime.
func (d *Driver) Capabilities() runtime.Capabilities { return runtime.CapabilitiesOf(d, false) }

// Probe implements runtime.Runtime: the host's abilities (see Probe) and
// the sandbox init binary.
func (d *Driver) Probe(ctx context.Context) runtime.Availability {
	missing := probeHost()
	if st, err := os.Stat(d.cfg.Init); err != nil || st.IsDir() {
		missing = append(missing, fmt.Sprintf("sandbox init %q not found (build cmd/roost-init)", d.cfg.Init))
	}
	return availability(missing)
}

// Probe says whether this host can run namespace sandboxes; it does not
// look for the init binary, which depends on a driver's Config.
func Probe() runtime.Availability { return availability(probeHost()) }

func availability(missing []string) runtime.Availability {
	if len(missing) > 0 {
		return runtime.Availability{Reason: strings.Join(missing, "; ")}
	}
	return runtime.Availability{Available: true}
}

func probeHost() []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "must run as root")
	}
	if b, err := os.ReadFile("/proc/sys/user/max_user_namespaces"); err != nil || strings.TrimSpace(string(b)) == "0" {
		missing = append(missing, "user namespaces are disabled (user.max_user_namespaces)")
	}
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !strings.Contains(string(b), "overlay") {
		missing = append(missing, "the kernel has no overlayfs")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		missing = append(missing, "mkfs.ext4 not found (install e2fsprogs)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		missing = append(missing, "no /dev/loop-control (loop devices)")
	}
	if _, err := cgroup.Detect(); err != nil {
		missing = append(missing, err.Error())
	}
	return missing
}

// handle is one sandbox the driver runs.
type handle struct {
	rec   record
	group *cgroup.Group
	log   *slog.Logger

	meterMu sync.Mutex // guards meter
	// meter is opened by the first Stats of a running sandbox and closed
	// (closeMeter) before its cgroup goes.
	meter *meter
}

// Create implements runtime.Runtime.
func (d *Driver) Create(ctx context.Context, spec runtime.Spec) (runtime.Instance, error) {
	if err := validate(spec); err != nil {
		return runtime.Instance{}, err
	}
	r, err := d.handles.Reserve(spec.ID)
	if err != nil {
		return runtime.Instance{}, err
	}
	defer r.Release() // a failed create unwinds
	lim := withDefaults(spec.Limits)
	ids, err := d.claimIDs(r, spec.ID)
	if err != nil {
		return runtime.Instance{}, err
	}
	if err := d.newDisk(r, spec.StateDir, ids, lim.DiskMB); err != nil {
		return runtime.Instance{}, err
	}
	h, inst, err := d.start(ctx, r, spec, ids, nil, lim)
	if err != nil {
		return runtime.Instance{}, err
	}
	h.log.Info("sandbox started", "pid", inst.Pid, "envd", h.rec.EnvdAddr)
	return inst, nil
}

// start boots a sandbox of host ID range ids from the disk image in its
// state directory (a new one, or a halted sandbox's, over its layers): its root, /sys,
// volumes and cgroup, then its init, with a boot id of its own. It
// publishes the handle through r; what it made is undone through r if a
// later step fails.
func (d *Driver) start(ctx context.Context, r *handles.Reservation[handle], spec runtime.Spec, ids int, layers []diskLayer, lim runtime.Limits) (*handle, runtime.Instance, error) {
	rootfs, err := d.mountRoot(r, spec, ids, layers)
	if err != nil {
		return nil, runtime.Instance{}, err
	}
	if err := mountSys(spec.Network.Netns, rootfs); err != nil {
		return nil, runtime.Instance{}, err
	}
	if err := d.mountVolumes(spec, ids, rootfs); err != nil {
		return nil, runtime.Instance{}, err
	}
	group, err := d.cgrp.Create(cgroupName(spec.ID), cgroup.Limits{
		CPUs:        float64(lim.VCPUs),
		MemoryBytes: int64(lim.MemoryMB) << 20,
		Pids:        int64(lim.Pids + pidsHeadroom),
	})
	if err != nil {
		return nil, runtime.Instance{}, fmt.Errorf("cgroup: %w", err)
	}
	r.OnFail(func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = group.Delete(cctx)
	})
	bootID, err := newBootID()
	if err != nil {
		return nil, runtime.Instance{}, err
	}
	cfg := initConfig(spec, rootfs)
	cfg.CgroupMounts = d.cgroupMounts
	initProc, err := d.startInit(ctx, spec, ids, group, cfg, bootID)
	if err != nil {
		return nil, runtime.Instance{}, err
	}
	if err := detachHostCopies(rootfs); err != nil {
		d.log.Warn("host copies of a sandbox's /proc and /sys left mounted", "sandbox", spec.ID, "err", err)
	}
	h := &handle{
		rec: record{
			ID: spec.ID, Process: initProc, Cgroup: group.Name(),
			EnvdAddr: netip.AddrPortFrom(spec.Network.Address.Addr(), wire.EnvdPort).String(),
			Started:  time.Now().UTC(), StateDir: spec.StateDir, IDs: ids, BootID: bootID, Layers: layers,
		},
		group: group, log: d.log.With("sandbox", spec.ID),
	}
	inst, err := h.rec.instance()
	if err != nil {
		return nil, runtime.Instance{}, err
	}
	r.Publish(h)
	return h, inst, nil
}

// claimIDs claims a host ID range for the sandbox id, given back if the
// create fails.
func (d *Driver) claimIDs(r *handles.Reservation[handle], id string) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := d.ids.claimLocked(id)
	if err != nil {
		return 0, err
	}
	r.OnFail(func() { _ = d.releaseIDs(n, id) })
	return n, nil
}

func (d *Driver) releaseIDs(n int, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ids.releaseLocked(n, id)
}

// newDisk makes the sandbox's own disk of diskMB in its state directory,
// which it makes, closed to host users: a copy of a blank image.
func (d *Driver) newDisk(r *handles.Reservation[handle], stateDir string, ids, diskMB int) error {
	if err := d.closeStateDir(stateDir, hostID(ids)); err != nil {
		return err
	}
	image, _, _ := paths(stateDir)
	blank, err := d.blankDisk(diskMB)
	if err != nil {
		return err
	}
	if err := copySparse(image, blank); err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	r.OnFail(func() { os.Remove(image) })
	return nil
}

// mountRoot mounts the sandbox's root filesystem in its state directory:
// its disk, and the overlay of its layers and the template over it,
// idmapped to the host ID range ids. It returns where the root is.
func (d *Driver) mountRoot(r *handles.Reservation[handle], spec runtime.Spec, ids int, layers []diskLayer) (string, error) {
	image, disk, rootfs := paths(spec.StateDir)
	if err := mountDisk(image, disk); err != nil {
		return "", err
	}
	r.OnFail(func() { _ = unmount(disk) })
	if err := d.mountOverlay(spec, ids, layers, disk, rootfs); err != nil {
		return "", err
	}
	r.OnFail(func() { _ = unmount(rootfs) })
	return rootfs, shareRoot(rootfs)
}

// mountOverlay mounts the sandbox's root over its layers and the
// template, each seen through an idmapped mount of the sandbox's own,
// which is only needed while the overlay is made: the overlay keeps a
// private copy of its layers' mounts.
func (d *Driver) mountOverlay(spec runtime.Spec, ids int, layers []diskLayer, disk, rootfs string) error {
	userns, err := d.userns(ids)
	if err != nil {
		return err
	}
	lower := lowerPath(spec.StateDir)
	if err := mountLower(spec.RootFS, lower, userns); err != nil {
		return err
	}
	defer func() {
		_ = unmount(lower)
		_ = os.Remove(lower)
	}()
	lowers, err := d.mountLayers(layers, disk, spec.StateDir, ids)
	if err != nil {
		return err
	}
	defer unmountLowers(lowers)
	return mountOverlay(spec.ID, append(lowers, lower), disk, rootfs, hostID(ids))
}

// closeStateDir keeps host users out of the sandbox's state directory,
// which its root (host ID owner) must traverse to reach its root
// filesystem: root's, with search permission for the sandbox's group
// only. The directories above it get search permission for others, which
// reveals no names.
func (d *Driver) closeStateDir(dir string, owner int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := os.Chown(dir, 0, owner); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	if err := os.Chmod(dir, 0o710); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	return d.traversable(filepath.Dir(dir))
}

// initConfig is what the sandbox's init is told: where its root is, and
// how to start envd.
func initConfig(spec runtime.Spec, rootfs string) sandboxinit.Config {
	cfg := sandboxinit.Config{
		RootFS:   rootfs,
		Hostname: spec.Hostname,
		Resolv:   hostResolv(spec.Network.DNS),
		Env:      spec.Env,
		EnvdArgs: []string{"-addr", fmt.Sprintf("0.0.0.0:%d", wire.EnvdPort), "-forward-ports", "-local-envs", "-own-hostname", "-reserve-threads", fmt.Sprint(envdThreads)},
		EnvdPort: wire.EnvdPort,
	}
	if cfg.Hostname == "" {
		cfg.Hostname = spec.ID
	}
	return cfg
}

func validate(spec runtime.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if spec.Network.Netns == "" || !spec.Network.Address.IsValid() {
		return fmt.Errorf("no network: %w", errdefs.ErrInvalid)
	}
	return nil
}

// defaults fill the limits a spec leaves zero.
var defaults = runtime.Limits{VCPUs: DefaultVCPUs, MemoryMB: DefaultMemoryMB, DiskMB: DefaultDiskMB, Pids: DefaultPids}

func withDefaults(l runtime.Limits) runtime.Limits { return l.Or(defaults) }

func paths(stateDir string) (image, disk, rootfs string) {
	return filepath.Join(stateDir, "disk.img"), filepath.Join(stateDir, "disk"), filepath.Join(stateDir, "rootfs")
}

// WritableLayers returns, bottom first, the layers sandbox id wrote over
// its template: a fork's layers (what its source wrote), then its own
// overlay's upper directory. They are valid while the sandbox's root is
// mounted (it is running or paused). Template builds and snapshots read
// them.
func (d *Driver) WritableLayers(id string) ([]runtime.WrittenLayer, error) {
	h, err := d.running(id)
	if err != nil {
		return nil, err
	}
	_, disk, _ := paths(h.rec.StateDir)
	var out []runtime.WrittenLayer
	for i := len(h.rec.Layers) - 1; i >= 0; i-- {
		out = append(out, runtime.WrittenLayer{Dir: filepath.Join(layerMount(disk, i), "upper"), Shift: hostID(h.rec.Layers[i].IDs)})
	}
	return append(out, runtime.WrittenLayer{Dir: filepath.Join(disk, "upper"), Shift: hostID(h.rec.IDs)}), nil
}

// lowerPath is where the template's idmapped mount is while the overlay
// is made.
func lowerPath(stateDir string) string { return filepath.Join(stateDir, "lower") }

func cgroupName(id string) string { return "roost/" + id }

// hostLimits are the host-wide kernel limits the driver raises (never
// lowers) at start-up. kernel.pid_max: each sandbox holds a few dozen
// tasks (threads count), and the common default of 32768 would cap a host
// at several hundred sandboxes. Host root's inotify limits: every
// sandbox's instances and watches are charged to host root as well, so
// any finite pool is one sandbox could take whole (its users are many);
// their memory is charged to the sandbox's cgroup, which bounds each
// sandbox instead, beside the per-user caps its init sets
// (sandboxinit.InotifyInstances).
var hostLimits = []struct {
	path string
	min  int
}{
	{"/proc/sys/kernel/pid_max", 4 << 20},
	{"/proc/sys/fs/inotify/max_user_instances", math.MaxInt32},
	{"/proc/sys/fs/inotify/max_user_watches", math.MaxInt32},
}

// raiseHostLimits raises each of hostLimits that is lower than the driver
// wants; one it cannot raise limits density, and is logged.
func raiseHostLimits(log *slog.Logger) {
	for _, l := range hostLimits {
		b, err := os.ReadFile(l.path)
		if err != nil {
			continue
		}
		cur, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || cur >= l.min {
			continue
		}
		if err := os.WriteFile(l.path, []byte(strconv.Itoa(l.min)), 0o644); err != nil {
			log.Warn("could not raise a host limit; sandbox density is limited", "limit", l.path, "value", cur, "err", err)
			continue
		}
		log.Info("raised a host limit for sandbox density", "limit", l.path, "from", cur, "to", l.min)
	}
}

// traversable lets the sandbox's root (an unprivileged host user) walk
// down to dir, to reach its root filesystem: directories on the way get
// search permission for others, which reveals no names.
func (d *Driver) traversable(dir string) error {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("state dir: %w", err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, st.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("make %s traversable: %w", p, err)
			}
			d.log.Debug("made directory traversable for sandbox root", "dir", p)
		}
		if p == "/" {
			return nil
		}
	}
}
