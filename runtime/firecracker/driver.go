package firecracker

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
	"roost.dev/roost/runtime/vmimage"
)

// maxVCPUs is Firecracker's limit (machine-config vcpu_count).
const maxVCPUs = 32

// overheadMB is what Firecracker's cgroup allows above its guest's
// memory: Firecracker itself takes a few MiB, its I/O buffers a few more.
const overheadMB = 64

// Names Firecracker knows the sandbox's devices by.
const (
	rootDrive = "rootfs"
	netIface  = "eth0"
)

// legacyState is the state file of a sandbox in its state directory,
// from before the agent kept the driver's state.
const legacyState = "firecracker.json"

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

// Driver runs Firecracker microVM sandboxes: the microvm.Shell around
// Firecracker.
type Driver struct {
	*microvm.Shell
	vmm *vmm
}

var (
	_ runtime.Runtime     = (*Driver)(nil)
	_ runtime.Pauser      = (*Driver)(nil)
	_ runtime.Snapshotter = (*Driver)(nil)
	_ runtime.Forker      = (*Driver)(nil)
)

// New returns a driver; it checks nothing (Probe does).
func New(cfg Config, log *slog.Logger) *Driver {
	cfg.DataDir = cmp.Or(cfg.DataDir, "/var/lib/roost/runtime/firecracker")
	cfg.Firecracker = cmp.Or(cfg.Firecracker, "firecracker")
	cfg.Kernel = cmp.Or(cfg.Kernel, filepath.Join(cfg.DataDir, "vmlinux"))
	cfg.Init = microvm.GuestInit(cfg.Init)
	cfg.KVM = cmp.Or(cfg.KVM, "/dev/kvm")
	cfg.Egress = microvm.EgressLimit(cfg.Egress, cfg.NoEgressLimit)
	v := &vmm{cfg: cfg, images: vmimage.NewImages(filepath.Join(cfg.DataDir, "images")), jailer: findJailer(cfg.Firecracker)}
	// Firecracker limits egress itself (tx_rate_limiter): no qdisc.
	return &Driver{vmm: v, Shell: microvm.NewShell(microvm.Config{
		Name: "firecracker", VMM: v,
		Exe: "firecracker", Flag: "--id", LegacyState: legacyState,
		// Its uids follow QEMU's, so that both drivers can run on a host.
		UIDDir: filepath.Join(cfg.DataDir, "uids"), UIDBase: microvm.UIDBase + microvm.UIDCount, OverheadMB: overheadMB,
		Logs: []microvm.Log{{Name: runtime.LogFile, FDs: []int{1, 2}}},
	}, log)}
}

// Name implements runtime.Runtime.
func (d *Driver) Name() string { return "firecracker" }

// Capabilities implements runtime.Runtime.
func (d *Driver) Capabilities() runtime.Capabilities { return runtime.CapabilitiesOf(d, true) }

// Probe implements runtime.Runtime: it lists everything this host lacks.
func (d *Driver) Probe(ctx context.Context) runtime.Availability {
	cfg := d.vmm.cfg
	missing := microvm.MissingOnHost(cfg.Init)
	if err := microvm.CheckKVM(cfg.KVM); err != nil {
		missing = append(missing, fmt.Sprintf("Firecracker needs KVM: %v", err))
	}
	if _, err := exec.LookPath(cfg.Firecracker); err != nil {
		missing = append(missing, fmt.Sprintf("%s not found (install a Firecracker release binary on $PATH)", cfg.Firecracker))
	}
	if err := checkKernel(cfg.Kernel); err != nil {
		missing = append(missing, err.Error())
	}
	if cfg.Initrd != "" {
		if _, err := os.Stat(cfg.Initrd); err != nil {
			missing = append(missing, fmt.Sprintf("initrd %s: %v", cfg.Initrd, errors.Unwrap(err)))
		}
	}
	for _, bin := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" not found (install e2fsprogs)")
		}
	}
	if err := checkReflink(cfg.DataDir); err != nil {
		missing = append(missing, err.Error())
	}
	missing = append(missing, d.MissingConfinement()...)
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
