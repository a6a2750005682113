package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/mountinfo"
	"roost.dev/roost/runtime"
)

// Volumes (docs/persistence.md). A volume is an ext4 image, <id>.img in
// the volume directory (Config.VolumeDir, default <data>/volumes), with a
// journal: it outlives every sandbox that mounts it. The agent mounts it
// on the host at <data>/volumes/mnt/<id> (a loop mount, nosuid, nodev)
// when a namespace sandbox or the content API needs it, and keeps it
// mounted; a VM sandbox gets the image itself, so the agent unmounts it
// first and the content API answers 409 while the VM has it.

// Bounds of a volume's size.
const (
	MinVolumeMB = 16
	MaxVolumeMB = 1 << 20 // 1 TiB
)

// volumes are the host's volume images and their host mounts.
type volumes struct {
	images string // where the images are
	mnt    string // where they are mounted on the host
	log    *slog.Logger
	mu     sync.Mutex // serialises making, mounting, unmounting and removing volumes
}

func newVolumes(dataDir, volumeDir string, log *slog.Logger) *volumes {
	if volumeDir == "" {
		volumeDir = filepath.Join(dataDir, "volumes")
	}
	return &volumes{images: volumeDir, mnt: filepath.Join(dataDir, "volumes", "mnt"), log: log}
}

func (v *volumes) image(id string) string { return filepath.Join(v.images, id+".img") }
func (v *volumes) dir(id string) string   { return filepath.Join(v.mnt, id) }

// checkVolumeID refuses IDs that cannot name a file; errdefs.ErrInvalid.
func checkVolumeID(id string) error {
	if !validID(id) {
		return fmt.Errorf("volume id %q must be 1-%d characters of a-z, 0-9 and '-', not starting with '-': %w", id, maxIDLen, errdefs.ErrInvalid)
	}
	return nil
}

// create makes volume id: an empty ext4 image of sizeMB whose root
// every user of a sandbox may write (mode 0777, owner 0, which is a
// sandbox's root).
func (v *volumes) create(ctx context.Context, id string, sizeMB int64) error {
	if err := checkVolumeID(id); err != nil {
		return err
	}
	if sizeMB < MinVolumeMB || sizeMB > MaxVolumeMB {
		return fmt.Errorf("volume size %d MiB: must be between %d MiB and %d MiB: %w", sizeMB, MinVolumeMB, MaxVolumeMB, errdefs.ErrInvalid)
	}
	if err := os.MkdirAll(v.images, 0o700); err != nil {
		return fmt.Errorf("volume directory: %w", err)
	}
	if err := checkVolumeSpace(v.images, sizeMB); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	img := v.image(id)
	if _, err := os.Lstat(img); err == nil {
		return fmt.Errorf("volume %s: %w", id, errdefs.ErrAlreadyExists)
	}
	tmp := img + ".new"
	_ = os.Remove(tmp) // a crash may have left it
	if err := mkfsVolume(ctx, tmp, sizeMB); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := v.openRoot(ctx, tmp, v.dir(id)); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, img); err != nil {
		_ = unmountVolume(v.dir(id))
		os.Remove(tmp)
		return fmt.Errorf("volume %s: %w", id, err)
	}
	v.log.Info("volume created", "volume", id, "size_mb", sizeMB, "image", img)
	return nil
}

// openRoot mounts the new image at dir and makes its root writable for
// all; it stays mounted, ready for the content API.
func (v *volumes) openRoot(ctx context.Context, image, dir string) error {
	if err := mountVolume(ctx, image, dir); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		_ = unmountVolume(dir)
		return fmt.Errorf("volume root: %w", err)
	}
	return nil
}

// checkVolumeSpace refuses a volume the filesystem of dir cannot hold:
// larger than it is (ErrInvalid: it never fits), or than its free space
// (ErrCapacity). Images are sparse, but a volume is a promise of space.
func checkVolumeSpace(dir string, sizeMB int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("free space of %s: %w", dir, err)
	}
	unit := st.Frsize
	if unit <= 0 {
		unit = st.Bsize
	}
	size, free := int64(st.Blocks*uint64(unit)>>20), int64(st.Bavail*uint64(unit)>>20)
	switch {
	case sizeMB > size:
		return fmt.Errorf("volume of %d MiB: larger than the host's volume filesystem can hold (%d MiB): %w", sizeMB, size, errdefs.ErrInvalid)
	case sizeMB > free:
		return fmt.Errorf("volume of %d MiB: the host's volume filesystem has %d MiB free: %w", sizeMB, free, ErrCapacity)
	}
	return nil
}

// mkfsVolume makes image, a sparse ext4 image of sizeMB with a journal
// (a volume's data must survive a crash of the host).
func mkfsVolume(ctx context.Context, image string, sizeMB int64) error {
	f, err := os.OpenFile(image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create volume image: %w", err)
	}
	err = f.Truncate(sizeMB << 20)
	f.Close()
	if err != nil {
		return fmt.Errorf("size volume image: %w", err)
	}
	out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-E", "root_owner=0:0", image).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// mounted returns the host directory of volume id, mounting its image
// when it is not. A volume with no image is errdefs.ErrNotFound.
func (v *volumes) mounted(ctx context.Context, id string) (string, error) {
	if err := checkVolumeID(id); err != nil {
		return "", err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	img, dir := v.image(id), v.dir(id)
	if _, err := os.Stat(img); err != nil {
		return "", fmt.Errorf("volume %s: %w", id, errdefs.ErrNotFound)
	}
	if ok, err := isMountPoint(dir); err != nil || ok {
		return dir, err
	}
	if err := mountVolume(ctx, img, dir); err != nil {
		return "", err
	}
	return dir, nil
}

// unmounted returns the image of volume id, unmounted from the host, for
// a VM, which must be its only user. The image is mounted once first when
// it is not (which replays its journal, so that even a read-only mount in
// the VM, on a device it cannot write, finds it clean) and unmounted
// without detaching: a host mount still in use (the content API), or a
// loop device the image still backs after it (a mount elsewhere), is
// errdefs.ErrConflict.
func (v *volumes) unmounted(ctx context.Context, id string) (string, error) {
	if err := checkVolumeID(id); err != nil {
		return "", err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	img, dir := v.image(id), v.dir(id)
	if _, err := os.Stat(img); err != nil {
		return "", fmt.Errorf("volume %s: %w", id, errdefs.ErrNotFound)
	}
	if ok, err := isMountPoint(dir); err != nil {
		return "", err
	} else if !ok {
		if err := mountVolume(ctx, img, dir); err != nil {
			return "", err
		}
	}
	if err := unix.Unmount(dir, 0); errors.Is(err, unix.EBUSY) {
		return "", fmt.Errorf("volume %s is in use on its host (its content API): try again: %w", id, errdefs.ErrConflict)
	} else if err != nil {
		return "", fmt.Errorf("unmount volume %s: %w", id, err)
	}
	if loop := waitLoopFree(ctx, img); loop != "" {
		return "", fmt.Errorf("volume %s is still mounted on its host through %s (by a sandbox that is gone?): %w", id, loop, errdefs.ErrConflict)
	}
	return img, nil
}

// waitLoopFree waits briefly for the loop devices backed by image to go
// (a loop mount's device is cleared when its last mount goes) and returns
// one that is still there; "" when none.
func waitLoopFree(ctx context.Context, image string) string {
	want, err := filepath.EvalSymlinks(image)
	if err != nil {
		want = image
	}
	for deadline := time.Now().Add(2 * time.Second); ; {
		loop := loopOf(want)
		if loop == "" || time.Now().After(deadline) || ctx.Err() != nil {
			return loop
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// loopOf names a loop device whose backing file is image; "" when none.
func loopOf(image string) string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.TrimSpace(string(b)) == image {
			return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(f)))
		}
	}
	return ""
}

// remove unmounts volume id and removes its image.
func (v *volumes) remove(id string) error {
	if err := checkVolumeID(id); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	img := v.image(id)
	if _, err := os.Stat(img); err != nil {
		return fmt.Errorf("volume %s: %w", id, errdefs.ErrNotFound)
	}
	if err := unmountVolume(v.dir(id)); err != nil {
		return err
	}
	_ = os.Remove(v.dir(id))
	if err := os.Remove(img); err != nil {
		return fmt.Errorf("remove volume %s: %w", id, err)
	}
	v.log.Info("volume deleted", "volume", id)
	return nil
}

// mountVolume loop-mounts image at dir.
func mountVolume(ctx context.Context, image, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("volume mount point: %w", err)
	}
	out, err := exec.CommandContext(ctx, "mount", "-t", "ext4", "-o", "loop,nosuid,nodev", image, dir).CombinedOutput()
	if err != nil {
		// mount(8) has been seen to mount the image and still fail with
		// "already mounted" (EBUSY), leaving a mount nobody removed: the
		// mount table, not its exit status, says whether dir is mounted.
		// Callers hold the volumes' lock, so a mount there is this one.
		if ok, merr := isMountPoint(dir); merr == nil && ok {
			return nil
		}
		return fmt.Errorf("mount volume %s: %w: %s", filepath.Base(image), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// unmountVolume detaches the host mount at dir, if there is one. Sandboxes
// that bound it keep their binds; the loop device goes with the last.
func unmountVolume(dir string) error {
	err := unix.Unmount(dir, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount volume %s: %w", dir, err)
}

// isMountPoint says whether something is mounted at dir.
func isMountPoint(dir string) (bool, error) {
	ms, err := mountinfo.Read()
	if err != nil {
		return false, fmt.Errorf("read mounts: %w", err)
	}
	for _, m := range ms {
		if m.Target == dir {
			return true, nil
		}
	}
	return false, nil
}

// volumeMounts prepares the volumes a create asks for in the form the
// runtime takes them; a runtime that mounts no volumes is
// errdefs.ErrUnsupported. The volumes must not be held by another of this
// host's sandboxes in a way the request conflicts with (volumeHolder).
func (m *Manager) volumeMounts(ctx context.Context, rt runtime.Runtime, id string, reqs []VolumeRequest) ([]runtime.VolumeMount, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	vm, ok := rt.(runtime.VolumeMounter)
	if !ok {
		return nil, fmt.Errorf("the %s runtime cannot mount volumes: %w", rt.Name(), errdefs.ErrUnsupported)
	}
	out := make([]runtime.VolumeMount, 0, len(reqs))
	seen := map[string]bool{}
	for _, r := range reqs {
		if err := runtime.CheckMountPath(r.Path); err != nil {
			return nil, err
		}
		if seen[r.Path] {
			return nil, fmt.Errorf("two volumes at %s: %w", r.Path, errdefs.ErrInvalid)
		}
		seen[r.Path] = true
		if holder, writable := m.volumeHolder(r.VolumeID, id); holder != "" && (writable && !r.ReadOnly || vm.VolumeForm() == runtime.VolumeImage) {
			return nil, fmt.Errorf("volume %s is mounted by sandbox %s: %w", r.VolumeID, holder, errdefs.ErrConflict)
		}
		mount := runtime.VolumeMount{ID: r.VolumeID, Path: r.Path, ReadOnly: r.ReadOnly}
		var err error
		if vm.VolumeForm() == runtime.VolumeImage {
			mount.Image, err = m.vols.unmounted(ctx, r.VolumeID)
		} else {
			mount.Dir, err = m.vols.mounted(ctx, r.VolumeID)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, mount)
	}
	return out, nil
}

// VolumeRequest is a volume a create mounts.
type VolumeRequest struct {
	VolumeID string
	Path     string
	ReadOnly bool
}

// volumeHolder names a sandbox of this host, other than except, that
// mounts volume id and is not stopped (preferring a writable mount), and
// whether its mount is writable; "" when none.
func (m *Manager) volumeHolder(id, except string) (holder string, writable bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for sid, sb := range m.sandboxes {
		if sid == except {
			continue
		}
		rec := sb.snapshot()
		if rec.State == StateStopped {
			continue
		}
		for _, v := range rec.Spec.Volumes {
			if v.ID == id && (holder == "" || !v.ReadOnly && !writable) {
				holder, writable = sid, !v.ReadOnly
			}
		}
	}
	return holder, writable
}

// vmHolder names a sandbox of this host that has volume id's image as a
// block device; "" when none. A hibernated VM holds it (its memory has
// the filesystem mounted); a halted one does not (its guest ended, and
// boots afresh: readyVolumes takes the image back from the host).
func (m *Manager) vmHolder(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for sid, sb := range m.sandboxes {
		rec := sb.snapshot()
		if rec.State == StateStopped || rec.Halted {
			continue
		}
		for _, v := range rec.Spec.Volumes {
			if v.ID == id && v.Image != "" {
				return sid
			}
		}
	}
	return ""
}

// CreateVolume makes volume id of sizeMB on this host.
func (m *Manager) CreateVolume(ctx context.Context, id string, sizeMB int64) error {
	return m.vols.create(ctx, id, sizeMB)
}

// DeleteVolume removes volume id, unless a sandbox of this host mounts
// it (errdefs.ErrConflict naming it).
func (m *Manager) DeleteVolume(ctx context.Context, id string) error {
	if holder, _ := m.volumeHolder(id, ""); holder != "" {
		return fmt.Errorf("volume %s is mounted by sandbox %s: %w", id, holder, errdefs.ErrConflict)
	}
	return m.vols.remove(id)
}

// volumeRoot opens the host directory of volume id for the content API;
// a volume a VM has is errdefs.ErrConflict.
func (m *Manager) volumeRoot(ctx context.Context, id string) (*os.Root, error) {
	if holder := m.vmHolder(id); holder != "" {
		return nil, fmt.Errorf("volume %s is attached to VM sandbox %s, which alone may write it: reach its files through that sandbox: %w", id, holder, errdefs.ErrConflict)
	}
	dir, err := m.vols.mounted(ctx, id)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("volume %s: %w", id, errdefs.ErrNotFound)
	}
	return root, err
}

func volumeRequests(ms []*hostagentv1.VolumeMount) []VolumeRequest {
	var out []VolumeRequest
	for _, m := range ms {
		out = append(out, VolumeRequest{VolumeID: m.GetVolumeId(), Path: m.GetPath(), ReadOnly: m.GetReadOnly()})
	}
	return out
}

func (s *service) CreateVolume(ctx context.Context, req *connect.Request[hostagentv1.CreateVolumeRequest]) (*connect.Response[hostagentv1.CreateVolumeResponse], error) {
	if err := s.m.CreateVolume(ctx, req.Msg.GetVolumeId(), req.Msg.GetSizeMb()); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.CreateVolumeResponse{SizeMb: req.Msg.GetSizeMb()}), nil
}

func (s *service) DeleteVolume(ctx context.Context, req *connect.Request[hostagentv1.DeleteVolumeRequest]) (*connect.Response[hostagentv1.DeleteVolumeResponse], error) {
	if err := s.m.DeleteVolume(ctx, req.Msg.GetVolumeId()); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.DeleteVolumeResponse{}), nil
}

// hasVMVolume says whether any of vs is a VM's (an image, not a bind).
func hasVMVolume(vs []runtime.VolumeMount) bool {
	for _, v := range vs {
		if v.Image != "" {
			return true
		}
	}
	return false
}

// syncVolumes has a running VM sandbox with volumes write its files out
// before its VM pauses or ends: what the guest wrote may still be in its
// page cache, not in the volume's image, and the next sandbox to mount
// the volume reads the image. A sandbox whose envd does not answer goes
// on unsynced (syncFiles logs it): its volume keeps what reached the
// image, which ext4's journal keeps consistent.
func (m *Manager) syncVolumes(ctx context.Context, rec record) {
	if rec.State == StateRunning && hasVMVolume(rec.Spec.Volumes) {
		m.syncFiles(ctx, rec)
	}
}

// readyVolumes readies a sandbox's volumes for it to boot with them again
// (after a halt, or a reboot of the host): a VM's images are taken back
// from the host (which may have mounted them for the content API while
// the VM was halted), a namespace sandbox's are mounted on the host again
// when they are not (a reboot took the mounts).
func (m *Manager) readyVolumes(ctx context.Context, vs []runtime.VolumeMount) error {
	for _, v := range vs {
		var err error
		if v.Image != "" {
			_, err = m.vols.unmounted(ctx, v.ID)
		} else {
			_, err = m.vols.mounted(ctx, v.ID)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkForkable refuses to fork a sandbox that mounts volumes: its forks
// would share its writable volumes (one writer at a time), and a VM's
// capture has the volumes' filesystems mounted in its memory.
func checkForkable(rec record) error {
	if len(rec.Spec.Volumes) == 0 {
		return nil
	}
	ids := make([]string, len(rec.Spec.Volumes))
	for i, v := range rec.Spec.Volumes {
		ids[i] = v.ID
	}
	return fmt.Errorf("sandbox mounts volumes (%s): a sandbox with volumes cannot be forked: %w", strings.Join(ids, ", "), errdefs.ErrConflict)
}
