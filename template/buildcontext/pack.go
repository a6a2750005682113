package buildcontext

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"roost.dev/roost/errdefs"
)

// IgnoreFile is the file in a context directory that lists what to leave
// out, in Docker's syntax.
const IgnoreFile = ".dockerignore"

// modTime is every entry's modification time: a fixed one keeps the
// digest of a directory whose files were only touched (a fresh checkout).
var modTime = time.Unix(0, 0)

// Ignored reads the patterns of dir's .dockerignore; none when it has
// none.
func Ignored(dir string) ([]string, error) {
	f, err := os.Open(filepath.Join(dir, IgnoreFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", IgnoreFile, err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w: %w", IgnoreFile, err, errdefs.ErrInvalid)
	}
	return patterns, nil
}

// Packed is a directory packed into a temporary file (Pack), or a file
// as it is (Open).
type Packed struct {
	File   *os.File // at offset 0
	Size   int64
	SHA256 string // hex
	keep   bool   // File is not ours to remove
}

// Close closes the file, and removes it when Pack made it.
func (p *Packed) Close() error {
	err := p.File.Close()
	if p.keep {
		return err
	}
	if rerr := os.Remove(p.File.Name()); err == nil {
		err = rerr
	}
	return err
}

// Pack writes the tar of dir, less what exclude (patterns in
// .dockerignore syntax) matches, into a new file in tmpDir ("" is the
// system's), and returns it with its size and digest.
func Pack(ctx context.Context, dir string, exclude []string, tmpDir string) (*Packed, error) {
	f, err := os.CreateTemp(tmpDir, "roost-context-*.tar")
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	err = Write(ctx, cw, dir, exclude)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &Packed{File: f, Size: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Write writes the tar of dir to w, less what exclude matches. Names are
// relative to dir, slash-separated; directories end in "/".
func Write(ctx context.Context, w io.Writer, dir string, exclude []string) error {
	pm, err := patternmatcher.New(exclude)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", IgnoreFile, err, errdefs.ErrInvalid)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("context: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("context %s is not a directory: %w", dir, errdefs.ErrInvalid)
	}
	tw := tar.NewWriter(w)
	parents := map[string]patternmatcher.MatchInfo{}
	dirs := written{}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		skip, info, err := pm.MatchesUsingParentResults(rel, parents[parentOf(rel)])
		if err != nil {
			return fmt.Errorf("%s: %w: %w", IgnoreFile, err, errdefs.ErrInvalid)
		}
		if d.IsDir() {
			parents[rel] = info
			if !skip {
				dirs[rel] = true
			}
		}
		if skip {
			if d.IsDir() && !pm.Exclusions() {
				return filepath.SkipDir
			}
			return nil
		}
		if err := dirs.writeParents(tw, dir, rel); err != nil {
			return err
		}
		return writeEntry(tw, path, rel, d)
	})
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return tw.Close()
}

// parentOf is the directory of a slash-separated relative name, "" for
// one at the top (whose parent matched nothing).
func parentOf(rel string) string {
	dir := filepath.ToSlash(filepath.Dir(rel))
	if dir == "." {
		return ""
	}
	return dir
}

// written is the set of directories in a tar so far.
type written map[string]bool

// writeParents writes the directories above rel that an exclusion left
// out (an entry kept by an exception below an excluded directory), so
// that every entry's parent is in the tar, as Docker sends it.
func (w written) writeParents(tw *tar.Writer, root, rel string) error {
	parent := parentOf(rel)
	if parent == "" || w[parent] {
		return nil
	}
	if err := w.writeParents(tw, root, parent); err != nil {
		return err
	}
	path := filepath.Join(root, filepath.FromSlash(parent))
	info, err := os.Lstat(path)
	if err != nil {
		return err
	}
	w[parent] = true
	return writeEntry(tw, path, parent, fs.FileInfoToDirEntry(info))
}

// writeEntry writes one file, directory or symlink; other kinds are left
// out.
func writeEntry(tw *tar.Writer, path, rel string, d fs.DirEntry) error {
	info, err := d.Info()
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: rel, Mode: tarMode(info.Mode()), ModTime: modTime, Format: tar.FormatPAX}
	switch {
	case info.Mode().IsRegular():
		hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
	case info.IsDir():
		hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
	case info.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(path)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	default:
		return nil
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	// A file that grew while packed would overrun its header: copy what
	// the header says, and a file that shrank fails the write.
	_, err = io.CopyN(tw, f, hdr.Size)
	return err
}

// tarMode is a file's permission bits with setuid, setgid and sticky in
// tar's (c_ISUID...) bits.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// Open hashes the file at path as it is and returns it as Packed; Close
// then closes it without removing it.
func Open(path string) (*Packed, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return &Packed{File: f, Size: n, SHA256: hex.EncodeToString(h.Sum(nil)), keep: true}, nil
}
