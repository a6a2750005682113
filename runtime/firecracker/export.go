package firecracker

import "context"

// ExportDisk implements microvm.VMM: the jail's raw disk is copied out
// (reflinked where the filesystem can), a regular file only (see
// copyOutOfJail). Firecracker writes the guest's flushes straight to it.
func (v *vmm) ExportDisk(_ context.Context, stateDir, dst string) error {
	return copyOutOfJail(paths(stateDir).disk, dst)
}
