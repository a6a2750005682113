package guest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Volumes (docs/persistence.md). The driver gives the VM each volume's
// ext4 image as a virtio block device with a serial of its own, and names
// the serial and the mount path on the command line (Config.Volumes).
// Device names (vdb, vdc...) follow probe order, which the guest cannot
// rely on, and it has no udev to make /dev/disk/by-id: the init reads the
// serials in /sys/block. A volume's root is owned by the guest's root, as
// in a namespace sandbox; it is mounted nosuid and nodev.

// volumeTimeout bounds the wait for a volume's device to appear.
const volumeTimeout = 10 * time.Second

// mountVolumes mounts cfg.Volumes, making the mount points the root disk
// lacks. A path through a symbolic link is refused, as the namespace
// runtime refuses it: a volume lands where its path says.
func mountVolumes() error {
	for _, v := range cfg.Volumes {
		dev, err := volumeDevice(v.Serial, volumeTimeout)
		if err != nil {
			return fmt.Errorf("volume at %s: %w", v.Path, err)
		}
		if err := mountPoint(v.Path); err != nil {
			return fmt.Errorf("volume at %s: %w", v.Path, err)
		}
		flags := uintptr(nsd)
		if v.ReadOnly {
			flags |= syscall.MS_RDONLY
		}
		if err := syscall.Mount(dev, v.Path, "ext4", flags, ""); err != nil {
			return fmt.Errorf("mount volume %s on %s: %w", dev, v.Path, err)
		}
		logf("volume %s mounted on %s", v.Serial, v.Path)
	}
	return nil
}

// unmountVolumes unmounts the volumes, last first, so that their
// filesystems are clean when the machine powers off.
func unmountVolumes() {
	for i := len(cfg.Volumes) - 1; i >= 0; i-- {
		if err := syscall.Unmount(cfg.Volumes[i].Path, 0); err != nil {
			logf("unmount volume %s: %v", cfg.Volumes[i].Path, err)
		}
	}
}

// volumeDevice waits for the block device whose serial is serial and
// returns its /dev path.
func volumeDevice(serial string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if dev := deviceOfSerial("/sys/block", serial); dev != "" {
			return "/dev/" + dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no block device with serial %q within %s", serial, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// deviceOfSerial is the name of the block device in sysBlock whose
// serial is serial; "" when none.
func deviceOfSerial(sysBlock, serial string) string {
	entries, _ := os.ReadDir(sysBlock)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "serial"))
		if err == nil && strings.TrimSpace(string(b)) == serial {
			return e.Name()
		}
	}
	return ""
}

// mountPoint makes the directory path, an absolute clean path, and the
// directories above it that are missing (mode 0755, root's); every
// element must be a directory, not a symbolic link.
func mountPoint(path string) error {
	p := ""
	for _, el := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		p += "/" + el
		st, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Mkdir(p, 0o755); err != nil {
				return fmt.Errorf("make mount point %s: %w", p, err)
			}
		case err != nil:
			return fmt.Errorf("mount point %s: %w", p, err)
		case st.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s is a symbolic link: mount the volume at the path it names", p)
		case !st.IsDir():
			return fmt.Errorf("%s is not a directory", p)
		}
	}
	return nil
}
