package files

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"roost.dev/roost/envd/filesystem"
	"roost.dev/roost/envd/identity"
)

// maxLinks bounds symlink following, as the kernel's ELOOP limit does.
const maxLinks = 40

// maxRaces bounds how often add looks again at a destination that another
// writer created between its look and its O_EXCL create.
const maxRaces = 3

// errRaced means the destination appeared after followLinks found none.
var errRaced = errors.New("destination created concurrently")

// batch is one request's files. add writes each as it arrives: a
// destination that does not exist yet is created and written in place (as
// E2B's envd writes every upload, so watchers see CREATE and WRITE for its
// name); an existing one gets a temporary file beside it, which commit
// renames over it once the whole request has been read, so a failed request
// never destroys old content. abort undoes what was not committed: it
// removes the temporary files and the files the request created. A batch
// belongs to one request goroutine.
type batch struct {
	user     identity.User
	cp       *copier
	metadata map[string]string // stored on every file written; nil for none
	log      *slog.Logger
	files    []*staged
}

type staged struct {
	dst     string      // the destination as the caller named it (resolved), reported back
	target  string      // dst with symlinks followed: where the data lands
	tmp     string      // the temporary file to rename onto target; "" once renamed, or when there is none
	created fs.FileInfo // the file this request created at target, until commit; abort removes it
	device  bool        // written through in place: it can be neither staged nor given metadata
}

// add writes src for dst. Parent directories are created (and given to the
// user) as needed. A destination that exists keeps its permission bits,
// though not setuid/setgid/sticky: new content must not inherit privileges.
// Every result belongs to the user.
func (b *batch) add(dst string, src io.Reader) error {
	for _, s := range b.files {
		if s.dst == dst {
			return badRequest("%s is named twice in one request", dst)
		}
		if strings.HasPrefix(dst, s.dst+"/") {
			return writtenAsFile(s, dst)
		}
	}
	f, s, err := b.open(dst)
	if err != nil {
		return err
	}
	err = b.fill(f, s, src)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("write %s: %w", dst, bareErr(cerr))
	}
	return err
}

func writtenAsFile(s *staged, dst string) error {
	return badRequest("%s is written as a file in this request, so it cannot also be a directory holding %s", s.dst, dst)
}

// open opens the file that dst's data goes to and adds it to the batch.
func (b *batch) open(dst string) (*os.File, *staged, error) {
	for range maxRaces {
		target, fi, err := followLinks(dst)
		if err != nil {
			return nil, nil, err
		}
		for _, s := range b.files {
			if strings.HasPrefix(target, s.target+"/") {
				return nil, nil, writtenAsFile(s, dst)
			}
		}
		if fi == nil {
			f, s, err := b.create(dst, target)
			if errors.Is(err, errRaced) {
				continue
			}
			return f, s, err
		}
		switch mode := fi.Mode(); {
		case mode.IsDir():
			return nil, nil, badRequest("path is a directory: %s", dst)
		case mode.IsRegular():
			return b.replace(dst, target, mode.Perm())
		case mode&fs.ModeDevice != 0:
			// A device cannot be replaced by a renamed regular file
			// without destroying it; write through it instead.
			return b.openDevice(dst, target)
		default:
			return nil, nil, badRequest("%s is not a regular file (%s)", dst, mode.Type())
		}
	}
	return nil, nil, &requestError{http.StatusConflict, fmt.Sprintf("%s keeps being created and removed by someone else; try again", dst)}
}

// create makes target, which does not exist, with O_EXCL: if it appeared
// meanwhile, the caller looks again (errRaced) rather than take it over.
// The mode is 0666 less the umask, as for any plain create.
func (b *batch) create(dst, target string) (*os.File, *staged, error) {
	if err := ensureDir(filepath.Dir(target), b.user); err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
	if errors.Is(err, fs.ErrExist) {
		return nil, nil, errRaced
	}
	if err != nil {
		return nil, nil, fmt.Errorf("create %s: %w", dst, bareErr(err))
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		_ = os.Remove(target)
		return nil, nil, fmt.Errorf("create %s: %w", dst, bareErr(err))
	}
	s := &staged{dst: dst, target: target, created: fi}
	b.files = append(b.files, s)
	if err := b.user.Chown(target); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("give %s to %s: %w", dst, b.user.Name, bareErr(err))
	}
	return f, s, nil
}

// replace opens a temporary file beside target, an existing regular file
// with permission bits perm, for commit to rename over it.
func (b *batch) replace(dst, target string, perm fs.FileMode) (*os.File, *staged, error) {
	f, tmp, err := createTemp(filepath.Dir(target))
	if err != nil {
		return nil, nil, err
	}
	s := &staged{dst: dst, target: target, tmp: tmp}
	b.files = append(b.files, s)
	if err := b.user.Chown(tmp); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("give %s to %s: %w", dst, b.user.Name, bareErr(err))
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("chmod %s: %w", dst, bareErr(err))
	}
	return f, s, nil
}

// openDevice opens a device such as /dev/null for writing. A later failure
// in the same request does not undo what was written to it.
func (b *batch) openDevice(dst, target string) (*os.File, *staged, error) {
	// O_NONBLOCK: never hang in open(2) should the device turn out to be
	// something that blocks until a peer appears.
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_TRUNC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", dst, bareErr(err))
	}
	s := &staged{dst: dst, target: target, device: true}
	b.files = append(b.files, s)
	return f, s, nil
}

// fill writes src to f, the file open for s, then the batch's metadata.
// A filesystem without user xattrs keeps the data but not the metadata, as
// in E2B's envd; the response, read back from disk, then shows none.
func (b *batch) fill(f *os.File, s *staged, src io.Reader) error {
	_, rerr, werr := b.cp.copy(f, src)
	switch {
	case rerr != nil:
		return &bodyError{rerr, s.dst}
	case werr != nil:
		return fmt.Errorf("write %s: %w", s.dst, bareErr(werr))
	case len(b.metadata) == 0 || s.device:
		return nil
	}
	err := filesystem.WriteMetadata(f, b.metadata)
	if errors.Is(err, errors.ErrUnsupported) {
		b.log.Warn("metadata not stored: no user xattrs on this filesystem", "path", s.dst, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("store metadata of %s: %w", s.dst, err)
	}
	return nil
}

// commit renames every temporary file into place, in request order, and
// keeps the files created in place. Each entry reports the metadata the
// file now has on disk.
func (b *batch) commit() ([]entry, error) {
	for _, s := range b.files {
		if s.tmp == "" {
			continue
		}
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
	out := make([]entry, 0, len(b.files))
	for _, s := range b.files {
		s.created = nil
		out = append(out, entry{Path: s.dst, Name: filepath.Base(s.dst), Type: "file", Metadata: filesystem.ReadMetadata(s.target)})
	}
	return out, nil
}

// abort removes the temporary files not yet committed and the files the
// request created. It is safe after commit and safe to call twice.
func (b *batch) abort() {
	for _, s := range b.files {
		if s.tmp != "" {
			_ = os.Remove(s.tmp)
			s.tmp = ""
		}
		if s.created != nil {
			// Only the file this request made, not one that has
			// replaced it since.
			if fi, err := os.Lstat(s.target); err == nil && os.SameFile(fi, s.created) {
				_ = os.Remove(s.target)
			}
			s.created = nil
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

// createTemp creates an empty temporary file in dir, named so that
// watchers ignore it.
func createTemp(dir string) (*os.File, string, error) {
	for range 100 {
		name := filepath.Join(dir, filesystem.TempFilePrefix+strconv.FormatUint(rand.Uint64(), 36))
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
