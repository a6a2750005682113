package microvm

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

// Volumes (docs/persistence.md). A VM takes each volume's ext4 image as a
// virtio block device of its own, identified by a serial (VolumeSerial),
// and the guest init mounts it at its path (package guest reads
// roost.volumes). The agent hands the image over unmounted on the host:
// while the VM runs, the VM alone may write it.

// MaxVolumes bounds a VM's volumes: QEMU's microvm machine has eight
// virtio transports, and the root disk and the network take two.
const MaxVolumes = 6

// VolumeSerial is the serial of a VM's i-th volume device (virtio-blk
// serials hold at most 20 bytes).
func VolumeSerial(i int) string { return "roostvol" + strconv.Itoa(i) }

// CheckVolumes checks spec.Volumes for a VM: at most MaxVolumes, each an
// image at a mount path the template's tree does not make a symbolic
// link or a file (the guest would refuse it at boot, where no one sees
// why). Errors wrap errdefs.ErrInvalid.
func CheckVolumes(spec runtime.Spec) error {
	if len(spec.Volumes) > MaxVolumes {
		return fmt.Errorf("%d volumes: a VM sandbox mounts at most %d: %w", len(spec.Volumes), MaxVolumes, errdefs.ErrInvalid)
	}
	if len(spec.Volumes) == 0 {
		return nil
	}
	root, err := os.OpenRoot(spec.RootFS)
	if err != nil {
		return fmt.Errorf("volumes: template root: %w", err)
	}
	defer root.Close()
	for _, v := range spec.Volumes {
		if err := runtime.CheckMountPath(v.Path); err != nil {
			return err
		}
		if v.Image == "" {
			return fmt.Errorf("volume %s: no image given for the VM: %w", v.ID, errdefs.ErrInvalid)
		}
		if err := checkMountPoint(root, v.Path); err != nil {
			return fmt.Errorf("volume %s: %w", v.ID, err)
		}
	}
	return nil
}

// checkMountPoint refuses a path whose existing elements in the
// template's tree are not all directories.
func checkMountPoint(root *os.Root, path string) error {
	p := ""
	for _, el := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		p += "/" + el
		st, err := root.Lstat(p[1:])
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil // the guest init makes the rest
		case err != nil:
			return fmt.Errorf("mount point %s: %w", p, err)
		case st.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symbolic link in the template; mount the volume at the path it names: %w", p, errdefs.ErrInvalid)
		case !st.IsDir():
			return fmt.Errorf("%s is not a directory in the template: %w", p, errdefs.ErrInvalid)
		}
	}
	return nil
}

// guestVolume is one element of roost.volumes (package guest's Volume).
type guestVolume struct {
	Serial   string `json:"serial"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"ro,omitempty"`
}

// volumesParam is the roost.volumes word for spec's volumes; "" when
// there are none.
func volumesParam(spec runtime.Spec) string {
	if len(spec.Volumes) == 0 {
		return ""
	}
	vs := make([]guestVolume, len(spec.Volumes))
	for i, v := range spec.Volumes {
		vs[i] = guestVolume{Serial: VolumeSerial(i), Path: v.Path, ReadOnly: v.ReadOnly}
	}
	b, _ := json.Marshal(vs)
	return "roost.volumes=" + base64.RawURLEncoding.EncodeToString(b)
}
