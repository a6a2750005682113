package qemu

import (
	"context"
	"fmt"
	"log/slog"
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

// vmm is QEMU as the microvm.Shell drives it, over QMP.
type vmm struct {
	cfg    Config
	log    *slog.Logger
	kvmErr error // why KVM is not used, when New looked
	images *vmimage.Images

	kernelMu sync.Mutex // guards kernel
	kernel   *vmimage.Kernel
}

var _ microvm.VMM = (*vmm)(nil)

// prepareKernel extracts the host's kernel and builds the initramfs once.
func (v *vmm) prepareKernel(ctx context.Context) (vmimage.Kernel, error) {
	v.kernelMu.Lock()
	defer v.kernelMu.Unlock()
	if v.kernel != nil {
		return *v.kernel, nil
	}
	hk, err := vmimage.FindHostKernel(v.cfg.BootDir, v.cfg.ModulesDir)
	if err != nil {
		return vmimage.Kernel{}, fmt.Errorf("guest kernel: %w: %w", err, errdefs.ErrUnavailable)
	}
	k, err := vmimage.PrepareKernel(ctx, hk, v.cfg.Init, filepath.Join(v.cfg.DataDir, "kernels"))
	if err != nil {
		return vmimage.Kernel{}, fmt.Errorf("guest kernel: %w", err)
	}
	v.kernel = &k
	return k, nil
}

// Validate implements microvm.VMM.
func (v *vmm) Validate(spec runtime.Spec) error {
	if strings.ContainsAny(spec.ID, " ,=") {
		// QEMU's option syntax would split it.
		return fmt.Errorf("sandbox id %q: %w", spec.ID, errdefs.ErrInvalid)
	}
	if err := microvm.CheckVolumes(spec); err != nil {
		return err
	}
	if n := len(v.cmdline(spec)); n > microvm.MaxCmdline {
		return fmt.Errorf("guest command line of %d bytes (the environment is passed on it) exceeds %d: %w", n, microvm.MaxCmdline, errdefs.ErrInvalid)
	}
	return nil
}

// Prepare implements microvm.VMM: the kernel, the template's image, the
// sandbox's disk over it, and QEMU's command line.
func (v *vmm) Prepare(ctx context.Context, m *microvm.Machine, spec runtime.Spec, lim runtime.Limits) error {
	kernel, err := v.prepareKernel(ctx)
	if err != nil {
		return err
	}
	image, err := v.images.Get(ctx, vmimage.ImageSpec{RootFS: spec.RootFS, Envd: spec.Envd, Init: v.cfg.Init, SizeMB: lim.DiskMB})
	if err != nil {
		return fmt.Errorf("template image: %w", err)
	}
	p := paths(m.StateDir)
	if err := v.overlay(ctx, image, p.disk); err != nil {
		return err
	}
	m.Args = v.args(spec, lim, kernel, p, image)
	return nil
}

// overlay creates the sandbox's disk: a qcow2 layer over the read-only
// template image, so creating a sandbox copies nothing.
func (v *vmm) overlay(ctx context.Context, base, disk string) error {
	_ = os.Remove(disk)
	b, err := exec.CommandContext(ctx, v.cfg.QEMUImg, "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", disk).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img create overlay: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// Boot implements microvm.VMM: QEMU boots the guest as it starts.
func (v *vmm) Boot(ctx context.Context, m *microvm.Machine, spec runtime.Spec, lim runtime.Limits) error {
	if err := v.launch(ctx, m, false); err != nil {
		return err
	}
	m.Log.Debug("qemu started", "pid", m.Pid, "kvm", *v.cfg.KVM)
	return nil
}

// Attach implements microvm.VMM.
func (v *vmm) Attach(ctx context.Context, m *microvm.Machine) (string, error) {
	var status string
	err := withQMP(ctx, m, func(q *qmp) (err error) { status, err = q.status(ctx); return err })
	return status, err
}

// Pause implements microvm.VMM (QMP stop: the vCPUs halt, memory stays).
func (v *vmm) Pause(ctx context.Context, m *microvm.Machine) error { return command(ctx, m, "stop") }

// Resume implements microvm.VMM.
func (v *vmm) Resume(ctx context.Context, m *microvm.Machine) error { return command(ctx, m, "cont") }

// Stop implements microvm.VMM: it asks QEMU to quit and kills it if it
// has not within ctx.
func (v *vmm) Stop(ctx context.Context, m *microvm.Machine) {
	if m.Running() {
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = command(qctx, m, "quit")
		cancel()
		if m.WaitExit(ctx, 5*time.Second) {
			return
		}
	}
	m.Kill()
}

// Files implements microvm.VMM.
// Disk implements microvm.VMM: the sandbox's qcow2 layer, what it wrote
// over its template.
func (v *vmm) Disk(stateDir string) string { return paths(stateDir).disk }

func (v *vmm) Files(stateDir string) []string {
	p := paths(stateDir)
	return []string{p.disk, p.qmp, p.snapshot}
}
