package qemu

import (
	"context"
	"fmt"
	"os"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
)

// snapshotTimeout bounds writing or reading a memory snapshot.
const snapshotTimeout = 2 * time.Minute

// snapshotFD names the descriptor of the snapshot file in QEMU.
const snapshotFD = "roost-snapshot"

// Snapshot implements runtime.Snapshotter: it saves a sandbox's memory
// and device state to disk and ends its QEMU process (hibernation): the
// vCPUs are stopped, QEMU migrates its state into a file, and quits. The
// disk overlay stays as it is; Restore resumes the sandbox from both, in a
// new QEMU, on any network slot. It returns the snapshot file. The sandbox
// stays known to the driver (Destroy removes it, Stats reports nothing
// running).
func (d *Driver) Snapshot(ctx context.Context, id string) (string, error) {
	h, err := d.handles.Get(id)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	p := paths(h.rec.StateDir)
	tmp := p.snapshot + ".tmp"
	// QEMU writes the stream itself into a descriptor we pass it (fd:
	// migration): nothing in between that could still be writing when
	// the migration reports completion, as a pipe to a command would be.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("snapshot file: %w", err)
	}
	err = h.withQMP(ctx, func(q *qmp) error {
		if err := q.sendFile(ctx, snapshotFD, f); err != nil {
			return err
		}
		if _, err := q.execute(ctx, "stop", nil); err != nil {
			return err
		}
		if _, err := q.execute(ctx, "migrate", map[string]any{"uri": "fd:" + snapshotFD}); err != nil {
			_, _ = q.execute(context.WithoutCancel(ctx), "cont", nil)
			return err
		}
		if err := q.waitMigration(ctx); err != nil {
			_, _ = q.execute(context.WithoutCancel(ctx), "cont", nil)
			return fmt.Errorf("snapshot %s: %w", id, err)
		}
		return nil
	})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, p.snapshot); err != nil {
		return "", err
	}
	h.stop(ctx)
	if err := microvm.TeardownGuestNet(h.rec.Netns); err != nil {
		h.log.Warn("snapshot: guest network teardown failed", "err", err)
	}
	h.rec.Process, h.rec.Snapshot = microvm.Process{}, p.snapshot
	if err := h.rec.save(); err != nil {
		return "", err
	}
	h.log.Info("sandbox snapshotted", "file", p.snapshot)
	return p.snapshot, nil
}

// Restore implements runtime.Snapshotter: it resumes a snapshotted
// sandbox in a new QEMU process, on the network spec gives it (which may
// be another slot than before); spec's StateDir must be the one the snapshot was taken in. It works for a
// sandbox this driver snapshotted and, after an agent restart, for one
// whose state record says it is hibernated.
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
	if err := microvm.SetupGuestNet(spec.Network.Netns, spec.Network.Interface, spec.Network.Address.Addr(), d.cfg.Egress); err != nil {
		return runtime.Instance{}, err
	}
	h.rec.EnvdAddr = fmt.Sprintf("%s:%d", spec.Network.Address.Addr(), EnvdPort)
	h.rec.Netns = spec.Network.Netns
	if err := d.launch(ctx, h, spec.Network.Netns, true); err != nil {
		return runtime.Instance{}, err
	}
	fail := func(err error) (runtime.Instance, error) {
		h.kill()
		h.rec.Process = microvm.Process{}
		return runtime.Instance{}, err
	}
	f, err := os.Open(h.rec.Snapshot)
	if err != nil {
		return fail(fmt.Errorf("snapshot file: %w", err))
	}
	defer f.Close()
	err = h.withQMP(ctx, func(q *qmp) error {
		if err := q.sendFile(ctx, snapshotFD, f); err != nil {
			return err
		}
		if _, err := q.execute(ctx, "migrate-incoming", map[string]any{"uri": "fd:" + snapshotFD}); err != nil {
			return err
		}
		for {
			st, err := q.status(ctx)
			if err != nil {
				return err
			}
			if st == "paused" {
				break
			}
			if st != "inmigrate" {
				return fmt.Errorf("restore %s: vm state %q after loading the snapshot (see qemu.log)", spec.ID, st)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("restore %s: %w", spec.ID, ctx.Err())
			case <-time.After(5 * time.Millisecond):
			}
		}
		_, err := q.execute(ctx, "cont", nil)
		return err
	})
	if err != nil {
		return fail(err)
	}
	// The snapshot matches the disk only until the guest writes to it again.
	_ = os.Remove(h.rec.Snapshot)
	h.rec.Snapshot = ""
	if err := h.rec.save(); err != nil {
		return fail(err)
	}
	d.handles.Publish(spec.ID, h)
	h.log.Info("sandbox restored", "pid", h.rec.Pid, "envd", h.rec.EnvdAddr)
	return h.instance(), nil
}
