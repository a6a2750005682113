package microvm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

// captureFile is the Shell's description of a capture, in its directory.
const captureFile = "capture.json"

// captureVersion is the version of capture's layout.
const captureVersion = 1

// capture is what a capture's directory says of the VM it was taken of:
// the driver that took it, and the VM's saved state then (its shape, and
// the VMM's fields its forks start from).
type capture struct {
	Version int    `json:"version"`
	Driver  string `json:"driver"`
	VM      State  `json:"vm"`
}

// Capture implements runtime.Forker: the VMM writes the VM's memory,
// device state and a copy of its disk into dir, and the VM runs on.
func (s *Shell) Capture(ctx context.Context, id, dir string) error {
	m, err := s.running(id)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("capture %s: %w", id, err)
	}
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	err = s.vmm.Capture(ctx, m, dir)
	if err == nil {
		err = writeCapture(dir, capture{Version: captureVersion, Driver: s.cfg.Name, VM: m.State})
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return fmt.Errorf("capture %s: %w", id, err)
	}
	m.Log.Info("sandbox captured", "dir", dir)
	return nil
}

// Fork implements runtime.Forker: a new VM with the captured one's shape
// and a copy of its disk, whose VMM loads the captured memory and device
// state instead of booting.
func (s *Shell) Fork(ctx context.Context, spec runtime.Spec, dir string) (runtime.Instance, error) {
	if err := s.validate(spec); err != nil {
		return runtime.Instance{}, err
	}
	c, err := readCapture(dir)
	if err != nil {
		return runtime.Instance{}, err
	}
	switch {
	case c.Driver != s.cfg.Name:
		return runtime.Instance{}, fmt.Errorf("capture %s was taken by %s, not %s: %w", dir, c.Driver, s.cfg.Name, errdefs.ErrInvalid)
	case spec.Limits.MemoryMB != 0 && spec.Limits.MemoryMB != c.VM.MemoryMB,
		spec.Limits.VCPUs != 0 && spec.Limits.VCPUs != c.VM.VCPUs:
		return runtime.Instance{}, fmt.Errorf("capture %s has %d MiB and %d vCPUs; a fork cannot have %d MiB and %d vCPUs: %w",
			dir, c.VM.MemoryMB, c.VM.VCPUs, spec.Limits.MemoryMB, spec.Limits.VCPUs, errdefs.ErrInvalid)
	}
	lim := spec.Limits.Or(DefaultLimits)
	lim.MemoryMB, lim.VCPUs = c.VM.MemoryMB, c.VM.VCPUs
	ctx, cancel := context.WithTimeout(ctx, snapshotTimeout)
	defer cancel()
	return s.start(ctx, spec, lim, func(m *Machine) error {
		return s.vmm.PrepareFork(ctx, m, spec, c.VM, dir)
	}, func(m *Machine) error {
		return s.vmm.Restore(ctx, m)
	})
}

func writeCapture(dir string, c capture) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, captureFile), b, 0o600)
}

// readCapture reads the description of the capture in dir: ErrNotFound
// when there is none, ErrInvalid when it is not one this Shell reads.
func readCapture(dir string) (capture, error) {
	var c capture
	b, err := os.ReadFile(filepath.Join(dir, captureFile))
	if errors.Is(err, fs.ErrNotExist) {
		return c, fmt.Errorf("no capture in %s: %w", dir, errdefs.ErrNotFound)
	}
	if err != nil {
		return c, fmt.Errorf("capture %s: %w", dir, err)
	}
	if err := json.Unmarshal(b, &c); err != nil || c.Version != captureVersion {
		return c, fmt.Errorf("capture %s: version %d, unreadable (%v): %w", dir, c.Version, err, errdefs.ErrInvalid)
	}
	return c, nil
}

// OwnFile reports whether path is a file of the sandbox whose state
// directory is stateDir, rather than of a capture it was forked from
// (which it must leave as it is).
func OwnFile(stateDir, path string) bool {
	rel, err := filepath.Rel(stateDir, path)
	return err == nil && filepath.IsLocal(rel)
}
