package firecracker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// cloneFile makes dst a reflinked copy of src: it shares src's blocks
// until either is written, so it takes no time and no space, whatever
// the size of the image. Filesystems without reflinks (ext4) refuse.
func cloneFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		out.Close()
		os.Remove(dst)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			return fmt.Errorf("reflink %s to %s: %v: sandbox disks are reflinked copies of the template image; put the data directory on XFS or btrfs, one filesystem for images and sandboxes", src, dst, err)
		}
		return fmt.Errorf("reflink %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

// checkReflink reports whether dir's filesystem can reflink, by trying
// in dir or, when it does not exist yet, in its nearest existing parent
// (Probe creates nothing for a runtime that may not be used).
func checkReflink(dir string) error {
	at := dir
	for {
		if _, err := os.Stat(at); err == nil || filepath.Dir(at) == at {
			break
		}
		at = filepath.Dir(at)
	}
	src, err := os.CreateTemp(at, ".reflink-probe-")
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	defer os.Remove(src.Name())
	_, err = src.Write(make([]byte, 4096))
	src.Close()
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	dst := src.Name() + ".clone"
	defer os.Remove(dst)
	if err := cloneFile(src.Name(), dst); err != nil {
		var st unix.Statfs_t
		fs := ""
		if unix.Statfs(at, &st) == nil && st.Type == unix.EXT4_SUPER_MAGIC {
			fs = " (ext4)"
		}
		return fmt.Errorf("data dir %s%s has no reflinks: sandbox disks are reflinked copies of the template image; put it on XFS or btrfs", dir, fs)
	}
	return nil
}
