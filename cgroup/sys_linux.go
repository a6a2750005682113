package cgroup

import (
	"errors"
	"io/fs"

	"golang.org/x/sys/unix"
)

// isCgroup2 reports whether path is the root of a cgroup2 mount.
func isCgroup2(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	return st.Type == unix.CGROUP2_SUPER_MAGIC, nil
}

// writable reports whether this process may create groups under path (a
// read-only bind mount in a container is not).
func writable(path string) bool {
	return unix.Access(path, unix.W_OK) == nil
}
