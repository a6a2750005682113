package template

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"roost.dev/roost/template/content"
)

// layerFile, beside a template's record, remembers the layer LayerOfTree
// made of its tree (a tree never changes; a rebuild replaces the dir).
const layerFile = "layer.json"

// LayerOfTree writes the whole tree of template name as one layer blob
// into blobs and returns it: ownership, modes, times, symlinks, hard
// links, device nodes and extended attributes, in a stable order, so one
// tree always makes one digest. It is how a tree built on the host (base)
// becomes content. The tar is streamed into blobs, never held whole; the
// layer is remembered beside the tree, so later calls return at once
// while blobs keeps it.
func (s *Store) LayerOfTree(ctx context.Context, name string, blobs *content.Blobs) (content.Descriptor, error) {
	if err := ValidName(name); err != nil {
		return content.Descriptor{}, err
	}
	unlock, err := s.lock(ctx, name, nil)
	if err != nil {
		return content.Descriptor{}, err
	}
	defer unlock()
	t, err := s.read(name)
	if err != nil {
		return content.Descriptor{}, err
	}
	memo := filepath.Join(s.dir, name, layerFile)
	var desc content.Descriptor
	if b, err := os.ReadFile(memo); err == nil && json.Unmarshal(b, &desc) == nil && blobs.Has(desc.Digest) {
		return desc, nil
	}
	desc, err = blobs.PutWritten(ctx, func(w io.Writer) error { return writeTreeTar(ctx, t.RootFS, w) })
	if err != nil {
		return content.Descriptor{}, fmt.Errorf("layer of template %q: %w", name, err)
	}
	if b, err := json.Marshal(desc); err == nil {
		if err := writeFileSync(memo, b, 0o644); err != nil {
			s.log.Warn("remember layer of tree", "template", name, "err", err)
		}
	}
	s.log.Info("layer made of template tree", "template", name, "digest", desc.Digest, "size_bytes", desc.Size)
	return desc, nil
}

// writeTreeTar writes the tree at root to w as a tar, in lexical order.
func writeTreeTar(ctx context.Context, root string, w io.Writer) error {
	tw := tar.NewWriter(w)
	type inode struct{ dev, ino uint64 }
	links := map[inode]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		hdr := &tar.Header{
			Name:    filepath.ToSlash(rel),
			Mode:    int64(st.Mode & 0o7777),
			Uid:     int(st.Uid),
			Gid:     int(st.Gid),
			ModTime: info.ModTime(),
			Format:  tar.FormatPAX,
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
			if rel == "." {
				hdr.Name = "./"
			}
		case unix.S_IFREG:
			hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
			if st.Nlink > 1 {
				k := inode{st.Dev, st.Ino}
				if first, ok := links[k]; ok {
					hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				} else {
					links[k] = hdr.Name
				}
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		case unix.S_IFCHR, unix.S_IFBLK:
			hdr.Typeflag = tar.TypeChar
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		case unix.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			return nil // sockets: made by whoever listens
		}
		hdr.PAXRecords = xattrRecords(p)
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if hdr.Typeflag == tar.TypeReg && hdr.Size > 0 {
			return copyFileTo(tw, p, hdr.Size)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// copyFileTo writes the size bytes of file p to w, without following a
// symlink.
func copyFileTo(w io.Writer, p string, size int64) error {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyN(w, f, size); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// xattrRecords returns p's extended attributes as PAX records (nil when
// it has none or they cannot be read).
func xattrRecords(p string) map[string]string {
	size, err := unix.Llistxattr(p, nil)
	if err != nil || size == 0 {
		return nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil
	}
	recs := map[string]string{}
	for _, name := range splitNul(buf[:size]) {
		n, err := unix.Lgetxattr(p, name, nil)
		if err != nil {
			continue
		}
		val := make([]byte, n)
		if n, err = unix.Lgetxattr(p, name, val); err != nil {
			continue
		}
		recs[xattrPrefix+name] = string(val[:n])
	}
	return recs
}

func splitNul(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == 0 {
			if i > start {
				out = append(out, string(b[start:i]))
			}
			start = i + 1
		}
	}
	return out
}
