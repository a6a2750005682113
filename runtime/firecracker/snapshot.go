package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"

	"roost.dev/roost/runtime/microvm"
	"roost.dev/roost/sparse"
)

// Snapshot implements microvm.VMM: it pauses the VM and has Firecracker
// write its state and memory to the state directory. With DiffSnapshots,
// a sandbox that was restored before writes only the pages it dirtied
// since, which are merged into the memory file kept from the restore.
func (v *vmm) Snapshot(ctx context.Context, m *microvm.Machine) error {
	a := newAPI(paths(m.StateDir).api)
	ran, err := pauseVM(ctx, a)
	if err != nil {
		return err
	}
	err = v.writeSnapshot(ctx, m, a)
	if err != nil && ran {
		_ = a.call(context.WithoutCancel(ctx), http.MethodPatch, "/vm", vmState{State: "Resumed"}, nil)
	}
	return err
}

// writeSnapshot has the paused VM's state and memory written, and puts
// them in place.
func (v *vmm) writeSnapshot(ctx context.Context, m *microvm.Machine, a *api) error {
	p := paths(m.StateDir)
	req := snapshotCreate{SnapshotPath: p.vmstate + ".tmp", MemFilePath: p.memory + ".tmp", SnapshotType: "Full"}
	diff := v.cfg.DiffSnapshots && m.Memory == p.memory && exists(p.memory)
	if diff {
		req.MemFilePath, req.SnapshotType = p.memoryDiff, "Diff"
	}
	_ = microvm.RemoveFiles(req.SnapshotPath, req.MemFilePath)
	// Firecracker writes them in its jail, by the paths it sees there.
	in := req
	in.SnapshotPath, in.MemFilePath = v.vmPath(req.SnapshotPath), v.vmPath(req.MemFilePath)
	if err := a.put(ctx, "/snapshot/create", in); err != nil {
		return err
	}
	if diff {
		err := mergeDiff(p.memoryDiff, p.memory)
		os.Remove(p.memoryDiff)
		if err != nil {
			// The base is half merged: the next snapshot must be full.
			os.Remove(p.memory)
			m.Memory = ""
			return fmt.Errorf("merge memory diff: %w", err)
		}
	} else if err := os.Rename(req.MemFilePath, p.memory); err != nil {
		return err
	}
	if err := os.Rename(req.SnapshotPath, p.vmstate); err != nil {
		return err
	}
	m.Snapshot, m.Memory = p.vmstate, p.memory
	m.Log.Debug("firecracker snapshot written", "type", req.SnapshotType)
	return nil
}

// Restore implements microvm.VMM: a new Firecracker loads the snapshot,
// is given the guest's MMDS contents (which a snapshot does not hold),
// and resumes the VM.
func (v *vmm) Restore(ctx context.Context, m *microvm.Machine) error {
	p := paths(m.StateDir)
	mmds, err := loadMMDS(p)
	if err != nil {
		return err
	}
	if err := intoJail(m); err != nil {
		return err
	}
	if err := v.launch(ctx, m); err != nil {
		return err
	}
	a := newAPI(p.api)
	if err := v.putLogger(ctx, a, m); err != nil {
		return err
	}
	// With MMDS contents to put, the VM stays paused until they are
	// there: the guest never finds its metadata missing.
	load := snapshotLoad{
		SnapshotPath: v.vmPath(m.Snapshot), MemBackend: &memoryBackend{Type: "File", Path: v.vmPath(m.Memory)},
		TrackDirtyPages: v.cfg.DiffSnapshots, ResumeVM: mmds == nil, ClockRealtime: true,
	}
	if err := a.put(ctx, "/snapshot/load", load); err != nil {
		return fmt.Errorf("%w (firecracker log: %s)", err, logTail(m))
	}
	if mmds != nil {
		if err := a.put(ctx, "/mmds", mmds); err != nil {
			return err
		}
		if err := setState(ctx, m, "Resumed"); err != nil {
			return err
		}
	}
	// The VM state matches the disk only until the guest writes to it
	// again. The memory file is mapped privately by the new process:
	// kept, it is the base of the next diff snapshot; else it goes. Only
	// the sandbox's own files go, never a capture's.
	removeOwn(m, &m.Snapshot)
	if !v.cfg.DiffSnapshots {
		removeOwn(m, &m.Memory)
	}
	return nil
}

// removeOwn removes the snapshot file *f if it is m's own (in its state
// directory), and forgets it.
func removeOwn(m *microvm.Machine, f *string) {
	if microvm.OwnFile(m.StateDir, *f) {
		_ = os.Remove(*f)
	}
	*f = ""
}

// mergeDiff writes the data regions of the sparse diff snapshot diff
// (the pages dirtied since the last snapshot, at their offsets; holes
// elsewhere) over the memory file base.
func mergeDiff(diff, base string) error {
	// Both are in the jail, the VMM's to replace with links.
	in, err := noFollow(diff, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := noFollow(base, os.O_WRONLY)
	if err != nil {
		return err
	}
	st, err := in.Stat()
	if err != nil {
		out.Close()
		return err
	}
	exts, err := sparse.Extents(in, st.Size())
	if err != nil {
		out.Close()
		return err
	}
	for _, e := range exts {
		if _, err := io.Copy(io.NewOffsetWriter(out, e.Off), io.NewSectionReader(in, e.Off, e.Len)); err != nil {
			out.Close()
			return err
		}
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// intoJail moves the snapshot files of a sandbox an older agent
// hibernated (copies those outside its state directory), and its disk,
// from its state directory into the jail, where Firecracker can open
// them, and gives them to the VMM's uid.
func intoJail(m *microvm.Machine) error {
	if err := makeJailRoot(m.StateDir, m.ID); err != nil {
		return err
	}
	jd := jailDir(m.StateDir)
	for _, f := range []*string{&m.Snapshot, &m.Memory} {
		if *f == "" || filepath.Dir(*f) == jd {
			continue
		}
		to := filepath.Join(jd, filepath.Base(*f))
		move := os.Rename
		if !microvm.OwnFile(m.StateDir, *f) {
			// Another's file (a capture's): the jail gets a copy.
			move = func(from, to string) error {
				_ = os.Remove(to)
				return microvm.CopyFile(from, to)
			}
		}
		if err := move(*f, to); err != nil {
			return fmt.Errorf("move snapshot into the jail: %w", err)
		}
		*f = to
	}
	if m.UID == 0 {
		return nil
	}
	for _, f := range []string{m.Snapshot, m.Memory, paths(m.StateDir).disk} {
		if f != "" {
			if err := os.Lchown(f, m.UID, m.UID); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("jail: %w", err)
			}
		}
	}
	return nil
}
