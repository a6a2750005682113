package qemu

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// ExportDisk implements microvm.VMM: qemu-img reads the sandbox's qcow2
// layer with the template image under it into a sparse raw image. The
// drive is opened without locks (it is its QEMU's alone), so a paused
// QEMU does not stand in the way; the guest has flushed it (the manager
// has it sync first).
func (v *vmm) ExportDisk(ctx context.Context, stateDir, dst string) error {
	b, err := exec.CommandContext(ctx, v.cfg.QEMUImg, "convert", "-U", "-q", "-O", "raw", paths(stateDir).disk, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-img convert: %w: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}
