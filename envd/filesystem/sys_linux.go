package filesystem

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// ReadMetadata returns the user.e2b.* extended attributes of path (following
// symlinks), best effort: a filesystem without xattrs, or a value that is not
// UTF-8 (a proto string must be), yields nothing rather than an error.
func ReadMetadata(path string) map[string]string {
	sz, err := unix.Listxattr(path, nil)
	if err != nil || sz <= 0 {
		return nil
	}
	buf := make([]byte, sz)
	sz, err = unix.Listxattr(path, buf)
	if err != nil {
		return nil
	}
	var out map[string]string
	for _, raw := range bytes.Split(buf[:sz], []byte{0}) {
		name := string(raw)
		key, ok := strings.CutPrefix(name, metadataPrefix)
		if !ok || key == "" || !utf8.ValidString(key) {
			continue
		}
		vsz, err := unix.Getxattr(path, name, nil)
		if err != nil {
			continue
		}
		val := make([]byte, vsz)
		vsz, err = unix.Getxattr(path, name, val)
		if err != nil || !utf8.Valid(val[:vsz]) {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[key] = string(val[:vsz])
	}
	return out
}

// WriteMetadata makes md the metadata of the open file f: it sets a
// user.e2b.<key> extended attribute for each entry and removes the other
// user.e2b.* attributes f has. md must pass ValidateMetadata. A filesystem
// without user xattrs fails with an error matching errors.ErrUnsupported.
func WriteMetadata(f *os.File, md map[string]string) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("write metadata: %w", err)
	}
	var werr error
	err = rc.Control(func(fd uintptr) { werr = writeMetadata(int(fd), md) })
	if err != nil {
		return fmt.Errorf("write metadata: %w", err)
	}
	return werr
}

func writeMetadata(fd int, md map[string]string) error {
	names, err := flistxattr(fd)
	if err != nil {
		return fmt.Errorf("list metadata: %w", err)
	}
	for _, name := range names {
		key, ok := strings.CutPrefix(name, metadataPrefix)
		if _, keep := md[key]; !ok || keep {
			continue
		}
		if err := unix.Fremovexattr(fd, name); err != nil && err != unix.ENODATA {
			return fmt.Errorf("remove metadata key %q: %w", key, err)
		}
	}
	for k, v := range md {
		if err := unix.Fsetxattr(fd, metadataPrefix+k, []byte(v), 0); err != nil {
			return fmt.Errorf("set metadata key %q: %w", k, err)
		}
	}
	return nil
}

// flistxattr returns the names of fd's extended attributes.
func flistxattr(fd int) ([]string, error) {
	for {
		sz, err := unix.Flistxattr(fd, nil)
		if err != nil || sz == 0 {
			return nil, err
		}
		buf := make([]byte, sz)
		n, err := unix.Flistxattr(fd, buf)
		if err == unix.ERANGE {
			continue // an attribute was added in between
		}
		if err != nil {
			return nil, err
		}
		return strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00"), nil
	}
}

// onNetworkMount reports whether path lives on NFS, SMB/CIFS or FUSE, where
// inotify sees only local changes; E2B refuses to watch there unless asked.
func onNetworkMount(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, err
	}
	switch uint32(st.Type) {
	case unix.NFS_SUPER_MAGIC, unix.CIFS_SUPER_MAGIC, unix.SMB_SUPER_MAGIC,
		unix.SMB2_SUPER_MAGIC, unix.FUSE_SUPER_MAGIC:
		return true, nil
	}
	return false, nil
}
