package firecracker

import (
	"bytes"
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
	"roost.dev/roost/wire"
)

// Defaults for limits a Spec leaves at zero.
const (
	DefaultVCPUs    = 1
	DefaultMemoryMB = 512
	DefaultDiskMB   = 2048
	// EnvdPort is where envd listens in the guest (and, through DNAT, on
	// the sandbox's address).
	EnvdPort = wire.EnvdPort
	// maxVCPUs is Firecracker's limit (machine-config vcpu_count).
	maxVCPUs = 32
)

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
	v := &vmm{cfg: cfg, images: vmimage.NewImages(filepath.Join(cfg.DataDir, "images"))}
	// Firecracker limits egress itself (tx_rate_limiter): no qdisc.
	return &Driver{vmm: v, Shell: microvm.NewShell(microvm.Config{
		Name: "firecracker", VMM: v, Defaults: defaults,
		Exe: "firecracker", Flag: "--id", LegacyState: legacyState,
	}, log)}
}

// Name implements runtime.Runtime.
func (d *Driver) Name() string { return "firecracker" }

// Capabilities implements runtime.Runtime.
func (d *Driver) Capabilities() runtime.Capabilities { return runtime.CapabilitiesOf(d, true) }

// Probe implements runtime.Runtime: it lists everything this host lacks.
func (d *Driver) Probe(ctx context.Context) runtime.Availability {
	cfg := d.vmm.cfg
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "must run as root")
	}
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
	if st, err := os.Stat(cfg.Init); err != nil || st.IsDir() {
		missing = append(missing, fmt.Sprintf("guest init %q not found (build cmd/roost-guest)", cfg.Init))
	}
	for _, bin := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" not found (install e2fsprogs)")
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "no /dev/net/tun (TAP devices)")
	}
	if err := checkReflink(cfg.DataDir); err != nil {
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
