package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
)

// The files of a capture, in its directory.
const (
	captureMemory = "memory.snap" // QEMU's migration stream: devices and memory
	captureDisk   = "disk.qcow2"  // a copy of the VM's disk, over the template image
)

// Capture implements microvm.VMM: QEMU migrates the stopped VM into the
// capture's memory file, the disk, flushed and idle for the migration, is
// copied beside it, and the VM continues if it ran.
func (v *vmm) Capture(ctx context.Context, m *microvm.Machine, dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, captureMemory), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("capture file: %w", err)
	}
	defer f.Close()
	err = withQMP(ctx, m, func(q *qmp) error {
		status, err := q.status(ctx)
		if err != nil {
			return err
		}
		if err := migrateOut(ctx, q, f); err != nil {
			return err
		}
		err = microvm.CopyFile(paths(m.StateDir).disk, filepath.Join(dir, captureDisk))
		if status == "running" {
			// After a completed migration, cont takes the disk back.
			if _, cerr := q.execute(context.WithoutCancel(ctx), "cont", nil); err == nil {
				err = cerr
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	return f.Sync()
}

// PrepareFork implements microvm.VMM: the sandbox's disk is a copy of the
// capture's, over the template image the captured VM had, and QEMU's
// command line is the captured VM's shape on this sandbox's files.
func (v *vmm) PrepareFork(ctx context.Context, m *microvm.Machine, spec runtime.Spec, src microvm.State, dir string) error {
	kernel, err := v.prepareKernel(ctx)
	if err != nil {
		return err
	}
	image := backingImage(src.Args)
	if _, err := os.Stat(image); image == "" || err != nil {
		return fmt.Errorf("capture %s: its template image %q is gone: %w", dir, image, errdefs.ErrNotFound)
	}
	p := paths(m.StateDir)
	_ = os.Remove(p.disk)
	if err := microvm.CopyFile(filepath.Join(dir, captureDisk), p.disk); err != nil {
		return fmt.Errorf("capture disk: %w", err)
	}
	m.Args = v.args(spec, runtime.Limits{VCPUs: src.VCPUs, MemoryMB: src.MemoryMB}, kernel, p, image)
	m.Snapshot = filepath.Join(dir, captureMemory)
	return nil
}

// backingImage is the template image a saved command line's disk is
// over, "" when it names none.
func backingImage(args []string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-drive" {
			if b, ok := splitOpts(args[i+1]).get("backing.file.filename"); ok {
				return b
			}
		}
	}
	return ""
}
