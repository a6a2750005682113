package filesystem

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"google.golang.org/protobuf/types/known/timestamppb"

	"roost.dev/roost/envd/identity"
	rpc "roost.dev/roost/gen/filesystem"
)

// resolvePath turns a client-supplied path into a clean absolute path for u.
// It never touches the filesystem.
func resolvePath(u identity.User, p string) (string, error) {
	abs, err := u.Resolve(p)
	if err != nil {
		return "", fmt.Errorf("resolve path: %w", err)
	}
	return abs, nil
}

// names turns uids and gids into names for one request, looking each up at
// most once: a listing of a large directory mostly repeats a few owners.
type names struct {
	users  map[uint32]string
	groups map[uint32]string
}

func newNames() *names {
	return &names{users: map[uint32]string{}, groups: map[uint32]string{}}
}

// user returns the user name of uid, or the number when it has none.
func (n *names) user(uid uint32) string {
	if name, ok := n.users[uid]; ok {
		return name
	}
	name := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	n.users[uid] = name
	return name
}

// group returns the group name of gid, or the number when it has none.
func (n *names) group(gid uint32) string {
	if name, ok := n.groups[gid]; ok {
		return name
	}
	name := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(name); err == nil {
		name = g.Name
	}
	n.groups[gid] = name
	return name
}

// entry describes the file at path without following a final symlink.
func (n *names) entry(path string) (*rpc.EntryInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	return n.entryFrom(path, fi), nil
}

// entryFrom builds an EntryInfo from the Lstat result fi of path, following
// E2B: a symlink keeps its own name, size, time and permissions string but
// reports its target's type and permission bits, and symlink_target is the
// fully resolved path.
func (n *names) entryFrom(path string, fi fs.FileInfo) *rpc.EntryInfo {
	mode := fi.Mode()
	e := &rpc.EntryInfo{
		Name:         fi.Name(),
		Type:         fileType(mode),
		Path:         path,
		Size:         fi.Size(),
		Mode:         uint32(mode.Perm()),
		Permissions:  mode.String(),
		ModifiedTime: timestamppb.New(fi.ModTime()),
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Owner = n.user(st.Uid)
		e.Group = n.group(st.Gid)
	}
	if mode&fs.ModeSymlink != 0 {
		if target, err := filepath.EvalSymlinks(path); err == nil {
			e.SymlinkTarget = &target
			if ti, err := os.Stat(target); err == nil {
				e.Type = fileType(ti.Mode())
				e.Mode = uint32(ti.Mode().Perm())
			}
		} else if raw, err := os.Readlink(path); err == nil {
			// Dangling or cyclic: there is no resolved path, so say what
			// the link says and keep the type SYMLINK.
			e.SymlinkTarget = &raw
		}
	}
	// Metadata lives in xattrs, which only a file (not a symlink) can
	// carry; a symlink reports its target's, like its type.
	if md := ReadMetadata(path); len(md) > 0 {
		e.Metadata = md
	}
	return e
}

// fileType maps a mode to the wire enum. Devices, FIFOs and sockets are
// UNSPECIFIED, as in E2B (the SDKs skip such entries in listings).
func fileType(m fs.FileMode) rpc.FileType {
	switch {
	case m.IsRegular():
		return rpc.FileType_FILE_TYPE_FILE
	case m.IsDir():
		return rpc.FileType_FILE_TYPE_DIRECTORY
	case m&fs.ModeSymlink != 0:
		return rpc.FileType_FILE_TYPE_SYMLINK
	default:
		return rpc.FileType_FILE_TYPE_UNSPECIFIED
	}
}

// listDir lists dir to depth levels (1 = its children) in pre-order: each
// directory is followed by its contents, names sorted within a directory.
// Symlinks are listed but never descended into, so cycles cannot occur.
// dir itself must be readable; a deeper directory that cannot be read is
// listed without its contents.
func listDir(log *slog.Logger, dir string, depth uint32) ([]*rpc.EntryInfo, error) {
	n := newNames()
	var out []*rpc.EntryInfo
	var walk func(dir string, level uint32) error
	walk = func(dir string, level uint32) error {
		des, err := os.ReadDir(dir)
		if err != nil {
			if level == 1 {
				return fmt.Errorf("list dir: %w", err)
			}
			log.Debug("list dir: skipping unreadable directory", "path", dir, "err", err)
			// ReadDir returns what it read before failing; list that.
		}
		for _, de := range des {
			p := filepath.Join(dir, de.Name())
			fi, err := de.Info()
			if err != nil {
				// Removed since the directory was read: not an entry.
				if !errors.Is(err, fs.ErrNotExist) {
					log.Debug("list dir: skipping entry", "path", p, "err", err)
				}
				continue
			}
			out = append(out, n.entryFrom(p, fi))
			if de.IsDir() && level < depth {
				if err := walk(p, level+1); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(dir, 1); err != nil {
		return nil, err
	}
	return out, nil
}
