package namespace

import (
	"context"
	"fmt"
	"os"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/proc"
)

// Halting (runtime.Halter, E2B's keepMemory: false) frees what a
// hibernation frees, its cgroup (and with it every process and its
// memory) and its mounts, without writing the processes down: only the
// disk image stays, with the sandbox's host ID range and state directory.
// Boot starts the sandbox as Create does, from that image, with a new
// boot id.

var _ runtime.Halter = (*Driver)(nil)

// haltTimeout bounds ending a sandbox's processes and detaching its
// mounts.
const haltTimeout = 30 * time.Second

// Halt implements runtime.Halter. A paused sandbox is halted as well as a
// running one. When its processes do not all end, Halt fails and leaves
// the sandbox's mounts as they were: a process left could go on writing
// the disk that Boot would mount a second time.
func (d *Driver) Halt(ctx context.Context, id string) (runtime.DriverState, error) {
	h, err := d.running(id)
	if err != nil {
		return runtime.DriverState{}, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), haltTimeout)
	defer cancel()
	h.closeMeter()
	if err := h.group.Delete(ctx); err != nil {
		return runtime.DriverState{}, fmt.Errorf("halt sandbox %s: %w", id, err)
	}
	d.release(ctx, h) // the cgroup is gone already; this detaches the mounts
	rec := h.rec
	rec.Process, rec.Halted = proc.Process{}, true
	d.handles.Publish(id, &handle{rec: rec, log: h.log})
	h.log.Info("sandbox halted: its disk is kept")
	inst, err := rec.instance()
	return inst.State, err
}

// Boot implements runtime.Halter: the halted sandbox starts as Create
// starts one, from the disk image Halt kept, on spec.Network, with a new
// boot id. A failed boot leaves it halted, for another try.
func (d *Driver) Boot(ctx context.Context, spec runtime.Spec, st runtime.DriverState) (runtime.Instance, error) {
	if err := validate(spec); err != nil {
		return runtime.Instance{}, err
	}
	rec, err := d.halted(spec, st)
	if err != nil {
		return runtime.Instance{}, err
	}
	log := d.log.With("sandbox", spec.ID)
	d.handles.Delete(spec.ID)
	r, err := d.handles.Reserve(spec.ID)
	if err != nil {
		return runtime.Instance{}, err
	}
	published := false
	defer func() {
		r.Release()
		if !published { // still halted
			d.handles.Publish(spec.ID, &handle{rec: rec, log: log})
		}
	}()
	if err := d.closeStateDir(spec.StateDir, hostID(rec.IDs)); err != nil {
		return runtime.Instance{}, fmt.Errorf("boot sandbox %s: %w", spec.ID, err)
	}
	h, inst, err := d.start(ctx, r, spec, rec.IDs, rec.Layers, withDefaults(spec.Limits))
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("boot sandbox %s: %w", spec.ID, err)
	}
	published = true
	h.log.Info("sandbox booted afresh from its kept disk", "pid", inst.Pid, "envd", h.rec.EnvdAddr, "previous_boot_id", rec.BootID)
	return inst, nil
}

// halted is the record of spec's halted sandbox: the driver's own, or
// st's after an agent restart (its ID range then claimed again).
func (d *Driver) halted(spec runtime.Spec, st runtime.DriverState) (record, error) {
	if h, err := d.handles.Get(spec.ID); err == nil {
		if !h.rec.Halted {
			return record{}, fmt.Errorf("sandbox %s is not halted: %w", spec.ID, errdefs.ErrConflict)
		}
		return h.rec, nil
	}
	rec, err := loadRecord(spec, st)
	if err != nil {
		return record{}, fmt.Errorf("sandbox %s: %w", spec.ID, err)
	}
	if !rec.Halted {
		return record{}, fmt.Errorf("sandbox %s was not halted: %w", spec.ID, errdefs.ErrInvalid)
	}
	if image, _, _ := paths(spec.StateDir); !exists(image) {
		return record{}, fmt.Errorf("sandbox %s: its disk image %s: %w", spec.ID, image, errdefs.ErrNotFound)
	}
	d.mu.Lock()
	d.ids.adoptLocked(rec.IDs, spec.ID)
	d.mu.Unlock()
	return rec, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
