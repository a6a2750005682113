package namespace

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"roost.dev/roost/mountinfo"
	"roost.dev/roost/sparse"
)

// mountLower makes the template tree at rootfs visible at target through
// an idmapped mount with the mapping of userns, so that files owned by
// uid 0 on disk belong to the sandbox's root, and read-only, nodev and
// nosuid as the host sees it (the sandbox's root keeps its setuid
// programs: the overlay over it is not nosuid).
func mountLower(rootfs, target string, userns *os.File) error {
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, rootfs, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", rootfs, err)
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{
		Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOSUID,
		Userns_fd: uint64(userns.Fd()),
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
		return fmt.Errorf("idmap %s: %w", rootfs, err)
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount %s: %w", target, err)
	}
	return nil
}

// blankDisk returns an empty ext4 image of sizeMB in the data dir, making
// it the first time. Each sandbox's disk is a copy of it: copying its few
// written blocks takes a fraction of a millisecond, running mkfs.ext4
// several. The copies share the filesystem UUID, which nothing in a
// sandbox or the kernel relies on.
func (d *Driver) blankDisk(sizeMB int) (string, error) {
	d.diskMu.Lock()
	defer d.diskMu.Unlock()
	// The name carries the mkfs options' version: change both together.
	p := filepath.Join(d.cfg.DataDir, "disks", fmt.Sprintf("blank-v2-%dM.img", sizeMB))
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", fmt.Errorf("blank disk: %w", err)
	}
	tmp := p + ".tmp"
	_ = os.Remove(tmp) // a crash may have left it
	if err := mkfs(tmp, sizeMB); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("blank disk: %w", err)
	}
	return p, nil
}

// mkfs creates image, a sparse ext4 image of sizeMB without a journal (a
// sandbox's layer dies with it). Its root belongs to host root: only the
// overlay's upper and work directories on it are the sandbox's.
func mkfs(image string, sizeMB int) error {
	f, err := os.OpenFile(image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create disk image: %w", err)
	}
	err = f.Truncate(int64(sizeMB) << 20)
	f.Close()
	if err != nil {
		return fmt.Errorf("size disk image: %w", err)
	}
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "root_owner=0:0,lazy_itable_init=1", image).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// copySparse copies the file src to a new file dst, leaving src's holes
// holes. On failure it removes dst, if it made it.
func copySparse(dst, src string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	if err := out.Truncate(st.Size()); err != nil {
		return err
	}
	exts, err := sparse.Extents(in, st.Size())
	if err != nil {
		return err
	}
	for _, e := range exts {
		if err := copyRange(out, in, e.Off, e.Off+e.Len); err != nil {
			return err
		}
	}
	return nil
}

// copyRange copies bytes [from, to) of in to the same offsets of out, in
// the kernel where it can.
func copyRange(out, in *os.File, from, to int64) error {
	r, w := from, from
	for r < to {
		n, err := unix.CopyFileRange(int(in.Fd()), &r, int(out.Fd()), &w, int(to-r), 0)
		if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
			// Across filesystems, or a kernel without it: copy in user space.
			_, err := io.Copy(io.NewOffsetWriter(out, w), io.NewSectionReader(in, r, to-r))
			return err
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
	}
	return nil
}

// mountDisk attaches image to a free loop device and mounts it at target.
// The loop device detaches by itself when the mount goes away.
func mountDisk(image, target string) error { return mountImage(image, target, false) }

// mountImage mounts the ext4 image at target through a loop device of its
// own, read-only (device and mount) when readOnly.
func mountImage(image, target string, readOnly bool) error {
	if err := os.MkdirAll(target, 0o700); err != nil {
		return err
	}
	mode, loopFlags, mountFlags := os.O_RDWR, uint32(unix.LO_FLAGS_AUTOCLEAR), uintptr(unix.MS_NOSUID|unix.MS_NODEV)
	if readOnly {
		mode, loopFlags, mountFlags = os.O_RDONLY, loopFlags|unix.LO_FLAGS_READ_ONLY, mountFlags|unix.MS_RDONLY
	}
	img, err := os.OpenFile(image, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open disk image: %w", err)
	}
	defer img.Close()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open loop-control: %w", err)
	}
	defer ctl.Close()
	for attempt := 0; ; attempt++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return fmt.Errorf("find free loop device: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		loop, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", dev, err)
		}
		cfg := &unix.LoopConfig{Fd: uint32(img.Fd())}
		cfg.Info.Flags = loopFlags
		copy(cfg.Info.File_name[:], "roost:"+image)
		err = unix.IoctlLoopConfigure(int(loop.Fd()), cfg)
		if errors.Is(err, unix.EBUSY) && attempt < 20 {
			loop.Close() // another attacher won the race for this device
			continue
		}
		if err != nil {
			loop.Close()
			return fmt.Errorf("configure %s: %w", dev, err)
		}
		err = unix.Mount(dev, target, "ext4", mountFlags, "")
		loop.Close() // the mount holds the device now; autoclear frees it on unmount
		if err != nil {
			return fmt.Errorf("mount %s: %w", dev, err)
		}
		return nil
	}
}

// mountOverlay mounts the sandbox's root: lowers are its idmapped layers,
// top first, the template last; upper and work live on the disk and belong to the sandbox's root (host
// ID owner). The source name marks the mount as this sandbox's, so Prune
// can find it after a crash. The layers are named by descriptor: the
// options, which the sandbox reads in its mountinfo, then name no host
// path. The root is nodev: device nodes of the template (its
// /dev/console) or of the sandbox's making open nothing.
func mountOverlay(id string, lowers []string, disk, target string, owner int) error {
	upper, work := filepath.Join(disk, "upper"), filepath.Join(disk, "work")
	for _, dir := range []string{upper, work, target} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	for _, dir := range []string{upper, work} {
		if err := os.Chown(dir, owner, owner); err != nil {
			return err
		}
	}
	var names []string
	for _, dir := range append(lowers, upper, work) {
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", dir, err)
		}
		defer unix.Close(fd)
		names = append(names, "/proc/self/fd/"+strconv.Itoa(fd))
	}
	n := len(lowers)
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(names[:n], ":"), names[n], names[n+1])
	if err := unix.Mount(overlaySource, target, "overlay", unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount overlay: %w", err)
	}
	return nil
}

// overlaySource is the source of every sandbox's root mount, which the
// sandbox sees in its mountinfo: it names no sandbox, so a sandbox
// started for a warm pool, and claimed later under another ID, shows
// nothing of the ID it started with. Drivers before it used
// "roost-<id>".
const overlaySource = "roost"

// overlaySandbox is the ID of the sandbox whose root mount m is, if m is
// one: the name of the state directory it is mounted in, or, on mounts
// of older drivers, the ID in its source.
func overlaySandbox(m mountinfo.Mount) (string, bool) {
	if m.FSType != "overlay" || filepath.Base(m.Target) != "rootfs" {
		return "", false
	}
	if id, ok := strings.CutPrefix(m.Source, overlaySource+"-"); ok {
		return id, true
	}
	return filepath.Base(filepath.Dir(m.Target)), m.Source == overlaySource
}

// unmount detaches target if it is mounted; a missing or unmounted target
// is not an error.
func unmount(target string) error {
	err := unix.Unmount(target, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", target, err)
}
