package template

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
)

// DefaultSizeBudget is the default bound on what a template's layers
// claim, together: the sizes their file entries declare (a sparse file
// counts its whole size, holes included).
const DefaultSizeBudget int64 = 8 << 30

// OCI layer whiteouts.
const (
	whiteoutPrefix = ".wh."
	// opaqueWhiteout in a directory hides what lower layers put in it.
	opaqueWhiteout = ".wh..wh..opq"
	// whiteoutMeta starts AUFS's own files (.wh..wh.plnk), which carry
	// nothing for the tree.
	whiteoutMeta = ".wh..wh."
)

// ApplyLayer applies one OCI layer tar (plain or gzip) onto the existing
// tree rootfs: entries replace what lower layers put at their names, a
// file ".wh.NAME" deletes NAME, a file ".wh..wh..opq" empties its
// directory of what lower layers put there, and whiteouts never appear in
// the tree. The escapes Import refuses are refused here too (errdefs.ErrInvalid:
// "..", absolute names, a path through a symlink, a hard link out of the
// tree); device nodes are skipped. File entries claiming more than
// DefaultSizeBudget in all are refused before they are written. A failed
// layer leaves the tree half-changed: apply layers to a tree that is
// thrown away on failure.
func ApplyLayer(ctx context.Context, rootfs string, r io.Reader) error {
	return applyLayer(ctx, rootfs, r, &sizeBudget{limit: DefaultSizeBudget}, slog.New(slog.DiscardHandler))
}

func applyLayer(ctx context.Context, rootfs string, r io.Reader, budget *sizeBudget, log *slog.Logger) error {
	src := &errReader{r: &ctxReader{ctx: ctx, r: r}}
	tr, err := decompress(src)
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	srcErr := func() error { return src.err }
	return extractTar(ctx, rootfs, tr, srcErr, log, &layerOpts{budget: budget})
}

// layerOpts are the settings of an extraction in layer mode.
type layerOpts struct {
	budget *sizeBudget
}

// sizeBudget bounds the bytes file entries may claim, across the layers
// of one tree. A nil budget allows anything.
type sizeBudget struct {
	limit, used int64
}

func (b *sizeBudget) claim(rel string, n int64) error {
	if b == nil {
		return nil
	}
	if n < 0 || n > b.limit-b.used {
		return fmt.Errorf("tar entry %q claims %d bytes: the template's layers would hold more than its size budget of %d bytes (%d GiB): %w",
			rel, n, b.limit, b.limit>>30, errdefs.ErrInvalid)
	}
	b.used += n
	return nil
}

func (x *extractor) startLayer(o *layerOpts) error {
	var st unix.Stat_t
	if err := unix.Fstat(x.root, &st); err != nil {
		return fmt.Errorf("stat rootfs: %w", err)
	}
	x.layer, x.rootDev, x.budget = true, st.Dev, o.budget
	x.written = map[string]struct{}{}
	return nil
}

// layerEntry handles what is special about an entry of a layer: a
// whiteout is applied (done), anything else is recorded as this layer's.
func (x *extractor) layerEntry(rel string, hdr *tar.Header) (done bool, err error) {
	dir, base := splitRel(rel)
	switch {
	case base == opaqueWhiteout:
		return true, x.opaque(rel, dir)
	case strings.HasPrefix(base, whiteoutMeta):
		return true, nil
	case strings.HasPrefix(base, whiteoutPrefix):
		name := strings.TrimPrefix(base, whiteoutPrefix)
		if name == "" || name == "." || name == ".." {
			return true, fmt.Errorf("tar entry %q: whiteout of %q: %w", hdr.Name, name, errdefs.ErrInvalid)
		}
		return true, x.whiteout(joinRel(dir, name))
	}
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
		x.markWritten(rel)
	}
	return false, nil
}

// markWritten records rel and its parents as this layer's.
func (x *extractor) markWritten(rel string) {
	for rel != "" {
		if _, ok := x.written[rel]; ok {
			return // so are its parents
		}
		x.written[rel] = struct{}{}
		rel, _ = splitRel(rel)
	}
}

func joinRel(dir, base string) string {
	if dir == "" {
		return base
	}
	return dir + "/" + base
}

// whiteout deletes target, unless this layer made it (a whiteout hides
// lower layers only). A missing target is nothing to hide; a path through
// a symlink is refused.
func (x *extractor) whiteout(target string) error {
	if _, ok := x.written[target]; ok {
		return nil
	}
	dir, name := splitRel(target)
	dfd, err := openDir(x.root, dir, false)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("whiteout %q: %w", target, err)
	}
	defer unix.Close(dfd)
	return x.removeLower(dfd, name, target)
}

// opaque empties the directory dir of everything this layer did not make.
func (x *extractor) opaque(rel, dir string) error {
	dfd, err := openDir(x.root, dir, false)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("tar entry %q: %w", rel, err)
	}
	defer unix.Close(dfd)
	x.markWritten(dir)
	return x.clearLower(dfd, dir)
}

// clearLower deletes what lower layers put in the directory dfd (at
// dir), descending into the directories this layer made.
func (x *extractor) clearLower(dfd int, dir string) error {
	names, err := readDirNames(dfd)
	if err != nil {
		return fmt.Errorf("read %q: %w", dir, err)
	}
	for _, name := range names {
		rel := joinRel(dir, name)
		if _, ok := x.written[rel]; !ok {
			if err := x.removeLower(dfd, name, rel); err != nil {
				return err
			}
			continue
		}
		sub, err := unix.Openat(dfd, name, dirFlags, 0)
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			continue // this layer's file or symlink
		}
		if err != nil {
			return fmt.Errorf("open %q: %w", rel, err)
		}
		err = x.clearLower(sub, rel)
		unix.Close(sub)
		if err != nil {
			return err
		}
	}
	return nil
}

// removeLower deletes name in dfd (at rel) with everything below it.
func (x *extractor) removeLower(dfd int, name, rel string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return fmt.Errorf("whiteout %q: %w", rel, err)
	}
	if err := removeAt(dfd, name, x.rootDev); err != nil {
		return fmt.Errorf("whiteout %q: %w", rel, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		x.forget(rel)
	}
	return nil
}

// forget drops the deferred modes of directory rel and those below it,
// now deleted, and the cached parent if it was one of them.
func (x *extractor) forget(rel string) {
	for d := range x.dirs {
		if d == rel || strings.HasPrefix(d, rel+"/") {
			delete(x.dirs, d)
		}
	}
	if x.parentFD >= 0 && (x.parentRel == rel || strings.HasPrefix(x.parentRel, rel+"/")) {
		x.dropParent()
	}
}

// readDirNames lists the directory dfd without consuming its offset for
// others (it reads through a duplicate descriptor).
func readDirNames(dfd int) ([]string, error) {
	dup, err := unix.Openat(dfd, ".", dirFlags, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}
