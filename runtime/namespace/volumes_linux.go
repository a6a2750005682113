package namespace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

// Volumes (docs/persistence.md). The agent mounts a volume's filesystem
// on the host; the driver binds it into the sandbox's root before the
// init starts, so it reaches the init's mount namespace locked, as /sys
// does: the sandbox cannot unmount it to see what is under it. The bind
// is idmapped with the sandbox's mapping, so the volume's uid 0 is the
// sandbox's root whichever host ID range the sandbox has: another
// sandbox mounting the volume later sees the same owners. It is nosuid
// and nodev, and read-only when the mount asks.

var _ runtime.VolumeMounter = (*Driver)(nil)

// VolumeForm implements runtime.VolumeMounter: the driver binds the
// volume's filesystem as the host has it mounted.
func (d *Driver) VolumeForm() runtime.VolumeForm { return runtime.VolumeDir }

// mountVolumes binds spec.Volumes under rootfs, for the sandbox of host
// ID range ids. Mount points the template lacks are made, owned by the
// sandbox's root; a path through a symbolic link of the template is
// refused, so a volume lands where its path says and nowhere else.
func (d *Driver) mountVolumes(spec runtime.Spec, ids int, rootfs string) error {
	if len(spec.Volumes) == 0 {
		return nil
	}
	userns, err := d.userns(ids)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return fmt.Errorf("volumes: %w", err)
	}
	defer root.Close()
	for _, v := range spec.Volumes {
		if err := runtime.CheckMountPath(v.Path); err != nil {
			return err
		}
		if v.Dir == "" {
			return fmt.Errorf("volume %s: not mounted on the host: %w", v.ID, errdefs.ErrInvalid)
		}
		if err := bindVolume(root, v, hostID(ids), userns); err != nil {
			return fmt.Errorf("mount volume %s at %s: %w", v.ID, v.Path, err)
		}
	}
	return nil
}

// bindVolume mounts v.Dir, idmapped through userns, on v.Path in root.
func bindVolume(root *os.Root, v runtime.VolumeMount, owner int, userns *os.File) error {
	target, err := mountPoint(root, v.Path, owner)
	if err != nil {
		return err
	}
	defer target.Close()
	tree, err := unix.OpenTree(unix.AT_FDCWD, v.Dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", v.Dir, err)
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{
		Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOSUID,
		Userns_fd: uint64(userns.Fd()),
	}
	if v.ReadOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("idmap: %w", err)
	}
	if err := unix.MoveMount(tree, "", int(target.Fd()), "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// mountPoint opens the directory at path in root, making the
// directories it lacks (owned by owner, the sandbox's root). Every
// element must be a directory, not a symbolic link.
func mountPoint(root *os.Root, path string, owner int) (*os.File, error) {
	elems := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for i := range elems {
		p := strings.Join(elems[:i+1], "/")
		st, err := root.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := root.Mkdir(p, 0o755); err != nil {
				return nil, fmt.Errorf("make mount point /%s: %w", p, err)
			}
			if err := root.Lchown(p, owner, owner); err != nil {
				return nil, fmt.Errorf("make mount point /%s: %w", p, err)
			}
		case err != nil:
			return nil, fmt.Errorf("mount point /%s: %w", p, err)
		case st.Mode()&fs.ModeSymlink != 0:
			return nil, fmt.Errorf("/%s is a symbolic link in the template; mount the volume at the path it names: %w", p, errdefs.ErrInvalid)
		case !st.IsDir():
			return nil, fmt.Errorf("/%s is not a directory in the template: %w", p, errdefs.ErrInvalid)
		}
	}
	f, err := root.OpenFile(strings.Join(elems, "/"), unix.O_PATH|unix.O_NOFOLLOW|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open mount point %s: %w", path, err)
	}
	return f, nil
}
