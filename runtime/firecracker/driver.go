package firecracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
	"roost.dev/roost/runtime/vmimage"
)

// Defaults for limits a Spec leaves at zero.
const (
	DefaultVCPUs    = 1
	DefaultMemoryMB = 512
	DefaultDiskMB   = 2048
	// EnvdPort is where envd listens in the guest (and, through DNAT, on
	// the sandbox's address).
	EnvdPort = 49983
	// maxVCPUs is Firecracker's limit (machine-config vcpu_count).
	maxVCPUs = 32
)

// Names Firecracker knows the sandbox's devices by.
const (
	rootDrive = "rootfs"
	netIface  = "eth0"
)

// namePrefix marks roost's Firecracker processes (--id roost-ID), for Prune.
const namePrefix = "roost-"

// Config configures the driver. Zero values take the defaults noted.
type Config struct {
	// DataDir holds template images; default
	// /var/lib/roost/runtime/firecracker. It must be on the filesystem
	// of the sandboxes' state directories, one with reflinks.
	DataDir string
	// Firecracker is the VMM binary; default firecracker from $PATH.
	Firecracker string
	// Kernel is the guest kernel, an uncompressed vmlinux; default
	// DataDir/vmlinux. Initrd is an optional initramfs for it.
	Kernel, Initrd string
	// Init is the guest init binary (cmd/roost-guest, static); default
	// roost-guest next to the running executable.
	Init string
	// KVM is the KVM device; default /dev/kvm.
	KVM string
	// Egress limits what a guest sends (tx_rate_limiter); zero means
	// microvm.DefaultEgress. NoEgressLimit turns it off.
	Egress        microvm.RateLimit
	NoEgressLimit bool
	// DiffSnapshots turns on dirty-page tracking, so that hibernating a
	// sandbox restored from a snapshot writes only the memory it changed.
	DiffSnapshots bool
}

// Driver runs Firecracker microVM sandboxes.
type Driver struct {
	cfg    Config
	log    *slog.Logger
	images *vmimage.Images

	handles microvm.Handles[handle]
}

var (
	_ runtime.Runtime     = (*Driver)(nil)
	_ runtime.Pauser      = (*Driver)(nil)
	_ runtime.Snapshotter = (*Driver)(nil)
)

// New returns a driver; it checks nothing (Probe does).
func New(cfg Config, log *slog.Logger) *Driver {
	if cfg.DataDir == "" {
		cfg.DataDir = "/var/lib/roost/runtime/firecracker"
	}
	if cfg.Firecracker == "" {
		cfg.Firecracker = "firecracker"
	}
	if cfg.Kernel == "" {
		cfg.Kernel = filepath.Join(cfg.DataDir, "vmlinux")
	}
	if cfg.Init == "" {
		if exe, err := os.Executable(); err == nil {
			cfg.Init = filepath.Join(filepath.Dir(exe), "roost-guest")
		}
	}
	if cfg.KVM == "" {
		cfg.KVM = "/dev/kvm"
	}
	if cfg.Egress.Rate == 0 {
		cfg.Egress = microvm.DefaultEgress
	}
	if cfg.NoEgressLimit {
		cfg.Egress = microvm.RateLimit{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Driver{cfg: cfg, log: log, images: vmimage.NewImages(filepath.Join(cfg.DataDir, "images"))}
}

// Name implements runtime.Runtime.
func (d *Driver) Name() string { return "firecracker" }

// Capabilities implements runtime.Runtime.
func (d *Driver) Capabilities() runtime.Capabilities {
	return runtime.Capabilities{Pause: true, Snapshot: true, VM: true}
}

// Probe implements runtime.Runtime: it lists everything this host lacks.
func (d *Driver) Probe(ctx context.Context) runtime.Availability {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "must run as root")
	}
	if err := microvm.CheckKVM(d.cfg.KVM); err != nil {
		missing = append(missing, fmt.Sprintf("Firecracker needs KVM: %v", err))
	}
	if _, err := exec.LookPath(d.cfg.Firecracker); err != nil {
		missing = append(missing, fmt.Sprintf("%s not found (install a Firecracker release binary on $PATH)", d.cfg.Firecracker))
	}
	if err := checkKernel(d.cfg.Kernel); err != nil {
		missing = append(missing, err.Error())
	}
	if d.cfg.Initrd != "" {
		if _, err := os.Stat(d.cfg.Initrd); err != nil {
			missing = append(missing, fmt.Sprintf("initrd %s: %v", d.cfg.Initrd, errors.Unwrap(err)))
		}
	}
	if st, err := os.Stat(d.cfg.Init); err != nil || st.IsDir() {
		missing = append(missing, fmt.Sprintf("guest init %q not found (build cmd/roost-guest)", d.cfg.Init))
	}
	for _, bin := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" not found (install e2fsprogs)")
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "no /dev/net/tun (TAP devices)")
	}
	if err := checkReflink(d.cfg.DataDir); err != nil {
		missing = append(missing, err.Error())
	}
	if len(missing) > 0 {
		return runtime.Availability{Reason: strings.Join(missing, "; ")}
	}
	return runtime.Availability{Available: true}
}

// checkKernel says what is wrong with a guest kernel file, if anything.
func checkKernel(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("guest kernel %s not found: supply an uncompressed vmlinux with virtio-mmio, virtio-blk, virtio-net and ext4 built in (reference: shared/firecracker/microvm-kernel-x86_64-6.1.config)", path)
	}
	defer f.Close()
	magic := make([]byte, 4)
	if _, err := f.Read(magic); err != nil || !bytes.Equal(magic, []byte("\x7fELF")) {
		return fmt.Errorf("guest kernel %s is not an ELF vmlinux (a bzImage must be extracted first, e.g. with the kernel's scripts/extract-vmlinux)", path)
	}
	return nil
}

func validate(spec runtime.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	switch {
	case len(namePrefix+spec.ID) > 64 || strings.IndexFunc(spec.ID, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
	}) >= 0:
		// Firecracker's --id takes up to 64 alphanumerics and dashes.
		return fmt.Errorf("sandbox id %q: firecracker needs letters, digits and dashes, at most %d: %w", spec.ID, 64-len(namePrefix), errdefs.ErrInvalid)
	case spec.Limits.VCPUs > maxVCPUs:
		return fmt.Errorf("%d vcpus: firecracker runs at most %d: %w", spec.Limits.VCPUs, maxVCPUs, errdefs.ErrInvalid)
	case spec.Network.Netns == "" || spec.Network.Interface == "" || !spec.Network.Address.Addr().Is4():
		return fmt.Errorf("no network: %w", errdefs.ErrInvalid)
	case len(paths(spec.StateDir).api) >= 108:
		return fmt.Errorf("state dir %s: the API socket path would exceed the 107 bytes a Unix socket allows: %w", spec.StateDir, errdefs.ErrInvalid)
	}
	return nil
}

// defaults fill the limits a spec leaves zero.
var defaults = runtime.Limits{VCPUs: DefaultVCPUs, MemoryMB: DefaultMemoryMB, DiskMB: DefaultDiskMB}

// Create implements runtime.Runtime.
func (d *Driver) Create(ctx context.Context, spec runtime.Spec) (inst runtime.Instance, err error) {
	if err := validate(spec); err != nil {
		return runtime.Instance{}, err
	}
	if err := d.handles.Reserve(spec.ID); err != nil {
		return runtime.Instance{}, err
	}
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			d.handles.Publish(spec.ID, nil)
		}
	}()
	log := d.log.With("sandbox", spec.ID)
	lim := spec.Limits.Or(defaults)
	began := time.Now()

	if err := checkKernel(d.cfg.Kernel); err != nil {
		return runtime.Instance{}, fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	bootArgs := d.bootArgs(spec)
	if len(bootArgs) > microvm.MaxCmdline {
		return runtime.Instance{}, fmt.Errorf("guest command line of %d bytes (the environment is passed on it) exceeds %d: %w", len(bootArgs), microvm.MaxCmdline, errdefs.ErrInvalid)
	}
	image, err := d.images.Get(ctx, vmimage.ImageSpec{RootFS: spec.RootFS, Envd: spec.Envd, Init: d.cfg.Init, SizeMB: lim.DiskMB})
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("template image: %w", err)
	}
	if err := os.MkdirAll(spec.StateDir, 0o700); err != nil {
		return runtime.Instance{}, fmt.Errorf("state dir: %w", err)
	}
	p := paths(spec.StateDir)
	if err := cloneFile(image, p.disk); err != nil {
		return runtime.Instance{}, err
	}
	undo = append(undo, func() { os.Remove(p.disk) })
	// Firecracker limits egress itself (tx_rate_limiter): no qdisc.
	if err := microvm.SetupGuestNet(spec.Network.Netns, spec.Network.Interface, spec.Network.Address.Addr(), microvm.RateLimit{}); err != nil {
		return runtime.Instance{}, err
	}
	undo = append(undo, func() { _ = microvm.TeardownGuestNet(spec.Network.Netns) })
	prepared := time.Now()

	h := &handle{
		rec: record{
			Version: stateVersion, ID: spec.ID, MemoryMB: lim.MemoryMB,
			EnvdAddr: netip.AddrPortFrom(spec.Network.Address.Addr(), EnvdPort).String(),
			StateDir: spec.StateDir, Netns: spec.Network.Netns,
		},
		log: log,
	}
	if err := d.launch(ctx, h); err != nil {
		return runtime.Instance{}, err
	}
	undo = append(undo, h.kill)
	if err := d.configure(ctx, h, spec, lim, bootArgs); err != nil {
		return runtime.Instance{}, fmt.Errorf("%w (firecracker log: %s)", err, h.logTail())
	}
	if err := h.rec.save(); err != nil {
		return runtime.Instance{}, err
	}
	d.handles.Publish(spec.ID, h)
	log.Info("sandbox started", "pid", h.rec.Pid, "envd", h.rec.EnvdAddr, "prepare", prepared.Sub(began), "boot", time.Since(prepared))
	return h.instance(), nil
}

// bootArgs is the guest kernel's command line. Firecracker appends the
// root device (root=/dev/vda rw) itself, for the drive marked as root.
func (d *Driver) bootArgs(spec runtime.Spec) string {
	w := []string{"console=ttyS0", "reboot=k", "panic=1", "pci=off", "quiet", "loglevel=4", "mitigations=off", "nomodule",
		"i8042.noaux", "i8042.nomux", "i8042.dumbkbd", "random.trust_cpu=on", "8250.nr_uarts=1"}
	if d.cfg.Initrd == "" {
		// No initramfs: the kernel mounts the root drive and runs the
		// guest init from it (vmimage puts it at /.roost/init).
		w = append(w, "init=/.roost/init")
	}
	return strings.Join(append(w, microvm.GuestParams(spec, "/dev/vda")...), " ")
}

// configure sets a freshly launched Firecracker up for spec and boots it.
func (d *Driver) configure(ctx context.Context, h *handle, spec runtime.Spec, lim runtime.Limits, bootArgs string) error {
	p := paths(h.rec.StateDir)
	a := h.api()
	if err := d.putLogger(ctx, a, p); err != nil {
		return err
	}
	iface := networkInterface{IfaceID: netIface, HostDevName: microvm.TapName, GuestMAC: microvm.GuestMAC}
	if r := d.cfg.Egress; r.Rate > 0 {
		// A bucket of one second's worth of bytes, refilled every
		// second: Rate bytes a second, after a one-time Burst.
		iface.TxRateLimiter = &rateLimiter{Bandwidth: &tokenBucket{Size: int64(r.Rate), OneTimeBurst: int64(r.Burst), RefillTimeMs: 1000}}
	}
	steps := []struct {
		path string
		body any
	}{
		{"/machine-config", machineConfig{VCPUs: lim.VCPUs, MemoryMiB: lim.MemoryMB, TrackDirtyPages: d.cfg.DiffSnapshots}},
		{"/boot-source", bootSource{KernelImagePath: d.cfg.Kernel, InitrdPath: d.cfg.Initrd, BootArgs: bootArgs}},
		{"/drives/" + rootDrive, drive{DriveID: rootDrive, PathOnHost: p.disk, IsRootDevice: true, CacheType: "Unsafe", IOEngine: "Sync"}},
		{"/network-interfaces/" + netIface, iface},
		{"/mmds/config", mmdsConfig{Version: "V2", NetworkInterfaces: []string{netIface}}},
		{"/mmds", mmdsContents(spec)},
		{"/actions", action{Type: "InstanceStart"}},
	}
	for _, s := range steps {
		if err := a.put(ctx, s.path, s.body); err != nil {
			return err
		}
	}
	return nil
}

// putLogger sends Firecracker's own log to a file in the state directory.
func (d *Driver) putLogger(ctx context.Context, a *api, p statePaths) error {
	f, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("firecracker log: %w", err)
	}
	f.Close()
	return a.put(ctx, "/logger", logger{LogPath: p.log, Level: "Warning", ShowLevel: true})
}

// mmdsContents is what a guest finds in MMDS: its sandbox's identity and
// metadata, under /roost.
func mmdsContents(spec runtime.Spec) map[string]any {
	md := spec.Metadata
	if md == nil {
		md = map[string]string{}
	}
	host := spec.Hostname
	if host == "" {
		host = spec.ID
	}
	return map[string]any{"roost": map[string]any{"sandboxID": spec.ID, "hostname": host, "metadata": md}}
}

// Destroy implements runtime.Runtime.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	h, err := d.handles.Get(id)
	if err != nil {
		return err
	}
	// Nothing in the guest outlives its disk, which goes next: no
	// graceful shutdown to wait for.
	h.kill()
	if h.rec.Netns != "" {
		err = microvm.TeardownGuestNet(h.rec.Netns)
	}
	err = errors.Join(err, microvm.RemoveFiles(append(paths(h.rec.StateDir).files(), filepath.Join(h.rec.StateDir, recordFile))...))
	d.handles.Publish(id, nil)
	h.log.Info("sandbox destroyed")
	return err
}

// Recover implements runtime.Runtime. A running Firecracker is re-adopted
// through its API socket; a hibernated sandbox is restored; anything else
// is cleaned up and reported as not found.
func (d *Driver) Recover(ctx context.Context, spec runtime.Spec) (runtime.Instance, error) {
	if h, err := d.handles.Get(spec.ID); err == nil {
		return h.instance(), nil
	}
	rec, err := loadRecord(spec.StateDir)
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("sandbox %s: no usable state (%v): %w", spec.ID, err, errdefs.ErrNotFound)
	}
	log := d.log.With("sandbox", spec.ID)
	if rec.Pid == 0 && rec.Snapshot != "" {
		log.Info("recover: restoring hibernated sandbox")
		return d.Restore(ctx, spec)
	}
	if !rec.Alive() {
		log.Info("recover: firecracker is gone; cleaning up", "pid", rec.Pid)
		_ = microvm.RemoveFiles(append(paths(spec.StateDir).files(), filepath.Join(spec.StateDir, recordFile))...)
		return runtime.Instance{}, fmt.Errorf("sandbox %s: firecracker exited: %w", spec.ID, errdefs.ErrNotFound)
	}
	if err := d.handles.Reserve(spec.ID); err != nil {
		h, gerr := d.handles.Get(spec.ID)
		if gerr != nil {
			return runtime.Instance{}, err
		}
		return h.instance(), nil
	}
	h := &handle{rec: rec, log: log}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	info, err := h.api().waitReady(cctx)
	if err != nil {
		d.handles.Publish(spec.ID, nil)
		return runtime.Instance{}, fmt.Errorf("recover: %w", err)
	}
	d.handles.Publish(spec.ID, h)
	log.Info("recover: re-adopted running firecracker", "pid", rec.Pid, "state", info.State)
	return h.instance(), nil
}

// Prune implements runtime.Runtime: it kills Firecracker processes of
// roost sandboxes not in keep (they carry --id roost-ID).
func (d *Driver) Prune(ctx context.Context, keep []string) error {
	return microvm.PruneVMMs("firecracker", "--id", namePrefix, keep, d.known, d.log)
}

func (d *Driver) known(id string) bool {
	_, err := d.handles.Get(id)
	return err == nil
}

// Stats implements runtime.Runtime: Firecracker's CPU time and resident
// memory (which includes the guest memory the guest has touched).
func (d *Driver) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	h, err := d.handles.Get(id)
	if err != nil {
		return runtime.Stats{}, err
	}
	st, err := h.rec.Process.Stats(h.rec.MemoryMB)
	if err != nil {
		return st, fmt.Errorf("sandbox %s: %w", id, err)
	}
	return st, nil
}

// Pause implements runtime.Pauser: the vCPUs stop, memory stays.
func (d *Driver) Pause(ctx context.Context, id string) error {
	return d.setState(ctx, id, "Paused")
}

// Resume implements runtime.Pauser.
func (d *Driver) Resume(ctx context.Context, id string) error {
	return d.setState(ctx, id, "Resumed")
}

func (d *Driver) setState(ctx context.Context, id, state string) error {
	h, err := d.handles.Get(id)
	if err != nil {
		return err
	}
	if !h.running() {
		return fmt.Errorf("sandbox %s has no running vm: %w", id, errdefs.ErrConflict)
	}
	return h.api().call(ctx, http.MethodPatch, "/vm", vmState{State: state}, nil)
}
