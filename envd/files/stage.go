package files

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"roost.dev/roost/envd/identity"
)

// tempPrefix starts the name of every temporary upload file, so a leftover
// (after a crash) is recognisable.
const tempPrefix = ".roost-upload-"

// maxLinks bounds symlink following, as the kernel's ELOOP limit does.
const maxLinks = 40

// batch is one request's files. add writes each to a temporary file beside
// its destination; commit renames them all into place once the request has
// been read in full; abort removes whatever was not committed. A batch
// belongs to one request goroutine.
type batch struct {
	user  identity.User
	cp    *copier
	files []*staged
}

type staged struct {
	dst    string // the destination as the caller named it (resolved), reported back
	target string // dst with symlinks followed: where the data lands
	tmp    string // the temporary file; "" once renamed, or when written in place
}

// add streams src to a temporary file for dst. Parent directories are
// created (and given to the user) as needed. A destination that exists
// keeps its permission bits, though not setuid/setgid/sticky: new content
// must not inherit privileges. Every result belongs to the user.
func (b *batch) add(dst string, src io.Reader) error {
	for _, s := range b.files {
		if s.dst == dst {
			return badRequest("%s is named twice in one request", dst)
		}
	}
	target, fi, err := followLinks(dst)
	if err != nil {
		return err
	}
	for _, s := range b.files {
		if strings.HasPrefix(target, s.target+"/") {
			return badRequest("%s is written as a file in this request, so it cannot also be a directory holding %s", s.dst, dst)
		}
	}
	var perm fs.FileMode
	existing := false
	if fi != nil {
		switch mode := fi.Mode(); {
		case mode.IsDir():
			return badRequest("path is a directory: %s", dst)
		case mode.IsRegular():
			perm, existing = mode.Perm(), true
		case mode&fs.ModeDevice != 0:
			// A device cannot be replaced by a renamed regular file
			// without destroying it; write through it instead.
			return b.writeInPlace(dst, target, src)
		default:
			return badRequest("%s is not a regular file (%s)", dst, mode.Type())
		}
	}

	dir := filepath.Dir(target)
	if err := ensureDir(dir, b.user); err != nil {
		return err
	}
	f, tmp, err := createTemp(dir)
	if err != nil {
		return err
	}
	b.files = append(b.files, &staged{dst: dst, target: target, tmp: tmp})
	_, rerr, werr := b.cp.copy(f, src)
	if rerr != nil || werr != nil {
		f.Close()
		if rerr != nil {
			return &bodyError{rerr, dst}
		}
		return fmt.Errorf("write %s: %w", dst, bareErr(werr))
	}
	if existing {
		if err := f.Chmod(perm); err != nil {
			f.Close()
			return fmt.Errorf("chmod %s: %w", dst, bareErr(err))
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", dst, bareErr(err))
	}
	if err := b.user.Chown(tmp); err != nil {
		return fmt.Errorf("give %s to %s: %w", dst, b.user.Name, bareErr(err))
	}
	return nil
}

// writeInPlace writes to a device such as /dev/null. It cannot be staged,
// so a later failure in the same request does not undo it.
func (b *batch) writeInPlace(dst, target string, src io.Reader) error {
	// O_NONBLOCK: never hang in open(2) should the device turn out to be
	// something that blocks until a peer appears.
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_TRUNC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dst, bareErr(err))
	}
	b.files = append(b.files, &staged{dst: dst, target: target})
	_, rerr, werr := b.cp.copy(f, src)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	switch {
	case rerr != nil:
		return &bodyError{rerr, dst}
	case werr != nil:
		return fmt.Errorf("write %s: %w", dst, bareErr(werr))
	}
	return nil
}

// commit renames every staged file into place, in request order.
func (b *batch) commit() ([]entry, error) {
	out := make([]entry, 0, len(b.files))
	for _, s := range b.files {
		if s.tmp != "" {
			if err := os.Rename(s.tmp, s.target); err != nil {
				var le *os.LinkError
				if errors.As(err, &le) {
					err = le.Err
				}
				// os.Rename reports a directory in the way as EEXIST.
				if errors.Is(err, syscall.EISDIR) || errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY) {
					return nil, badRequest("path is a directory: %s", s.dst)
				}
				return nil, fmt.Errorf("move into %s: %w", s.dst, err)
			}
			s.tmp = ""
		}
		out = append(out, entry{Path: s.dst, Name: filepath.Base(s.dst), Type: "file"})
	}
	return out, nil
}

// abort removes the temporary files not yet committed. It is safe after
// commit and safe to call twice.
func (b *batch) abort() {
	for _, s := range b.files {
		if s.tmp != "" {
			_ = os.Remove(s.tmp)
			s.tmp = ""
		}
	}
}

// followLinks resolves symlinks at path the way open(2) would, so writing
// through a link replaces its target rather than the link. fi is nil when
// the final target does not exist (it will be created).
func followLinks(path string) (target string, fi fs.FileInfo, err error) {
	for hops := 0; ; hops++ {
		fi, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return path, nil, nil
		}
		if err != nil {
			return "", nil, fmt.Errorf("stat %s: %w", path, bareErr(err))
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return path, fi, nil
		}
		if hops == maxLinks {
			return "", nil, fmt.Errorf("follow links at %s: %w", path, syscall.ELOOP)
		}
		link, err := os.Readlink(path)
		if err != nil {
			return "", nil, fmt.Errorf("read link %s: %w", path, bareErr(err))
		}
		if !filepath.IsAbs(link) {
			// Resolve against the link's real directory: "..", in a
			// relative link, climbs from there, not from the path's text.
			dir, err := filepath.EvalSymlinks(filepath.Dir(path))
			if err != nil {
				return "", nil, fmt.Errorf("resolve %s: %w", filepath.Dir(path), bareErr(err))
			}
			link = filepath.Join(dir, link)
		}
		path = filepath.Clean(link)
	}
}

// ensureDir creates dir and its missing parents, each given to u.
func ensureDir(dir string, u identity.User) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return badRequest("%s is not a directory", dir)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("stat %s: %w", dir, bareErr(err))
	}
	if parent := filepath.Dir(dir); parent != dir {
		if err := ensureDir(parent, u); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Lost a race with another creator; fine if it made a directory.
			if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
				return nil
			}
		}
		return fmt.Errorf("create directory %s: %w", dir, bareErr(err))
	}
	if err := u.Chown(dir); err != nil {
		return fmt.Errorf("give %s to %s: %w", dir, u.Name, bareErr(err))
	}
	return nil
}

// createTemp creates an empty temporary file in dir. The mode is 0666 less
// the umask, what a plain create would give a new destination.
func createTemp(dir string) (*os.File, string, error) {
	for range 100 {
		name := filepath.Join(dir, tempPrefix+strconv.FormatUint(rand.Uint64(), 36))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("create file in %s: %w", dir, bareErr(err))
		}
		return f, name, nil
	}
	return nil, "", fmt.Errorf("create file in %s: too many name collisions", dir)
}

// bareErr strips the *fs.PathError a temporary file's name would leak into
// a message; the caller wraps the cause with the destination instead.
func bareErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
