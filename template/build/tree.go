package build

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
)

// linkTree makes dst a copy of the tree src whose files are hard links to
// src's: directories are made anew, so that applying layers to dst (which
// always replaces a file rather than write into it) leaves src as it was.
// Files are copied when src is on another filesystem.
func linkTree(ctx context.Context, src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := &unix.Stat_t{}
		if err := unix.Lstat(p, st); err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(to, 0o700); err != nil {
				return err
			}
			// Mode after chown, which would clear setgid.
			if err := os.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
				return err
			}
			if err := os.Chmod(to, info.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return err
			}
			return nil
		case info.Mode().IsRegular():
			return linkOrCopy(p, to, info, st)
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, to); err != nil {
				return err
			}
			return os.Lchown(to, int(st.Uid), int(st.Gid))
		case info.Mode()&fs.ModeNamedPipe != 0:
			if err := unix.Mkfifo(to, uint32(info.Mode().Perm())); err != nil {
				return err
			}
			return os.Lchown(to, int(st.Uid), int(st.Gid))
		}
		return nil // devices and sockets: a sandbox's /dev is its runtime's
	})
}

func linkOrCopy(src, dst string, info fs.FileInfo, st *unix.Stat_t) error {
	err := os.Link(src, dst)
	if !errors.Is(err, unix.EXDEV) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Chown(int(st.Uid), int(st.Gid)); err != nil {
		out.Close()
		return err
	}
	if err := out.Chmod(info.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// treeFile reads the small file rel of tree without following a symlink
// at any of its components (a tree's /etc/passwd must not name a host
// file). A missing file is empty.
func treeFile(tree, rel string) ([]byte, error) {
	p := tree
	parts := strings.Split(rel, "/")
	for i, c := range parts {
		p = filepath.Join(p, c)
		st, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if st.Mode()&fs.ModeSymlink != 0 || (i < len(parts)-1 && !st.IsDir()) {
			return nil, nil
		}
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 4<<20))
}

// owner is a resolved user[:group].
type owner struct{ uid, gid int }

// lookupOwner resolves "user[:group]" (names or numbers) in the tree's
// /etc/passwd and /etc/group. A user without a group gets its primary
// group (a number: the same number). Unknown names wrap
// errdefs.ErrNotFound.
func lookupOwner(tree, spec string) (owner, error) {
	user, group, hasGroup := strings.Cut(spec, ":")
	var o owner
	var err error
	passwd, _ := treeFile(tree, "etc/passwd")
	if n, convErr := strconv.Atoi(user); convErr == nil && n >= 0 {
		o.uid, o.gid = n, n
		if _, gid, ok := findID(passwd, "", n); ok {
			o.gid = gid
		}
	} else {
		var ok bool
		if o.uid, o.gid, ok = findID(passwd, user, -1); !ok {
			return owner{}, notFound("user %q: not in the tree's /etc/passwd", user)
		}
	}
	if hasGroup {
		if o.gid, err = lookupGroup(tree, group); err != nil {
			return owner{}, err
		}
	}
	return o, nil
}

func lookupGroup(tree, group string) (int, error) {
	if n, err := strconv.Atoi(group); err == nil && n >= 0 {
		return n, nil
	}
	groups, _ := treeFile(tree, "etc/group")
	if gid, _, ok := findID(groups, group, -1); ok {
		return gid, nil
	}
	return 0, notFound("group %q: not in the tree's /etc/group", group)
}

// findID finds in a passwd or group file the line of name (or, name
// empty, of id) and returns its third and fourth fields.
func findID(data []byte, name string, id int) (int, int, bool) {
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 3 {
			continue
		}
		n3, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		if (name != "" && f[0] == name) || (name == "" && n3 == id) {
			n4 := n3
			if len(f) > 3 {
				if v, err := strconv.Atoi(f[3]); err == nil {
					n4 = v
				}
			}
			return n3, n4, true
		}
	}
	return 0, 0, false
}

// missingDirs lists the directories of dir (absolute) that the tree
// lacks, parents first. A component that is a symlink or another file
// ends the list: the layer's apply decides what happens there.
func missingDirs(tree, dir string) []string {
	var missing []string
	p := ""
	for _, c := range strings.Split(strings.Trim(path.Clean(dir), "/"), "/") {
		if c == "" {
			continue
		}
		p = path.Join(p, c)
		if len(missing) == 0 {
			if _, err := os.Lstat(filepath.Join(tree, p)); err == nil {
				continue
			}
		}
		missing = append(missing, p)
	}
	return missing
}

// dirsLayer writes a layer of the directories dirs, owned by o.
func dirsLayer(w io.Writer, dirs []string, o owner) error {
	tw := tar.NewWriter(w)
	now := time.Now()
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, Uid: o.uid, Gid: o.gid, ModTime: now}); err != nil {
			return err
		}
	}
	return tw.Close()
}

// resolveIn is the host path of p (absolute, in the tree root) with the
// symlinks on the way followed as the tree would see them: never above
// root. A symlink at the last component is followed when followLast.
func resolveIn(root, p string, followLast bool) (string, error) {
	var resolved string // relative to root, clean
	rest := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	for links := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			resolved = path.Dir(resolved)
			if resolved == "." {
				resolved = ""
			}
			continue
		}
		next := path.Join(resolved, c)
		st, err := os.Lstat(filepath.Join(root, next))
		if err != nil || st.Mode()&fs.ModeSymlink == 0 || (len(rest) == 0 && !followLast) {
			resolved = next
			continue
		}
		if links++; links > 40 {
			return "", fmt.Errorf("%s: too many symlinks: %w", p, errdefs.ErrInvalid)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			resolved = ""
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, resolved), nil
}
