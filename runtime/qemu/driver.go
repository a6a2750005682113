package qemu

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"

	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
	"roost.dev/roost/runtime/vmimage"
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
	// NoSandbox starts QEMU without its seccomp filter (-sandbox): the
	// operator's explicit choice for a QEMU built without seccomp, whose
	// VMMs still run as a uid of their own in a cgroup. Default false,
	// and then such a QEMU makes the runtime unavailable.
	NoSandbox bool
}

// Driver runs QEMU microVM sandboxes: the microvm.Shell around QEMU.
type Driver struct {
	*microvm.Shell
	vmm *vmm
}

var (
	_ runtime.Runtime     = (*Driver)(nil)
	_ runtime.Pauser      = (*Driver)(nil)
	_ runtime.Snapshotter = (*Driver)(nil)
)

// legacyState is the state file of a sandbox in its state directory,
// from before the agent kept the driver's state.
const legacyState = "qemu.json"

// New returns a driver; it checks nothing (Probe does).
func New(cfg Config, log *slog.Logger) *Driver {
	cfg.DataDir = cmp.Or(cfg.DataDir, "/var/lib/roost/runtime/qemu")
	cfg.Init = microvm.GuestInit(cfg.Init)
	cfg.QEMU = cmp.Or(cfg.QEMU, "qemu-system-x86_64")
	cfg.QEMUImg = cmp.Or(cfg.QEMUImg, "qemu-img")
	cfg.BootDir = cmp.Or(cfg.BootDir, "/boot")
	cfg.ModulesDir = cmp.Or(cfg.ModulesDir, "/lib/modules")
	var kvmErr error
	if cfg.KVM == nil {
		kvmErr = microvm.CheckKVM("/dev/kvm")
		kvm := kvmErr == nil
		cfg.KVM = &kvm
	}
	cfg.Egress = microvm.EgressLimit(cfg.Egress, cfg.NoEgressLimit)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &vmm{cfg: cfg, log: log, kvmErr: kvmErr, images: vmimage.NewImages(filepath.Join(cfg.DataDir, "images"))}
	return &Driver{vmm: v, Shell: microvm.NewShell(microvm.Config{
		Name: "qemu", VMM: v, Egress: cfg.Egress,
		Exe: "qemu-system", Flag: "-name", LegacyState: legacyState,
		UIDDir: filepath.Join(cfg.DataDir, "uids"), UIDBase: microvm.UIDBase, OverheadMB: overheadMB(*cfg.KVM),
		Logs: []microvm.Log{{Name: runtime.LogFile, FDs: []int{consoleFD}}, {Name: qemuLog, FDs: []int{1, 2}}},
	}, log)}
}

// overheadMB is what QEMU's cgroup allows above its guest's memory: its
// devices, I/O buffers and libraries, and under emulation the cache of
// translated code (capped by tbSizeMB).
func overheadMB(kvm bool) int {
	if kvm {
		return 192
	}
	return 192 + tbSizeMB
}

// Name implements runtime.Runtime.
func (d *Driver) Name() string { return "qemu" }

// Capabilities implements runtime.Runtime.
func (d *Driver) Capabilities() runtime.Capabilities { return runtime.CapabilitiesOf(d, true) }

// Probe implements runtime.Runtime. When the host has no KVM the driver is
// still available, under emulation, and Reason says so.
func (d *Driver) Probe(ctx context.Context) runtime.Availability {
	cfg := d.vmm.cfg
	missing := microvm.MissingOnHost(cfg.Init)
	for _, bin := range []struct{ name, pkg string }{{cfg.QEMU, "qemu-system-x86"}, {cfg.QEMUImg, "qemu-utils"}, {"mkfs.ext4", "e2fsprogs"}, {"debugfs", "e2fsprogs"}} {
		if _, err := exec.LookPath(bin.name); err != nil {
			missing = append(missing, fmt.Sprintf("%s not found (install %s)", bin.name, bin.pkg))
		}
	}
	if _, err := vmimage.FindHostKernel(cfg.BootDir, cfg.ModulesDir); err != nil {
		missing = append(missing, err.Error())
	}
	missing = append(missing, d.MissingConfinement()...)
	if len(missing) == 0 && !cfg.NoSandbox {
		if err := probeSandbox(ctx, cfg.QEMU); err != nil {
			missing = append(missing, err.Error()+" (or configure the runtime to run it without)")
		}
	}
	if len(missing) > 0 {
		return runtime.Availability{Reason: strings.Join(missing, "; ")}
	}
	if !*cfg.KVM {
		why := "KVM not used"
		if d.vmm.kvmErr != nil {
			why = d.vmm.kvmErr.Error()
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
	cfg := d.vmm.cfg
	if _, err := vmimage.FindHostKernel(cfg.BootDir, cfg.ModulesDir); err != nil && install {
		d.vmm.log.Info("installing the guest kernel package", "package", "linux-image-amd64")
		if err := vmimage.InstallHostKernel(ctx); err != nil {
			return "", err
		}
	}
	k, err := d.vmm.prepareKernel(ctx)
	if err != nil {
		return "", err
	}
	return k.Version, nil
}
