package qemu

import (
	"context"
	"fmt"
	"os"
	"time"

	"roost.dev/roost/runtime/microvm"
)

// snapshotFD names the descriptor of the snapshot file in QEMU.
const snapshotFD = "roost-snapshot"

// Snapshot implements microvm.VMM: the vCPUs stop, and QEMU migrates its
// state into the snapshot file (memory.snap), itself: the stream goes
// into a descriptor we pass it (fd: migration), with nothing in between
// that could still be writing when the migration reports completion, as
// a pipe to a command would be. The disk overlay stays as it is.
func (v *vmm) Snapshot(ctx context.Context, m *microvm.Machine) error {
	p := paths(m.StateDir)
	tmp := p.snapshot + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("snapshot file: %w", err)
	}
	err = withQMP(ctx, m, func(q *qmp) error { return migrateOut(ctx, q, f) })
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p.snapshot)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	m.Snapshot = p.snapshot
	return nil
}

// migrateOut stops the VM and migrates its state into f; on failure the
// VM runs on.
func migrateOut(ctx context.Context, q *qmp, f *os.File) error {
	if err := q.sendFile(ctx, snapshotFD, f); err != nil {
		return err
	}
	if _, err := q.execute(ctx, "stop", nil); err != nil {
		return err
	}
	_, err := q.execute(ctx, "migrate", map[string]any{"uri": "fd:" + snapshotFD})
	if err == nil {
		err = q.waitMigration(ctx)
	}
	if err != nil {
		_, _ = q.execute(context.WithoutCancel(ctx), "cont", nil)
	}
	return err
}

// Restore implements microvm.VMM: a new QEMU with the sandbox's command
// line waits for a migration stream, reads the snapshot file, and
// continues.
func (v *vmm) Restore(ctx context.Context, m *microvm.Machine) error {
	if err := v.launch(ctx, m, true); err != nil {
		return err
	}
	f, err := os.Open(m.Snapshot)
	if err != nil {
		return fmt.Errorf("snapshot file: %w", err)
	}
	defer f.Close()
	if err := withQMP(ctx, m, func(q *qmp) error { return migrateIn(ctx, q, f) }); err != nil {
		return err
	}
	// The snapshot matches the disk only until the guest writes to it
	// again. A capture's (a fork's) is not the sandbox's to remove.
	if microvm.OwnFile(m.StateDir, m.Snapshot) {
		_ = os.Remove(m.Snapshot)
	}
	m.Snapshot = ""
	return nil
}

// migrateIn loads the snapshot f into a QEMU waiting for it, and
// continues the VM.
func migrateIn(ctx context.Context, q *qmp, f *os.File) error {
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
			return fmt.Errorf("vm state %q after loading the snapshot (see qemu.log)", st)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	_, err := q.execute(ctx, "cont", nil)
	return err
}
