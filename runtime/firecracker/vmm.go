package firecracker

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
	"roost.dev/roost/runtime/vmimage"
)

// vmm is Firecracker as the microvm.Shell drives it, over its HTTP API.
type vmm struct {
	cfg    Config
	images *vmimage.Images
	// jailer is the jailer binary, "" when the launcher jails Firecracker
	// itself.
	jailer string
	// noJail runs Firecracker unjailed, as root: only for the tests,
	// whose fake Firecracker (the test binary) cannot run in a chroot.
	noJail bool
}

var _ microvm.VMM = (*vmm)(nil)

// Validate implements microvm.VMM.
func (v *vmm) Validate(spec runtime.Spec) error {
	switch {
	case len(spec.Volumes) > 0:
		// The drive would have to be reachable inside the jail, as the
		// VMM's uid, and on every snapshot load: not built yet.
		return fmt.Errorf("volumes: the firecracker runtime cannot mount them yet (the qemu and namespace runtimes can): %w", errdefs.ErrUnsupported)
	case len(microvm.NamePrefix+spec.ID) > 64 || strings.IndexFunc(spec.ID, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
	}) >= 0:
		// Firecracker's --id takes up to 64 alphanumerics and dashes.
		return fmt.Errorf("sandbox id %q: firecracker needs letters, digits and dashes, at most %d: %w", spec.ID, 64-len(microvm.NamePrefix), errdefs.ErrInvalid)
	case spec.Limits.VCPUs > maxVCPUs:
		return fmt.Errorf("%d vcpus: firecracker runs at most %d: %w", spec.Limits.VCPUs, maxVCPUs, errdefs.ErrInvalid)
	case len(paths(spec.StateDir).api) >= 108:
		return fmt.Errorf("state dir %s: the API socket path would exceed the 107 bytes a Unix socket allows: %w", spec.StateDir, errdefs.ErrInvalid)
	case len(v.bootArgs(spec)) > microvm.MaxCmdline:
		return fmt.Errorf("guest command line of %d bytes (the environment is passed on it) exceeds %d: %w", len(v.bootArgs(spec)), microvm.MaxCmdline, errdefs.ErrInvalid)
	}
	return nil
}

// Prepare implements microvm.VMM: the kernel is there, the sandbox's
// disk is a reflinked copy of the template's image, and the guest's MMDS
// contents are kept for restores.
func (v *vmm) Prepare(ctx context.Context, m *microvm.Machine, spec runtime.Spec, lim runtime.Limits) error {
	if err := checkKernel(v.cfg.Kernel); err != nil {
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	image, err := v.images.Get(ctx, vmimage.ImageSpec{RootFS: spec.RootFS, Envd: spec.Envd, Init: v.cfg.Init, SizeMB: lim.DiskMB})
	if err != nil {
		return fmt.Errorf("template image: %w", err)
	}
	if err := makeJailRoot(m.StateDir, m.ID); err != nil {
		return err
	}
	if err := saveMMDS(paths(m.StateDir), spec); err != nil {
		return err
	}
	return cloneFile(image, paths(m.StateDir).disk)
}

// Boot implements microvm.VMM: Firecracker starts, is configured through
// its API, and boots the guest.
func (v *vmm) Boot(ctx context.Context, m *microvm.Machine, spec runtime.Spec, lim runtime.Limits) error {
	if err := v.launch(ctx, m); err != nil {
		return err
	}
	if err := v.configure(ctx, m, spec, lim); err != nil {
		return fmt.Errorf("%w (firecracker log: %s)", err, logTail(m))
	}
	return nil
}

// bootArgs is the guest kernel's command line. Firecracker appends the
// root device (root=/dev/vda rw) itself, for the drive marked as root.
func (v *vmm) bootArgs(spec runtime.Spec) string {
	w := []string{"console=ttyS0", "reboot=k", "panic=1", "pci=off", "quiet", "loglevel=4", "mitigations=off", "nomodule",
		"i8042.noaux", "i8042.nomux", "i8042.dumbkbd", "random.trust_cpu=on", "8250.nr_uarts=1"}
	if v.cfg.Initrd == "" {
		// No initramfs: the kernel mounts the root drive and runs the
		// guest init from it (vmimage puts it at /.roost/init).
		w = append(w, "init=/.roost/init")
	}
	return strings.Join(append(w, microvm.GuestParams(spec, "/dev/vda")...), " ")
}

// configure sets a freshly launched Firecracker up for spec and boots it.
func (v *vmm) configure(ctx context.Context, m *microvm.Machine, spec runtime.Spec, lim runtime.Limits) error {
	p := paths(m.StateDir)
	a := newAPI(p.api)
	if err := v.putLogger(ctx, a, m); err != nil {
		return err
	}
	iface := networkInterface{IfaceID: netIface, HostDevName: microvm.TapName, GuestMAC: microvm.GuestMAC}
	if r := v.cfg.Egress; r.Rate > 0 {
		// A bucket of one second's worth of bytes, refilled every
		// second: Rate bytes a second, after a one-time Burst.
		iface.TxRateLimiter = &rateLimiter{Bandwidth: &tokenBucket{Size: int64(r.Rate), OneTimeBurst: int64(r.Burst), RefillTimeMs: 1000}}
	}
	steps := []struct {
		path string
		body any
	}{
		{"/machine-config", machineConfig{VCPUs: lim.VCPUs, MemoryMiB: lim.MemoryMB, TrackDirtyPages: v.cfg.DiffSnapshots}},
		{"/boot-source", v.bootSource(spec)},
		{"/drives/" + rootDrive, drive{DriveID: rootDrive, PathOnHost: v.vmPath(p.disk), IsRootDevice: true, CacheType: "Unsafe", IOEngine: "Sync"}},
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

// bootSource is the guest kernel as Firecracker finds it: in the jail.
func (v *vmm) bootSource(spec runtime.Spec) bootSource {
	b := bootSource{KernelImagePath: v.cfg.Kernel, InitrdPath: v.cfg.Initrd, BootArgs: v.bootArgs(spec)}
	if !v.noJail {
		b.KernelImagePath = "/vmlinux"
		if b.InitrdPath != "" {
			b.InitrdPath = "/initrd"
		}
	}
	return b
}

// putLogger sends Firecracker's own log to a file in its jail, which is
// the VMM's to write.
func (v *vmm) putLogger(ctx context.Context, a *api, m *microvm.Machine) error {
	p := paths(m.StateDir)
	f, err := noFollow(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND)
	if err != nil {
		return fmt.Errorf("firecracker log: %w", err)
	}
	if m.UID != 0 {
		err = f.Chown(m.UID, m.UID)
	}
	f.Close()
	if err != nil {
		return fmt.Errorf("firecracker log: %w", err)
	}
	return a.put(ctx, "/logger", logger{LogPath: v.vmPath(p.log), Level: "Warning", ShowLevel: true})
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

// Attach implements microvm.VMM.
func (v *vmm) Attach(ctx context.Context, m *microvm.Machine) (string, error) {
	info, err := newAPI(paths(m.StateDir).api).waitReady(ctx)
	return info.State, err
}

// Pause implements microvm.VMM: the vCPUs stop, memory stays.
func (v *vmm) Pause(ctx context.Context, m *microvm.Machine) error {
	return setState(ctx, m, "Paused")
}

// Resume implements microvm.VMM.
func (v *vmm) Resume(ctx context.Context, m *microvm.Machine) error {
	return setState(ctx, m, "Resumed")
}

func setState(ctx context.Context, m *microvm.Machine, state string) error {
	return newAPI(paths(m.StateDir).api).call(ctx, http.MethodPatch, "/vm", vmState{State: state}, nil)
}

// Stop implements microvm.VMM: nothing in the guest outlives its disk
// (Destroy) or is lost once its state is on disk (Snapshot), so there is
// no graceful shutdown to wait for.
func (v *vmm) Stop(ctx context.Context, m *microvm.Machine) { m.Kill() }

// Files implements microvm.VMM.
func (v *vmm) Files(stateDir string) []string { return paths(stateDir).files() }

// Disk implements microvm.VMM: the sandbox's ext4 image, a copy of its
// template's.
func (v *vmm) Disk(stateDir string) string { return paths(stateDir).disk }
