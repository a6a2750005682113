package build

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
)

// runtimeFiles are what a sandbox's runtime writes into its upper layer
// for every sandbox (its identity files), never part of a step's layer,
// as Docker keeps a RUN's changes to them out of the image.
var runtimeFiles = map[string]bool{"etc/hostname": true, "etc/hosts": true, "etc/resolv.conf": true}

// Overlay's extended attributes, privileged ("trusted.") and, for an
// overlay mounted in a user namespace, unprivileged ("user.").
var overlayXattrPrefixes = []string{"trusted.overlay.", "user.overlay."}

// LayerOfUpper writes the overlay upper directory upper as an OCI layer
// tar: a whiteout (a 0/0 character device, or a file overlay marks as
// one) becomes ".wh.NAME", an opaque directory gets ".wh..wh..opq", IDs
// lose shift, hard links within the upper stay links. Other devices and
// sockets are left out, as are runtimeFiles and overlay's own xattrs.
func LayerOfUpper(ctx context.Context, upper string, shift int, w io.Writer) error {
	tw := tar.NewWriter(w)
	links := map[uint64]string{} // inode → first name
	err := filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(upper, p)
		if rel == "." || runtimeFiles[rel] {
			return nil
		}
		return upperEntry(tw, p, filepath.ToSlash(rel), shift, links)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func upperEntry(tw *tar.Writer, p, rel string, shift int, links map[uint64]string) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	xattrs, err := readXattrs(p)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	mode := st.Mode & unix.S_IFMT
	if (mode == unix.S_IFCHR && st.Rdev == 0) || (mode == unix.S_IFREG && hasOverlayXattr(xattrs, "whiteout")) {
		dir, base := splitRel(rel)
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: joinRel(dir, ".wh."+base), Mode: 0o644, Format: tar.FormatPAX})
	}
	hdr, err := headerOf(p, rel, &st, shift)
	if err != nil || hdr == nil {
		return err
	}
	for k, v := range xattrs {
		if !isOverlayXattr(k) {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	if hdr.Typeflag == tar.TypeReg && st.Nlink > 1 {
		if first, ok := links[st.Ino]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
		} else {
			links[st.Ino] = rel
		}
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir && overlayFlag(xattrs, "opaque") == "y" {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel + "/.wh..wh..opq", Mode: 0o644, Format: tar.FormatPAX})
	}
	if hdr.Typeflag == tar.TypeReg {
		return copyFile(tw, p)
	}
	return nil
}

// headerOf is the tar header of the upper's entry p, nil for what a
// layer leaves out.
func headerOf(p, rel string, st *unix.Stat_t, shift int) (*tar.Header, error) {
	uid, gid := int(st.Uid)-shift, int(st.Gid)-shift
	if uid < 0 || gid < 0 {
		return nil, fmt.Errorf("%s: owned by host %d:%d, outside the sandbox's IDs (shift %d): %w", rel, st.Uid, st.Gid, shift, errdefs.ErrInvalid)
	}
	hdr := &tar.Header{
		Name: rel, Mode: int64(st.Mode & 0o7777), Uid: uid, Gid: gid,
		ModTime: timeOf(st.Mtim), Format: tar.FormatPAX,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
	case unix.S_IFREG:
		hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", rel, err)
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return nil, nil // devices, sockets
	}
	return hdr, nil
}

func copyFile(w io.Writer, p string) error {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// readXattrs reads the extended attributes of p (not following a
// symlink).
func readXattrs(p string) (map[string]string, error) {
	size, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) || size == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(p, buf); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:size]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 64<<10)
		n, err := unix.Lgetxattr(p, name, val)
		if err != nil {
			continue // gone, or not ours to read
		}
		out[name] = string(val[:n])
	}
	return out, nil
}

func overlayFlag(xattrs map[string]string, name string) string {
	for _, pre := range overlayXattrPrefixes {
		if v, ok := xattrs[pre+name]; ok {
			return v
		}
	}
	return ""
}

func hasOverlayXattr(xattrs map[string]string, name string) bool {
	for _, pre := range overlayXattrPrefixes {
		if _, ok := xattrs[pre+name]; ok {
			return true
		}
	}
	return false
}

func timeOf(ts unix.Timespec) time.Time { return time.Unix(ts.Unix()) }

func isOverlayXattr(name string) bool {
	for _, pre := range overlayXattrPrefixes {
		if strings.HasPrefix(name, pre) {
			return true
		}
	}
	return false
}

func splitRel(rel string) (dir, base string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

func joinRel(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}
