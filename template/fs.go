package template

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/mountinfo"

	"golang.org/x/sys/unix"
)

// Trees are handled through directory file descriptors, one path
// component at a time, opened with O_NOFOLLOW: a symlink inside a tree
// (which may point anywhere on the host) is never followed.

const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// openDir opens the directory rel (clean, slash-separated, relative; ""
// is root itself) below the directory root, following no symlink. With
// create, missing directories are made (mode 0755, the caller's owner).
// The caller closes the returned descriptor.
func openDir(root int, rel string, create bool) (int, error) {
	fd, err := unix.Openat(root, ".", dirFlags, 0)
	if err != nil {
		return -1, fmt.Errorf("open tree root: %w", err)
	}
	if rel == "" {
		return fd, nil
	}
	for comp := range strings.SplitSeq(rel, "/") {
		next, err := unix.Openat(fd, comp, dirFlags, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, comp, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				next, err = unix.Openat(fd, comp, dirFlags, 0)
			}
		}
		if err != nil {
			err = describeOpenErr(fd, comp, rel, err)
			unix.Close(fd)
			return -1, err
		}
		unix.Close(fd)
		fd = next
	}
	return fd, nil
}

// describeOpenErr turns the error of opening comp (in dirfd) as a
// directory into one that says why.
func describeOpenErr(dirfd int, comp, rel string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		var st unix.Stat_t
		if unix.Fstatat(dirfd, comp, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			return fmt.Errorf("%s: path goes through symlink %q: %w", rel, comp, errdefs.ErrInvalid)
		}
		return fmt.Errorf("%s: %q is not a directory: %w", rel, comp, errdefs.ErrInvalid)
	}
	return fmt.Errorf("%s: open %q: %w", rel, comp, err)
}

// splitRel splits a clean relative path into its parent ("" for the root)
// and last component.
func splitRel(rel string) (dir, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// readInTree reads the regular file rel inside the tree at root, at most
// limit bytes, following no symlink. ok is false when it is missing or
// not a regular file.
func readInTree(root, rel string, limit int64) (data []byte, ok bool) {
	rfd, err := unix.Open(root, dirFlags, 0)
	if err != nil {
		return nil, false
	}
	defer unix.Close(rfd)
	dir, base := splitRel(rel)
	dfd, err := openDir(rfd, dir, false)
	if err != nil {
		return nil, false
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, false
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, false
	}
	data = make([]byte, 0, 4096)
	buf := make([]byte, 32*1024)
	for int64(len(data)) < limit {
		n, err := f.Read(buf[:min(int64(len(buf)), limit-int64(len(data)))])
		data = append(data, buf[:n]...)
		if err != nil {
			break
		}
	}
	return data, true
}

// isDirInTree reports whether rel is a directory inside the tree at root,
// reached without following a symlink.
func isDirInTree(root, rel string) bool {
	rfd, err := unix.Open(root, dirFlags, 0)
	if err != nil {
		return false
	}
	defer unix.Close(rfd)
	fd, err := openDir(rfd, rel, false)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// removeTree deletes path and everything below it without following
// symlinks or crossing into another filesystem, making directories
// writable as it goes (an unprivileged owner cannot empty a 0555 dir
// otherwise). It refuses when anything is mounted at or below path.
func removeTree(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return os.Remove(path)
	}
	if err := checkNoMounts(path); err != nil {
		return err
	}
	parent, err := unix.Open(filepath.Dir(path), dirFlags&^unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", filepath.Dir(path), err)
	}
	defer unix.Close(parent)
	return removeAt(parent, filepath.Base(path), st.Sys().(*syscall.Stat_t).Dev)
}

func removeAt(dirfd int, name string, dev uint64) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	fd, err := unix.Openat(dirfd, name, dirFlags, 0)
	if errors.Is(err, unix.EACCES) {
		if err = unix.Fchmodat(dirfd, name, 0o700, 0); err == nil {
			fd, err = unix.Openat(dirfd, name, dirFlags, 0)
		}
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if st.Dev != dev {
		return fmt.Errorf("remove %s: another filesystem is mounted there: %w", name, errdefs.ErrConflict)
	}
	if st.Mode&0o300 != 0o300 && os.Geteuid() != 0 {
		if err := unix.Fchmod(fd, st.Mode&0o7777|0o700); err != nil {
			return fmt.Errorf("make %s writable: %w", name, err)
		}
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	for _, n := range names {
		if err := removeAt(fd, n, dev); err != nil {
			return fmt.Errorf("%s/%w", name, err)
		}
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// checkNoMounts fails when anything is mounted at or below path: deleting
// through a bind mount would delete what it shows.
func checkNoMounts(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	mounts, err := mountinfo.Read()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if m.Target == abs || strings.HasPrefix(m.Target, abs+"/") {
			return fmt.Errorf("%s is mounted inside %s: %w", m.Target, abs, errdefs.ErrConflict)
		}
	}
	return nil
}

// treeSize is the disk space the tree at root uses: allocated blocks,
// hard-linked files counted once.
func treeSize(root string) (int64, error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total int64
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if !d.IsDir() && st.Nlink > 1 {
			k := inode{st.Dev, st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += st.Blocks * 512
		return nil
	})
	return total, err
}

// invalid marks err, caused by bad input, as errdefs.ErrInvalid.
func invalid(err error) error { return fmt.Errorf("%w: %w", err, errdefs.ErrInvalid) }

// unavailable marks err as errdefs.ErrUnavailable.
func unavailable(err error) error { return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable) }
