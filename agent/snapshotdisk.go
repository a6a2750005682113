package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"roost.dev/roost/runtime"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
)

// diskSkip are what a VM's disk holds that is not the sandbox's: the
// files the VM image adds to the template (/.roost: its init and envd)
// and the filesystem's own lost+found.
var diskSkip = map[string]bool{".roost": true, "lost+found": true}

// diskLayer is the layer of what a VM sandbox changed on its disk: the
// disk is exported (a copy, read on the host), mounted and compared with
// its template's tree. A running sandbox syncs its files and is paused
// meanwhile; a paused one is resumed for its sync and paused again (a
// frozen VM's page cache may hold writes its disk lacks). A hibernated
// or halted sandbox's disk is read as it lies: writes a hibernated VM
// still held in its page cache are in its memory, not in the snapshot.
func (m *Manager) diskLayer(ctx context.Context, sb *sandbox, rt runtime.DiskExporter) (content.Descriptor, error) {
	rec := sb.snapshot()
	if err := os.MkdirAll(filepath.Join(m.cfg.DataDir, "snapshots"), 0o700); err != nil {
		return content.Descriptor{}, err
	}
	dir, err := os.MkdirTemp(filepath.Join(m.cfg.DataDir, "snapshots"), "export-")
	if err != nil {
		return content.Descriptor{}, err
	}
	defer os.RemoveAll(dir)
	image, root := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "root")
	if err := m.exportQuiet(ctx, sb, rt, image); err != nil {
		return content.Descriptor{}, err
	}
	if err := os.Mkdir(root, 0o700); err != nil {
		return content.Descriptor{}, err
	}
	// Read-write, so ext4 replays its journal: the copy is ours.
	if b, err := exec.CommandContext(ctx, "mount", "-o", "loop,nodev,nosuid,noexec", "-t", "ext4", image, root).CombinedOutput(); err != nil {
		return content.Descriptor{}, fmt.Errorf("mount the exported disk: %w: %s", err, strings.TrimSpace(string(b)))
	}
	defer func() {
		if err := unix.Unmount(root, unix.MNT_DETACH); err != nil {
			m.log.Warn("exported disk not unmounted", "sandbox", rec.ID, "dir", root, "err", err)
		}
	}()
	return m.cfg.Blobs.PutWritten(ctx, func(w io.Writer) error {
		return build.LayerOfDiff(ctx, rec.Spec.RootFS, root, diskSkip, w)
	})
}

// exportQuiet exports a VM sandbox's disk to image with its files on it
// and its vCPUs stopped meanwhile; a running sandbox runs on after.
func (m *Manager) exportQuiet(ctx context.Context, sb *sandbox, rt runtime.DiskExporter, image string) error {
	rec := sb.snapshot()
	if rec.Hibernated || rec.Halted {
		return rt.ExportDisk(ctx, rec.Spec, image)
	}
	p, err := m.pauser()
	if err != nil {
		return err
	}
	if rec.State == StatePaused {
		if err := p.Resume(ctx, rec.key()); err != nil {
			return m.failLocked(sb, fmt.Errorf("resume it to sync its files: %w", err))
		}
	}
	m.syncFiles(ctx, rec)
	if err := p.Pause(ctx, rec.key()); err != nil {
		return m.failLocked(sb, fmt.Errorf("pause it while its disk is read: %w", err))
	}
	if rec.State == StateRunning {
		defer m.thawAfterSnapshot(ctx, sb, p)
	}
	return rt.ExportDisk(ctx, rec.Spec, image)
}
