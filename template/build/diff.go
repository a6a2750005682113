package build

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// LayerOfDiff writes, as an OCI layer tar, what changed from the tree
// lower to the tree upper (a whole filesystem, such as a VM's disk): the
// entries of upper that lower lacks or has otherwise (type, mode, owner,
// size, modification second, link target), and a whiteout for each entry
// of lower that upper lacks. Entries whose path skip holds, and
// runtimeFiles, are left out of both. Times are compared to the second,
// as ext4 images made from a tree keep them: a file rewritten with the
// same size within the second its template's copy was last changed in
// is not seen.
func LayerOfDiff(ctx context.Context, lower, upper string, skip map[string]bool, w io.Writer) error {
	d := &differ{ctx: ctx, lower: lower, upper: upper, skip: skip, tw: tar.NewWriter(w), links: map[uint64]string{}}
	if err := d.dir(""); err != nil {
		return err
	}
	return d.tw.Close()
}

type differ struct {
	ctx          context.Context
	lower, upper string
	skip         map[string]bool
	tw           *tar.Writer
	links        map[uint64]string // inode in upper → first name written
}

// dir compares the directory rel of both trees (it is one in upper).
func (d *differ) dir(rel string) error {
	if err := d.ctx.Err(); err != nil {
		return err
	}
	up, err := names(filepath.Join(d.upper, rel))
	if err != nil {
		return err
	}
	low, _ := names(filepath.Join(d.lower, rel)) // absent: all of up is new
	for _, name := range low {
		r := joinRel(rel, name)
		if !slices.Contains(up, name) && !d.skipped(r) {
			if err := d.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: joinRel(rel, ".wh."+name), Mode: 0o644, Format: tar.FormatPAX}); err != nil {
				return err
			}
		}
	}
	for _, name := range up {
		r := joinRel(rel, name)
		if d.skipped(r) {
			continue
		}
		isDir, err := d.entry(r)
		if err != nil {
			return fmt.Errorf("%s: %w", r, err)
		}
		if isDir {
			if err := d.dir(r); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *differ) skipped(rel string) bool { return d.skip[rel] || runtimeFiles[rel] }

// entry writes rel when it changed, and says whether it is a directory
// of upper (to compare within).
func (d *differ) entry(rel string) (isDir bool, err error) {
	p := filepath.Join(d.upper, rel)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false, err
	}
	isDir = st.Mode&unix.S_IFMT == unix.S_IFDIR
	var old unix.Stat_t
	lerr := unix.Lstat(filepath.Join(d.lower, rel), &old)
	if lerr == nil && same(&st, &old, p, filepath.Join(d.lower, rel)) {
		return isDir, nil
	}
	if lerr == nil && isDir && old.Mode&unix.S_IFMT != unix.S_IFDIR {
		// A directory where lower has a file: the file goes first.
		dir, base := splitRel(rel)
		if err := d.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: joinRel(dir, ".wh."+base), Mode: 0o644, Format: tar.FormatPAX}); err != nil {
			return false, err
		}
	}
	hdr, err := headerOf(p, rel, &st, 0)
	if err != nil || hdr == nil {
		return isDir, err
	}
	xattrs, err := readXattrs(p)
	if err != nil {
		return false, err
	}
	for k, v := range xattrs {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+k] = v
	}
	if hdr.Typeflag == tar.TypeReg && st.Nlink > 1 {
		if first, ok := d.links[st.Ino]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
		} else {
			d.links[st.Ino] = rel
		}
	}
	if err := d.tw.WriteHeader(hdr); err != nil {
		return false, err
	}
	if hdr.Typeflag == tar.TypeReg {
		return false, copyFile(d.tw, p)
	}
	return isDir, nil
}

// same says whether the entry a (at pa, in upper) is b's (at pb, in
// lower) unchanged.
func same(a, b *unix.Stat_t, pa, pb string) bool {
	if a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid {
		return false
	}
	switch a.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return true // its entries are compared one by one
	case unix.S_IFLNK:
		ta, ea := os.Readlink(pa)
		tb, eb := os.Readlink(pb)
		return ea == nil && eb == nil && ta == tb
	case unix.S_IFREG:
		return a.Size == b.Size && a.Mtim.Sec == b.Mtim.Sec
	}
	return a.Rdev == b.Rdev
}

// names lists a directory's entries, sorted.
func names(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := f.Readdirnames(-1)
	slices.Sort(n)
	return n, err
}
