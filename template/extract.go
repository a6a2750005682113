package template

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
)

// extractor unpacks a tar stream into a tree. Every path is resolved one
// component at a time from the root's descriptor with O_NOFOLLOW (see
// openDir), files are created with O_EXCL after removing whatever had the
// name, and hard links link the named entry itself: no entry can reach
// outside the tree, whatever symlinks earlier entries made.
type extractor struct {
	root  int  // the tree's root directory
	owner bool // apply the tar's uid/gid (needs root)
	log   *slog.Logger
	// src is the tar reader as the extractor reads it, to tell a read
	// error (a bad archive) from a write error (a full disk).
	src    errReader
	srcErr func() error
	// dirs holds the mode and times of directory entries, applied after
	// everything is written so read-only directories can be filled.
	dirs  map[string]dirMeta
	order []string
	// parentRel/parentFD cache the last parent directory opened
	// (-1 when none): consecutive entries usually share it.
	parentRel string
	parentFD  int

	entries, devices, xattrErrs int
	buf, zero                   []byte // for copyTo and copySparse

	// layer is set when applying an OCI layer (see layer.go): whiteouts
	// delete, and entries replace what lower layers put there.
	layer bool
	// written holds every path this layer made, with their parents, so
	// whiteouts spare them (they hide lower layers only).
	written map[string]struct{}
	rootDev uint64
	// budget bounds the bytes the entries claim; nil is no bound.
	budget *sizeBudget
}

type dirMeta struct {
	mode         uint32
	atime, mtime time.Time
}

// errReader remembers the error its reader returned.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// extract unpacks the tar stream r into the existing directory rootfs.
// Errors caused by the archive itself wrap errdefs.ErrInvalid; srcErr
// tells the error of the reader under r (a failed upload, a cancelled
// ctx), which is not the archive's fault.
func extract(ctx context.Context, rootfs string, r io.Reader, srcErr func() error, log *slog.Logger) error {
	return extractTar(ctx, rootfs, r, srcErr, log, nil)
}

// extractTar is extract, or applyLayer's work when layer is set.
func extractTar(ctx context.Context, rootfs string, r io.Reader, srcErr func() error, log *slog.Logger, layer *layerOpts) error {
	root, err := unix.Open(rootfs, dirFlags, 0)
	if err != nil {
		return fmt.Errorf("open rootfs: %w", err)
	}
	defer unix.Close(root)
	x := &extractor{root: root, owner: os.Geteuid() == 0, log: log, srcErr: srcErr, dirs: map[string]dirMeta{}, parentFD: -1}
	if layer != nil {
		if err := x.startLayer(layer); err != nil {
			return err
		}
	}
	defer x.dropParent()
	tr := tar.NewReader(r)
	x.src.r = tr
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return x.readErr(fmt.Sprintf("read tar entry %d", x.entries+1), err)
		}
		x.entries++
		if err := x.entry(hdr); err != nil {
			return err
		}
	}
	if x.entries == 0 && !x.layer { // a layer may change nothing
		return fmt.Errorf("tarball has no entries: %w", errdefs.ErrInvalid)
	}
	if err := x.finishDirs(); err != nil {
		return err
	}
	if x.devices > 0 {
		log.Info("device nodes skipped", "count", x.devices)
	}
	if x.xattrErrs > 0 {
		log.Warn("extended attributes not set", "count", x.xattrErrs)
	}
	return nil
}

// readErr describes an error reading the archive: the source's own
// error if it failed, else the archive is bad.
func (x *extractor) readErr(what string, err error) error {
	if serr := x.srcErr(); serr != nil {
		return fmt.Errorf("%s: %w", what, serr)
	}
	return fmt.Errorf("%s: %w", what, invalid(err))
}

// cleanName validates a tar entry's name and returns it as a clean
// relative path ("" for the root).
func cleanName(name string) (string, error) {
	switch {
	case name == "":
		return "", fmt.Errorf("empty name: %w", errdefs.ErrInvalid)
	case strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("%q: absolute path: %w", name, errdefs.ErrInvalid)
	case strings.ContainsRune(name, 0):
		return "", fmt.Errorf("%q: NUL in name: %w", name, errdefs.ErrInvalid)
	}
	for comp := range strings.SplitSeq(name, "/") {
		if comp == ".." {
			return "", fmt.Errorf("%q: escapes the root: %w", name, errdefs.ErrInvalid)
		}
	}
	rel := path.Clean(name)
	if rel == "." {
		return "", nil
	}
	return rel, nil
}

func (x *extractor) entry(hdr *tar.Header) error {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return fmt.Errorf("tar entry: %w", err)
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) >= 1<<32-1 || int64(hdr.Gid) >= 1<<32-1 {
		return fmt.Errorf("tar entry %q: uid/gid %d/%d out of range: %w", hdr.Name, hdr.Uid, hdr.Gid, errdefs.ErrInvalid)
	}
	if x.layer {
		if done, err := x.layerEntry(rel, hdr); done || err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.dir(rel, hdr)
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeChar, tar.TypeBlock:
		// A sandbox's /dev is made by its runtime.
		x.log.Info("skipping device node", "path", rel)
		x.devices++
		return nil
	}
	if rel == "" {
		return fmt.Errorf("tar entry %q: the root must be a directory: %w", hdr.Name, errdefs.ErrInvalid)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		return x.file(rel, hdr)
	case tar.TypeSymlink:
		return x.symlink(rel, hdr)
	case tar.TypeLink:
		return x.hardlink(rel, hdr)
	case tar.TypeFifo:
		return x.fifo(rel, hdr)
	default:
		x.log.Debug("skipping tar entry of unknown type", "path", rel, "type", string(hdr.Typeflag))
		return nil
	}
}

// parent opens (creating as needed) the directory holding rel and returns
// it with rel's last component. The descriptor stays owned by x.
func (x *extractor) parent(rel string) (int, string, error) {
	dir, base := splitRel(rel)
	if x.parentFD >= 0 && x.parentRel == dir {
		return x.parentFD, base, nil
	}
	fd, err := openDir(x.root, dir, true)
	if err != nil {
		return -1, "", fmt.Errorf("tar entry %q: %w", rel, err)
	}
	x.dropParent()
	x.parentRel, x.parentFD = dir, fd
	return fd, base, nil
}

func (x *extractor) dropParent() {
	if x.parentFD >= 0 {
		unix.Close(x.parentFD)
		x.parentFD = -1
	}
}

// clear makes way for a new entry at base in dir: it removes a
// non-directory, or an empty directory unless keepDir. It reports whether
// a directory is kept.
func (x *extractor) clear(dir int, base, rel string, keepDir bool) (kept bool, err error) {
	var st unix.Stat_t
	err = unix.Fstatat(dir, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("tar entry %q: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Unlinkat(dir, base, 0); err != nil {
			return false, fmt.Errorf("tar entry %q: replace: %w", rel, err)
		}
		return false, nil
	}
	if keepDir {
		return true, nil
	}
	if x.layer {
		// A lower layer's directory, replaced by this layer's entry.
		if err := removeAt(dir, base, x.rootDev); err != nil {
			return false, fmt.Errorf("tar entry %q: replace: %w", rel, err)
		}
		x.forget(rel)
		return false, nil
	}
	if err := unix.Unlinkat(dir, base, unix.AT_REMOVEDIR); err != nil {
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			return false, fmt.Errorf("tar entry %q: replaces a non-empty directory: %w", rel, errdefs.ErrInvalid)
		}
		return false, fmt.Errorf("tar entry %q: replace: %w", rel, err)
	}
	delete(x.dirs, rel)
	// The cached parent may have been this directory (or below it).
	if x.parentRel == rel || strings.HasPrefix(x.parentRel, rel+"/") {
		x.dropParent()
	}
	return false, nil
}

func (x *extractor) dir(rel string, hdr *tar.Header) error {
	if rel == "" {
		if x.owner {
			if err := unix.Fchown(x.root, hdr.Uid, hdr.Gid); err != nil {
				return fmt.Errorf("tar entry %q: chown: %w", hdr.Name, err)
			}
		}
		x.setXattrs(x.root, rel, hdr)
		x.deferDir(rel, hdr)
		return nil
	}
	pfd, base, err := x.parent(rel)
	if err != nil {
		return err
	}
	kept, err := x.clear(pfd, base, rel, true)
	if err != nil {
		return err
	}
	if !kept {
		// Writable for now: the entry's mode is applied at the end.
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			return fmt.Errorf("tar entry %q: mkdir: %w", rel, err)
		}
	}
	if x.owner {
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("tar entry %q: chown: %w", rel, err)
		}
	}
	if hasXattrs(hdr) {
		fd, err := unix.Openat(pfd, base, dirFlags, 0)
		if err != nil {
			return fmt.Errorf("tar entry %q: %w", rel, err)
		}
		x.setXattrs(fd, rel, hdr)
		unix.Close(fd)
	}
	x.deferDir(rel, hdr)
	return nil
}

func (x *extractor) deferDir(rel string, hdr *tar.Header) {
	if _, ok := x.dirs[rel]; !ok {
		x.order = append(x.order, rel)
	}
	x.dirs[rel] = dirMeta{mode: uint32(hdr.Mode & 0o7777), atime: hdr.AccessTime, mtime: hdr.ModTime}
}

func (x *extractor) file(rel string, hdr *tar.Header) error {
	// Before anything is written: a few bytes of tar can claim terabytes.
	if err := x.budget.claim(rel, hdr.Size); err != nil {
		return err
	}
	if isSparse(hdr) && hdr.Size > maxSparseSize {
		return fmt.Errorf("tar entry %q: sparse file of %d bytes, more than %d: %w", rel, hdr.Size, maxSparseSize, errdefs.ErrInvalid)
	}
	pfd, base, err := x.parent(rel)
	if err != nil {
		return err
	}
	fd, err := x.create(pfd, base, rel)
	if err != nil {
		return err
	}
	// A raw descriptor, not an os.File: one file per entry, and os.File
	// costs a syscall and a finalizer each.
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
	}()
	x.src.err = nil
	if isSparse(hdr) {
		err = x.copySparse(fd)
	} else {
		err = x.copyTo(fd)
	}
	if err != nil {
		if x.src.err != nil {
			return x.readErr(fmt.Sprintf("tar entry %q: read", rel), err)
		}
		return fmt.Errorf("tar entry %q: write: %w", rel, err)
	}
	if x.owner {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("tar entry %q: chown: %w", rel, err)
		}
	}
	// After chown, which clears setuid and setgid bits.
	if err := unix.Fchmod(fd, uint32(hdr.Mode&0o7777)); err != nil {
		return fmt.Errorf("tar entry %q: chmod: %w", rel, err)
	}
	x.setXattrs(fd, rel, hdr)
	err = unix.Close(fd)
	fd = -1
	if err != nil {
		return fmt.Errorf("tar entry %q: close: %w", rel, err)
	}
	setTimes(pfd, base, hdr.AccessTime, hdr.ModTime)
	return nil
}

// create makes the regular file base in pfd for writing, replacing what
// had the name (mostly nothing: clear only runs when the name is taken).
func (x *extractor) create(pfd int, base, rel string) (int, error) {
	const flags = unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_CLOEXEC
	fd, err := unix.Openat(pfd, base, flags, 0o600)
	if errors.Is(err, unix.EEXIST) {
		if _, err := x.clear(pfd, base, rel, false); err != nil {
			return -1, err
		}
		fd, err = unix.Openat(pfd, base, flags, 0o600)
	}
	if err != nil {
		return -1, fmt.Errorf("tar entry %q: create: %w", rel, err)
	}
	return fd, nil
}

// copyBufSize is the buffer of copyTo and copySparse: large writes for
// large files.
const copyBufSize = 256 << 10

// copyTo writes the current entry to fd.
func (x *extractor) copyTo(fd int) error {
	x.buffers()
	for {
		n, err := x.src.Read(x.buf)
		if n > 0 {
			if werr := writeAll(fd, x.buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (x *extractor) buffers() {
	if x.buf == nil {
		x.buf, x.zero = make([]byte, copyBufSize), make([]byte, copyBufSize)
	}
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func (x *extractor) symlink(rel string, hdr *tar.Header) error {
	if hdr.Linkname == "" || strings.ContainsRune(hdr.Linkname, 0) {
		return fmt.Errorf("tar entry %q: bad symlink target: %w", rel, errdefs.ErrInvalid)
	}
	pfd, base, err := x.parent(rel)
	if err != nil {
		return err
	}
	if _, err := x.clear(pfd, base, rel, false); err != nil {
		return err
	}
	// The target is stored as given, absolute or not: it is never followed
	// here, and inside a sandbox it resolves against the sandbox's root.
	if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
		return fmt.Errorf("tar entry %q: symlink: %w", rel, err)
	}
	if x.owner {
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("tar entry %q: chown: %w", rel, err)
		}
	}
	setTimes(pfd, base, hdr.AccessTime, hdr.ModTime)
	return nil
}

func (x *extractor) hardlink(rel string, hdr *tar.Header) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil {
		return fmt.Errorf("tar entry %q: hard link: %w", rel, err)
	}
	if target == "" {
		return fmt.Errorf("tar entry %q: hard link to the root: %w", rel, errdefs.ErrInvalid)
	}
	if target == rel {
		return nil // a link to itself: nothing to do
	}
	tdir, tbase := splitRel(target)
	tfd, err := openDir(x.root, tdir, false)
	if err != nil {
		return fmt.Errorf("tar entry %q: hard link target: %w", rel, err)
	}
	defer unix.Close(tfd)
	pfd, base, err := x.parent(rel)
	if err != nil {
		return err
	}
	if _, err := x.clear(pfd, base, rel, false); err != nil {
		return err
	}
	// Without AT_SYMLINK_FOLLOW, a symlink target is linked itself.
	if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("tar entry %q: hard link to %q: %w", rel, target, invalid(err))
		}
		return fmt.Errorf("tar entry %q: hard link: %w", rel, err)
	}
	return nil
}

func (x *extractor) fifo(rel string, hdr *tar.Header) error {
	pfd, base, err := x.parent(rel)
	if err != nil {
		return err
	}
	if _, err := x.clear(pfd, base, rel, false); err != nil {
		return err
	}
	if err := unix.Mknodat(pfd, base, unix.S_IFIFO|0o600, 0); err != nil {
		return fmt.Errorf("tar entry %q: mkfifo: %w", rel, err)
	}
	if x.owner {
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("tar entry %q: chown: %w", rel, err)
		}
	}
	if err := unix.Fchmodat(pfd, base, uint32(hdr.Mode&0o7777), 0); err != nil {
		return fmt.Errorf("tar entry %q: chmod: %w", rel, err)
	}
	setTimes(pfd, base, hdr.AccessTime, hdr.ModTime)
	return nil
}

// finishDirs applies directory modes and times, deepest last-seen first.
func (x *extractor) finishDirs() error {
	x.dropParent()
	for i := len(x.order) - 1; i >= 0; i-- {
		rel := x.order[i]
		m, ok := x.dirs[rel]
		if !ok {
			continue // replaced by a later entry
		}
		fd, err := openDir(x.root, rel, false)
		if err != nil {
			return fmt.Errorf("tar entry %q: %w", rel, err)
		}
		err = unix.Fchmod(fd, m.mode)
		setTimes(fd, ".", m.atime, m.mtime)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("tar entry %q: chmod: %w", rel, err)
		}
	}
	return nil
}

// maxSparseSize bounds a sparse file's size: a few bytes of tar can
// describe a file of exabytes, and reading its holes costs time even
// though they take no disk. A var for tests.
var maxSparseSize int64 = 64 << 30

func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// copySparse writes the current entry to fd leaving runs of zeros as
// holes (archive/tar hands a sparse file's holes over as zeros).
func (x *extractor) copySparse(fd int) error {
	x.buffers()
	var off int64
	for {
		n, err := x.src.Read(x.buf)
		if n > 0 && !bytes.Equal(x.buf[:n], x.zero[:n]) {
			if werr := pwriteAll(fd, x.buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		if err == io.EOF {
			return unix.Ftruncate(fd, off)
		}
		if err != nil {
			return err
		}
	}
}

const xattrPrefix = "SCHILY.xattr."

func hasXattrs(hdr *tar.Header) bool {
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, xattrPrefix) {
			return true
		}
	}
	return false
}

// setXattrs applies the entry's extended attributes, best effort: the
// store's filesystem or privileges may not allow every namespace.
func (x *extractor) setXattrs(fd int, rel string, hdr *tar.Header) {
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, xattrPrefix)
		if !ok {
			continue
		}
		if err := unix.Fsetxattr(fd, name, []byte(v), 0); err != nil {
			x.xattrErrs++
			x.log.Debug("xattr not set", "path", rel, "xattr", name, "err", err)
		}
	}
}

// setTimes sets the times of name in dir without following a symlink,
// best effort (the tar may carry times the filesystem cannot store).
func setTimes(dir int, name string, atime, mtime time.Time) {
	if mtime.IsZero() {
		return
	}
	if atime.IsZero() {
		atime = mtime
	}
	ts := []unix.Timespec{
		{Sec: atime.Unix(), Nsec: int64(atime.Nanosecond())},
		{Sec: mtime.Unix(), Nsec: int64(mtime.Nanosecond())},
	}
	_ = unix.UtimesNanoAt(dir, name, ts, unix.AT_SYMLINK_NOFOLLOW)
}
