package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
)

// snapshotTimeout bounds writing or loading a snapshot.
const snapshotTimeout = 2 * time.Minute

// Snapshot implements runtime.Snapshotter: it pauses the VM, has
// Firecracker write its state and memory to the state directory, and
// ends the process (hibernation). With DiffSnapshots, a sandbox that was
// restored before writes only the pages it dirtied since, which are
// merged into the memory file kept from the restore. The disk stays as
// it is; Restore resumes the sandbox from both, in a new process, on any
// network slot. It returns the VM state file.
func (d *Driver) Snapshot(ctx context.Context, id string) (string, error) {
	h, err := d.handles.Get(id)
	if err != nil {
		return "", err
	}
	if !h.running() {
		return "", fmt.Errorf("sandbox %s has no running vm: %w", id, errdefs.ErrConflict)
	}
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	p, a := paths(h.rec.StateDir), h.api()
	var info instanceInfo
	if err := a.call(ctx, http.MethodGet, "/", nil, &info); err != nil {
		return "", err
	}
	paused := info.State == "Paused"
	if !paused {
		if err := a.call(ctx, http.MethodPatch, "/vm", vmState{State: "Paused"}, nil); err != nil {
			return "", err
		}
	}
	resume := func() {
		if !paused {
			_ = a.call(context.WithoutCancel(ctx), http.MethodPatch, "/vm", vmState{State: "Resumed"}, nil)
		}
	}
	req := snapshotCreate{SnapshotPath: p.vmstate + ".tmp", MemFilePath: p.memory + ".tmp", SnapshotType: "Full"}
	diff := d.cfg.DiffSnapshots && h.rec.Memory == p.memory && exists(p.memory)
	if diff {
		req.MemFilePath, req.SnapshotType = p.memoryDiff, "Diff"
	}
	for _, f := range []string{req.SnapshotPath, req.MemFilePath} {
		_ = os.Remove(f)
	}
	if err := a.put(ctx, "/snapshot/create", req); err != nil {
		resume()
		return "", fmt.Errorf("snapshot %s: %w", id, err)
	}
	if diff {
		err = mergeDiff(p.memoryDiff, p.memory)
		os.Remove(p.memoryDiff)
		if err != nil {
			// The base is half merged: the next snapshot must be full.
			os.Remove(p.memory)
			h.rec.Memory = ""
			resume()
			return "", fmt.Errorf("snapshot %s: merge memory diff: %w", id, err)
		}
	} else if err := os.Rename(req.MemFilePath, p.memory); err != nil {
		resume()
		return "", err
	}
	if err := os.Rename(req.SnapshotPath, p.vmstate); err != nil {
		resume()
		return "", err
	}
	h.kill()
	if err := microvm.TeardownGuestNet(h.rec.Netns); err != nil {
		h.log.Warn("snapshot: guest network teardown failed", "err", err)
	}
	h.rec.Process, h.rec.Snapshot, h.rec.Memory = microvm.Process{}, p.vmstate, p.memory
	if err := h.rec.save(); err != nil {
		return "", err
	}
	h.log.Info("sandbox snapshotted", "file", p.vmstate, "type", req.SnapshotType)
	return p.vmstate, nil
}

// Restore implements runtime.Snapshotter: it loads a snapshotted sandbox
// into a new Firecracker process, on the network spec gives it (which may
// be another slot than before), and resumes it. spec's StateDir must be
// the one the snapshot was taken in. It works for a sandbox this driver
// snapshotted and, after an agent restart, for one whose state record
// says it is hibernated.
func (d *Driver) Restore(ctx context.Context, spec runtime.Spec) (inst runtime.Instance, err error) {
	if spec.Network.Netns == "" || !spec.Network.Address.Addr().Is4() {
		return runtime.Instance{}, fmt.Errorf("no network: %w", errdefs.ErrInvalid)
	}
	h, gerr := d.handles.Get(spec.ID)
	if gerr == nil && h.rec.Pid != 0 {
		return runtime.Instance{}, fmt.Errorf("sandbox %s is running: %w", spec.ID, errdefs.ErrConflict)
	}
	if gerr != nil {
		if err := d.handles.Reserve(spec.ID); err != nil {
			return runtime.Instance{}, err
		}
		rec, lerr := loadRecord(spec.StateDir)
		if lerr != nil || rec.Snapshot == "" {
			d.handles.Publish(spec.ID, nil)
			return runtime.Instance{}, fmt.Errorf("sandbox %s has no snapshot (%v): %w", spec.ID, lerr, errdefs.ErrNotFound)
		}
		h = &handle{rec: rec, log: d.log.With("sandbox", spec.ID)}
		defer func() {
			if err != nil {
				d.handles.Publish(spec.ID, nil)
			}
		}()
	}
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	if err := microvm.SetupGuestNet(spec.Network.Netns, spec.Network.Interface, spec.Network.Address.Addr(), microvm.RateLimit{}); err != nil {
		return runtime.Instance{}, err
	}
	h.rec.EnvdAddr = fmt.Sprintf("%s:%d", spec.Network.Address.Addr(), EnvdPort)
	h.rec.Netns = spec.Network.Netns
	if err := d.launch(ctx, h); err != nil {
		return runtime.Instance{}, err
	}
	fail := func(err error) (runtime.Instance, error) {
		h.kill()
		h.rec.Process = microvm.Process{}
		return runtime.Instance{}, fmt.Errorf("restore %s: %w (firecracker log: %s)", spec.ID, err, h.logTail())
	}
	a := h.api()
	if err := d.putLogger(ctx, a, paths(h.rec.StateDir)); err != nil {
		return fail(err)
	}
	load := snapshotLoad{
		SnapshotPath: h.rec.Snapshot, MemBackend: &memoryBackend{Type: "File", Path: h.rec.Memory},
		TrackDirtyPages: d.cfg.DiffSnapshots, ResumeVM: true, ClockRealtime: true,
	}
	if err := a.put(ctx, "/snapshot/load", load); err != nil {
		return fail(err)
	}
	// The VM state matches the disk only until the guest writes to it
	// again. The memory file is mapped privately by the new process:
	// kept, it is the base of the next diff snapshot; else it goes.
	_ = os.Remove(h.rec.Snapshot)
	h.rec.Snapshot = ""
	if !d.cfg.DiffSnapshots {
		_ = os.Remove(h.rec.Memory)
		h.rec.Memory = ""
	}
	if err := h.rec.save(); err != nil {
		return fail(err)
	}
	d.handles.Publish(spec.ID, h)
	h.log.Info("sandbox restored", "pid", h.rec.Pid, "envd", h.rec.EnvdAddr)
	return h.instance(), nil
}

// mergeDiff writes the data regions of the sparse diff snapshot diff
// (the pages dirtied since the last snapshot, at their offsets; holes
// elsewhere) over the memory file base.
func mergeDiff(diff, base string) error {
	in, err := os.Open(diff)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(base, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	st, err := in.Stat()
	if err != nil {
		out.Close()
		return err
	}
	var off int64
	for off < st.Size() {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			out.Close()
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			out.Close()
			return fmt.Errorf("seek hole: %w", err)
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data)); err != nil {
			out.Close()
			return err
		}
		off = hole
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
