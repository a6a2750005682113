package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
)

// Config configures the driver. Zero values take the defaults noted.
type Config struct {
	// DataDir holds template images and prepared kernels; default
	// /var/lib/roost/runtime/qemu.
	DataDir string
	// Init is the guest init binary (cmd/roost-guest, static); default
	// roost-guest next to the running executable.
	Init string
	// QEMU is the emulator; default qemu-system-x86_64 from $PATH.
	QEMU string
	// QEMUImg is qemu-img; default from $PATH.
	QEMUImg string
	// BootDir and ModulesDir are where the host's distribution kernel is
	// found; default /boot and /lib/modules.
	BootDir, ModulesDir string
	// KVM selects acceleration: nil means KVM when /dev/kvm can run a
	// guest (microvm.CheckKVM).
	KVM *bool
	// Egress limits what a guest sends; zero means the default, 200 MB/s
	// sustained after a 100 MB burst (as Firecracker's tx_rate_limiter).
	Egress microvm.RateLimit
	// NoEgressLimit turns the egress limit off.
	NoEgressLimit bool
}

// Driver runs QEMU microVM sandboxes.
type Driver struct {
	cfg    Config
	log    *slog.Logger
	kvmErr error // why KVM is not used, when New looked
	images *vmimage.Images

	kernelMu sync.Mutex // guards kernel
	kernel   *vmimage.Kernel

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
		cfg.DataDir = "/var/lib/roost/runtime/qemu"
	}
	if cfg.Init == "" {
		if exe, err := os.Executable(); err == nil {
			cfg.Init = filepath.Join(filepath.Dir(exe), "roost-guest")
		}
	}
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.QEMUImg == "" {
		cfg.QEMUImg = "qemu-img"
	}
	if cfg.BootDir == "" {
		cfg.BootDir = "/boot"
	}
	if cfg.ModulesDir == "" {
		cfg.ModulesDir = "/lib/modules"
	}
	var kvmErr error
	if cfg.KVM == nil {
		kvmErr = microvm.CheckKVM("/dev/kvm")
		kvm := kvmErr == nil
		cfg.KVM = &kvm
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
	return &Driver{cfg: cfg, log: log, kvmErr: kvmErr, images: vmimage.NewImages(filepath.Join(cfg.DataDir, "images"))}
}

// Name implements runtime.Runtime.
func (d *Driver) Name() string { return "qemu" }

// Capabilities implements runtime.Runtime.
func (d *Driver) Capabilities() runtime.Capabilities {
	return runtime.Capabilities{Pause: true, Snapshot: true, VM: true}
}

// Probe implements runtime.Runtime. When the host has no KVM the driver is
// still available, under emulation, and Reason says so.
func (d *Driver) Probe(ctx context.Context) runtime.Availability {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "must run as root")
	}
	for _, bin := range []struct{ name, pkg string }{{d.cfg.QEMU, "qemu-system-x86"}, {d.cfg.QEMUImg, "qemu-utils"}, {"mkfs.ext4", "e2fsprogs"}, {"debugfs", "e2fsprogs"}} {
		if _, err := exec.LookPath(bin.name); err != nil {
			missing = append(missing, fmt.Sprintf("%s not found (install %s)", bin.name, bin.pkg))
		}
	}
	if _, err := vmimage.FindHostKernel(d.cfg.BootDir, d.cfg.ModulesDir); err != nil {
		missing = append(missing, err.Error())
	}
	if st, err := os.Stat(d.cfg.Init); err != nil || st.IsDir() {
		missing = append(missing, fmt.Sprintf("guest init %q not found (build cmd/roost-guest)", d.cfg.Init))
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "no /dev/net/tun (TAP devices)")
	}
	if len(missing) > 0 {
		return runtime.Availability{Reason: strings.Join(missing, "; ")}
	}
	if !*d.cfg.KVM {
		why := "KVM not used"
		if d.kvmErr != nil {
			why = d.kvmErr.Error()
		}
		return runtime.Availability{Available: true, Reason: why + ": guests run under software emulation (TCG), several times slower"}
	}
	return runtime.Availability{Available: true}
}

// Prepare readies the guest kernel ahead of the first sandbox, for a
// command like `roost kernel prepare`: with install, it first installs
// Debian's kernel package through apt when the host has none; then it
// extracts vmlinux and builds the initramfs into DataDir/kernels. It
// returns the prepared kernel's version.
func (d *Driver) Prepare(ctx context.Context, install bool) (string, error) {
	if _, err := vmimage.FindHostKernel(d.cfg.BootDir, d.cfg.ModulesDir); err != nil && install {
		d.log.Info("installing the guest kernel package", "package", "linux-image-amd64")
		if err := vmimage.InstallHostKernel(ctx); err != nil {
			return "", err
		}
	}
	k, err := d.prepareKernel(ctx)
	if err != nil {
		return "", err
	}
	return k.Version, nil
}

// prepareKernel extracts the host's kernel and builds the initramfs once.
func (d *Driver) prepareKernel(ctx context.Context) (vmimage.Kernel, error) {
	d.kernelMu.Lock()
	defer d.kernelMu.Unlock()
	if d.kernel != nil {
		return *d.kernel, nil
	}
	hk, err := vmimage.FindHostKernel(d.cfg.BootDir, d.cfg.ModulesDir)
	if err != nil {
		return vmimage.Kernel{}, fmt.Errorf("guest kernel: %w: %w", err, errdefs.ErrUnavailable)
	}
	k, err := vmimage.PrepareKernel(ctx, hk, d.cfg.Init, filepath.Join(d.cfg.DataDir, "kernels"))
	if err != nil {
		return vmimage.Kernel{}, fmt.Errorf("guest kernel: %w", err)
	}
	d.kernel = &k
	return k, nil
}

func validate(spec runtime.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	switch {
	case strings.ContainsAny(spec.ID, " ,="):
		// QEMU's option syntax would split it.
		return fmt.Errorf("sandbox id %q: %w", spec.ID, errdefs.ErrInvalid)
	case spec.Network.Netns == "" || spec.Network.Interface == "" || !spec.Network.Address.Addr().Is4():
		return fmt.Errorf("no network: %w", errdefs.ErrInvalid)
	}
	return nil
}

// defaults fill the limits a spec leaves zero.
var defaults = runtime.Limits{VCPUs: DefaultVCPUs, MemoryMB: DefaultMemoryMB, DiskMB: DefaultDiskMB}

func withDefaults(l runtime.Limits) runtime.Limits { return l.Or(defaults) }

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
	lim := withDefaults(spec.Limits)
	began := time.Now()

	kernel, err := d.prepareKernel(ctx)
	if err != nil {
		return runtime.Instance{}, err
	}
	image, err := d.images.Get(ctx, vmimage.ImageSpec{RootFS: spec.RootFS, Envd: spec.Envd, Init: d.cfg.Init, SizeMB: lim.DiskMB})
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("template image: %w", err)
	}
	if err := os.MkdirAll(spec.StateDir, 0o700); err != nil {
		return runtime.Instance{}, fmt.Errorf("state dir: %w", err)
	}
	p := paths(spec.StateDir)
	prepared := time.Now()
	if err := d.overlay(ctx, image, p.disk); err != nil {
		return runtime.Instance{}, err
	}
	undo = append(undo, func() { os.Remove(p.disk) })
	if err := microvm.SetupGuestNet(spec.Network.Netns, spec.Network.Interface, spec.Network.Address.Addr(), d.cfg.Egress); err != nil {
		return runtime.Instance{}, err
	}

	args := d.args(spec, lim, kernel, p)
	if n := len(d.cmdline(spec)); n > microvm.MaxCmdline {
		return runtime.Instance{}, fmt.Errorf("guest command line of %d bytes (the environment is passed on it) exceeds %d: %w", n, microvm.MaxCmdline, errdefs.ErrInvalid)
	}
	h := &handle{
		rec: record{
			Version: stateVersion, ID: spec.ID, MemoryMB: lim.MemoryMB,
			Args:     args,
			EnvdAddr: netip.AddrPortFrom(spec.Network.Address.Addr(), EnvdPort).String(),
			StateDir: spec.StateDir, Netns: spec.Network.Netns,
		},
		log: log,
	}
	plumbed := time.Now()
	if err := d.launch(ctx, h, spec.Network.Netns, false); err != nil {
		return runtime.Instance{}, err
	}
	log.Debug("create timing", "images", prepared.Sub(began), "disk_and_network", plumbed.Sub(prepared), "qemu_up", time.Since(plumbed))
	undo = append(undo, func() { h.kill() })
	if err := h.rec.save(); err != nil {
		return runtime.Instance{}, err
	}
	d.handles.Publish(spec.ID, h)
	log.Info("sandbox started", "pid", h.rec.Pid, "envd", h.rec.EnvdAddr, "kvm", *d.cfg.KVM)
	return h.instance(), nil
}

// overlay creates the sandbox's disk: a qcow2 layer over the read-only
// template image, so creating a sandbox copies nothing.
func (d *Driver) overlay(ctx context.Context, base, disk string) error {
	_ = os.Remove(disk)
	b, err := exec.CommandContext(ctx, d.cfg.QEMUImg, "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", disk).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img create overlay: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// Destroy implements runtime.Runtime.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	h, err := d.handles.Get(id)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	h.stop(cctx)
	if h.rec.Netns != "" {
		err = microvm.TeardownGuestNet(h.rec.Netns)
	}
	p := paths(h.rec.StateDir)
	err = errors.Join(err, microvm.RemoveFiles(p.disk, p.qmp, p.snapshot, filepath.Join(h.rec.StateDir, recordFile)))
	d.handles.Publish(id, nil)
	h.log.Info("sandbox destroyed")
	return err
}

// Recover implements runtime.Runtime. A running QEMU is re-adopted through
// its QMP socket; a hibernated sandbox (snapshot on disk, no process) is
// restored; anything else is cleaned up and reported as not found.
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
		log.Info("recover: qemu is gone; cleaning up", "pid", rec.Pid)
		p := paths(spec.StateDir)
		_ = microvm.RemoveFiles(p.disk, p.qmp, filepath.Join(spec.StateDir, recordFile))
		return runtime.Instance{}, fmt.Errorf("sandbox %s: qemu exited: %w", spec.ID, errdefs.ErrNotFound)
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
	var status string
	if err := h.withQMP(cctx, func(q *qmp) (err error) { status, err = q.status(cctx); return err }); err != nil {
		d.handles.Publish(spec.ID, nil)
		return runtime.Instance{}, fmt.Errorf("recover: %w", err)
	}
	log.Info("recover: qemu answers", "status", status)
	d.handles.Publish(spec.ID, h)
	log.Info("recover: re-adopted running qemu", "pid", rec.Pid)
	return h.instance(), nil
}

// Prune implements runtime.Runtime: it kills QEMU processes of roost
// sandboxes not in keep (they carry -name roost-ID).
func (d *Driver) Prune(ctx context.Context, keep []string) error {
	return microvm.PruneVMMs("qemu-system", "-name", namePrefix, keep, d.known, d.log)
}

func (d *Driver) known(id string) bool {
	_, err := d.handles.Get(id)
	return err == nil
}

// Stats implements runtime.Runtime: QEMU's own CPU time and resident
// memory (which includes guest memory the guest has touched).
func (d *Driver) Stats(ctx context.Context, id string) (runtime.Stats, error) {
	h, err := d.handles.Get(id)
	if err != nil {
		return runtime.Stats{}, err
	}
	return h.stats()
}

// Pause implements runtime.Pauser (QMP stop: the vCPUs halt, memory stays).
func (d *Driver) Pause(ctx context.Context, id string) error {
	h, err := d.handles.Get(id)
	if err != nil {
		return err
	}
	return h.command(ctx, "stop")
}

// Resume implements runtime.Pauser.
func (d *Driver) Resume(ctx context.Context, id string) error {
	h, err := d.handles.Get(id)
	if err != nil {
		return err
	}
	return h.command(ctx, "cont")
}
