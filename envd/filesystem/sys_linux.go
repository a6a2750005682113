package filesystem

import (
	"bytes"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// metadataPrefix namespaces the user metadata E2B keeps in extended
// attributes and reports in EntryInfo.metadata.
const metadataPrefix = "user.e2b."

// readMetadata returns the user.e2b.* extended attributes of path (following
// symlinks), best effort: a filesystem without xattrs, or a value that is not
// UTF-8 (a proto string must be), yields nothing rather than an error.
func readMetadata(path string) map[string]string {
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
