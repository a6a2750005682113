package firecracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
)

// The files of a capture, in its directory (beside the Shell's
// capture.json).
const (
	captureVMState = "vm.snap"     // Firecracker's vCPU and device state
	captureMemory  = "memory.snap" // the guest's memory
	captureDisk    = "rootfs.ext4" // a copy of the VM's disk
)

// resumeTimeout bounds resuming a VM after a capture, which must happen
// even when the capture's context has ended.
const resumeTimeout = 10 * time.Second

// Capture implements microvm.VMM: Firecracker writes a full snapshot of
// the paused VM into its jail, the snapshot and a copy of the disk go to
// dir, and the VM continues if it ran, on failure too.
func (v *vmm) Capture(ctx context.Context, m *microvm.Machine, dir string) error {
	a := newAPI(paths(m.StateDir).api)
	ran, err := pauseVM(ctx, a)
	if err != nil {
		return err
	}
	err = v.writeCapture(ctx, m, a, dir)
	if ran {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resumeTimeout)
		defer cancel()
		if rerr := a.call(rctx, http.MethodPatch, "/vm", vmState{State: "Resumed"}, nil); err == nil {
			err = rerr
		}
	}
	return err
}

// pauseVM pauses the VM unless it is paused already, and reports whether
// it ran.
func pauseVM(ctx context.Context, a *api) (bool, error) {
	var info instanceInfo
	if err := a.call(ctx, http.MethodGet, "/", nil, &info); err != nil {
		return false, err
	}
	if info.State == "Paused" {
		return false, nil
	}
	return true, a.call(ctx, http.MethodPatch, "/vm", vmState{State: "Paused"}, nil)
}

// writeCapture has the paused VM's state and memory written in its jail,
// under names of their own (the hibernation files and the diff base stay
// as they are), and copies them and the disk out to dir.
func (v *vmm) writeCapture(ctx context.Context, m *microvm.Machine, a *api, dir string) error {
	p := paths(m.StateDir)
	_ = microvm.RemoveFiles(p.captureState, p.captureMemory)
	defer microvm.RemoveFiles(p.captureState, p.captureMemory)
	req := snapshotCreate{SnapshotPath: v.vmPath(p.captureState), MemFilePath: v.vmPath(p.captureMemory), SnapshotType: "Full"}
	if err := a.put(ctx, "/snapshot/create", req); err != nil {
		return err
	}
	for _, f := range []struct{ from, to string }{
		{p.captureState, captureVMState}, {p.captureMemory, captureMemory}, {p.disk, captureDisk},
	} {
		if err := copyOutOfJail(f.from, filepath.Join(dir, f.to)); err != nil {
			return fmt.Errorf("capture %s: %w", f.to, err)
		}
	}
	v.rebase(m, p)
	return nil
}

// rebase keeps the VM's diff snapshots right after a capture. A full
// snapshot may restart Firecracker's dirty-page tracking, so that the next
// diff holds only the pages written since the capture: the base they are
// merged into must then be the capture's memory, not the one kept from
// the last restore (which the running VM still maps, privately: replacing
// the file leaves it be).
func (v *vmm) rebase(m *microvm.Machine, p statePaths) {
	if !v.cfg.DiffSnapshots || m.Memory != p.memory || !exists(p.memory) {
		return
	}
	if err := os.Rename(p.captureMemory, p.memory); err != nil {
		// A stale base would lose pages: the next snapshot is full.
		_ = os.Remove(p.memory)
		m.Memory = ""
		m.Log.Warn("capture: diff snapshot base not replaced; the next snapshot is full", "err", err)
	}
}

// copyOutOfJail copies src, a file in the VM's jail, to dst (new) outside
// it. The VMM's uid owns the jail and may have put a link to a host file,
// a FIFO or a device in src's place: only a regular file, opened without
// following links, is copied.
func copyOutOfJail(src, dst string) error {
	f, err := noFollow(src, os.O_RDONLY|syscall.O_NONBLOCK)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is a %v, not a regular file", src, st.Mode().Type())
	}
	// Through the descriptor: the file that was checked, not the path.
	return microvm.CopyFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), dst)
}

// PrepareFork implements microvm.VMM: the sandbox's jail gets copies
// (reflinks where the filesystem has them) of the capture's disk, state
// and memory, which Restore loads as a hibernated sandbox's and then
// removes. Copies, not hard links: Restore gives them to this VMM's uid,
// and a shared inode would change owner under every other fork. The
// captured VM's shape is in its snapshot.
func (v *vmm) PrepareFork(ctx context.Context, m *microvm.Machine, spec runtime.Spec, src microvm.State, dir string) error {
	if err := checkKernel(v.cfg.Kernel); err != nil {
		// Restore links the kernel into the jail, as Boot does.
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
	}
	if err := makeJailRoot(m.StateDir, m.ID); err != nil {
		return err
	}
	p := paths(m.StateDir)
	for _, f := range []struct{ from, to string }{
		{captureDisk, p.disk}, {captureVMState, p.vmstate}, {captureMemory, p.memory},
	} {
		_ = os.Remove(f.to)
		if err := microvm.CopyFile(filepath.Join(dir, f.from), f.to); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				err = fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
			}
			return fmt.Errorf("capture %s: %w", f.from, err)
		}
	}
	if err := saveMMDS(p, spec); err != nil {
		return err
	}
	m.Snapshot, m.Memory = p.vmstate, p.memory
	return nil
}

// saveMMDS keeps the guest's MMDS contents in its state directory, where
// Restore, which has no spec, finds them: Firecracker does not keep them
// in a snapshot.
func saveMMDS(p statePaths, spec runtime.Spec) error {
	b, err := json.Marshal(mmdsContents(spec))
	if err != nil {
		return fmt.Errorf("mmds: %w", err)
	}
	if err := os.WriteFile(p.mmds, b, 0o600); err != nil {
		return fmt.Errorf("mmds: %w", err)
	}
	return nil
}

// loadMMDS is the guest's MMDS contents saveMMDS kept; nil for a sandbox
// an older agent started, which kept none.
func loadMMDS(p statePaths) (json.RawMessage, error) {
	b, err := os.ReadFile(p.mmds)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil || !json.Valid(b) {
		return nil, fmt.Errorf("mmds %s: unreadable (%v)", p.mmds, err)
	}
	return b, nil
}
