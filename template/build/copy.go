package build

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// copier writes the layer of one COPY or ADD: entries at their place
// under dest, with the step's owner and mode, and the directories dest
// needs that the tree lacks.
type copier struct {
	tw      *tar.Writer
	tree    string
	owner   owner
	mode    *uint32
	unpack  bool            // ADD: a tar archive among the sources is unpacked
	tmp     string          // where ADD spools a source file
	emitted map[string]bool // directories written so far
	now     time.Time
}

// copy writes the layer of COPY or ADD step into w.
func (s *stage) copy(ctx context.Context, step Step, tree string, w io.Writer) error {
	ownerSpec := s.user()
	if len(step.Args) > 2 && step.Args[2] != "" {
		ownerSpec = step.Args[2]
	}
	o, err := lookupOwner(tree, ownerSpec)
	if err != nil {
		return err
	}
	c := &copier{tw: tar.NewWriter(w), tree: tree, tmp: s.r.work, owner: o, unpack: step.Type == StepAdd, emitted: map[string]bool{}, now: time.Now()}
	if len(step.Args) > 3 && step.Args[3] != "" {
		m, err := parseMode(step.Args[3])
		if err != nil {
			return err
		}
		c.mode = &m
	}
	dest := s.resolve(step.Args[1])
	intoDir := strings.HasSuffix(step.Args[1], "/") || isDir(tree, dest)
	if err := c.copySources(ctx, s, step, dest, intoDir); err != nil {
		return err
	}
	return c.tw.Close()
}

// isDir reports whether the tree has a directory (or a symlink, which
// the apply follows no further) at p.
func isDir(tree, p string) bool {
	st, err := os.Lstat(filepath.Join(tree, p))
	return err == nil && st.IsDir()
}

// target is where a source entry goes: rel "" is the matched source
// itself, else a path below it (a directory's content).
func target(dest, matched string, isDirSrc, intoDir bool, rel string) string {
	switch {
	case rel != "":
		return path.Join(dest, rel)
	case isDirSrc:
		return dest
	case intoDir:
		return path.Join(dest, path.Base(matched))
	}
	return dest
}

// put writes hdr (its Name the absolute place in the tree) with body,
// after the directories it needs.
// copySources writes step's sources, from an earlier stage's tree or
// from its files blob, at dest.
func (c *copier) copySources(ctx context.Context, s *stage, step Step, dest string, intoDir bool) error {
	if step.FromStage == "" {
		return c.fromFiles(ctx, s.r.b.Blobs.Path(step.Files), step.Args[0], dest, intoDir)
	}
	src, err := s.r.stages[step.FromStage].workTree(ctx)
	if err != nil {
		return err
	}
	return c.fromTree(ctx, src, step.Args[0], dest, intoDir)
}

func (c *copier) put(hdr *tar.Header, body io.Reader, keepOwner bool) error {
	name := strings.Trim(path.Clean(hdr.Name), "/")
	if name == "" {
		return nil // the root itself
	}
	for _, dir := range missingDirs(c.tree, path.Dir("/"+name)) {
		if !c.emitted[dir] {
			c.emitted[dir] = true
			if err := c.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, Uid: c.owner.uid, Gid: c.owner.gid, ModTime: c.now}); err != nil {
				return err
			}
		}
	}
	hdr.Name = name
	if hdr.Typeflag == tar.TypeDir {
		hdr.Name += "/"
		c.emitted[name] = true
	}
	if !keepOwner {
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = c.owner.uid, c.owner.gid, "", ""
		if c.mode != nil && hdr.Typeflag != tar.TypeSymlink && hdr.Typeflag != tar.TypeLink {
			hdr.Mode = int64(*c.mode)
		}
	}
	if err := c.tw.WriteHeader(hdr); err != nil {
		return err
	}
	if body != nil && hdr.Typeflag == tar.TypeReg {
		if _, err := io.Copy(c.tw, body); err != nil {
			return err
		}
	}
	return nil
}

// selection is what a source path matches in a files tar.
type selection struct {
	src     string          // cleaned, relative to the context root; "" is all
	glob    bool            // src has wildcards
	matched map[string]bool // matched names → whether each is a directory
}

// match returns the matched source name an entry belongs to and its path
// below it ("" for the matched entry itself).
func (sel *selection) match(name string) (matched, rel string, ok bool) {
	if sel.src == "" {
		return "", name, true
	}
	if !sel.glob {
		switch {
		case name == sel.src:
			return name, "", true
		case strings.HasPrefix(name, sel.src+"/"):
			return sel.src, name[len(sel.src)+1:], true
		}
		return "", "", false
	}
	parts := strings.Split(name, "/")
	k := strings.Count(sel.src, "/") + 1
	if len(parts) < k {
		return "", "", false
	}
	head := strings.Join(parts[:k], "/")
	if ok, _ := path.Match(sel.src, head); !ok {
		return "", "", false
	}
	return head, strings.Join(parts[k:], "/"), true
}

// fromFiles copies src of the files tar at blob to dest.
func (c *copier) fromFiles(ctx context.Context, blob, src, dest string, intoDir bool) error {
	clean, err := contextPath(src)
	if err != nil {
		return err
	}
	sel := &selection{src: clean, glob: strings.ContainsAny(clean, "*?["), matched: map[string]bool{}}
	// First pass: what matches, and which matches are directories.
	err = readTar(ctx, blob, func(hdr *tar.Header, name string, _ io.Reader) error {
		if m, rel, ok := sel.match(name); ok {
			sel.matched[m] = sel.matched[m] || rel != "" || hdr.Typeflag == tar.TypeDir
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(sel.matched) == 0 {
		return notFound("%s: no such file or directory in the build context", src)
	}
	intoDir = intoDir || sel.glob && len(sel.matched) > 1
	links := map[string]string{} // source name → its name in the layer
	return readTar(ctx, blob, func(hdr *tar.Header, name string, body io.Reader) error {
		m, rel, ok := sel.match(name)
		if !ok {
			return nil
		}
		to := target(dest, m, sel.matched[m], intoDir, rel)
		if hdr.Typeflag == tar.TypeLink {
			l, err := cleanTarName(hdr.Linkname)
			if err != nil || links[l] == "" {
				return nil // a link to a file not copied: left out
			}
			hdr.Linkname = links[l]
		}
		if hdr.Typeflag == tar.TypeReg {
			links[name] = strings.TrimPrefix(to, "/")
			if c.unpack {
				return c.maybeUnpack(ctx, hdr, to, body)
			}
		}
		hdr.Name = to
		return c.put(hdr, body, false)
	})
}

// maybeUnpack writes a tar archive (plain or gzip) into dest's directory
// entries (ADD), or the file as COPY would. The file is spooled to find
// out which.
func (c *copier) maybeUnpack(ctx context.Context, hdr *tar.Header, to string, body io.Reader) error {
	f, err := os.CreateTemp(c.tmp, "add-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := io.Copy(f, body); err != nil {
		return err
	}
	tr, ok := openArchive(f)
	if !ok {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		hdr.Name = to
		return c.put(hdr, f, false)
	}
	dir := path.Dir(to)
	if isDir(c.tree, to) || c.emitted[strings.Trim(to, "/")] {
		dir = to
	}
	for {
		inner, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("ADD %s: %w", path.Base(to), invalidf("archive: %v", err))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.putUnpacked(inner, dir, tr); err != nil {
			return fmt.Errorf("ADD %s: %w", path.Base(to), err)
		}
	}
}

func (c *copier) putUnpacked(hdr *tar.Header, dir string, body io.Reader) error {
	name, err := cleanTarName(hdr.Name)
	if err != nil {
		return err
	}
	hdr.Name = path.Join(dir, name)
	if hdr.Typeflag == tar.TypeLink {
		l, err := cleanTarName(hdr.Linkname)
		if err != nil {
			return err
		}
		hdr.Linkname = strings.TrimPrefix(path.Join(dir, l), "/")
	}
	return c.put(hdr, body, true)
}

// openArchive reads f from its start as a tar archive, plain or gzip;
// false when it is neither.
func openArchive(f *os.File) (*tar.Reader, bool) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, false
	}
	br := bufio.NewReaderSize(f, 1024)
	var r = br
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, false
		}
		r = bufio.NewReaderSize(zr, 1024)
	}
	if !isTarHeader(r) {
		return nil, false
	}
	return tar.NewReader(r), true
}

func isTarHeader(br *bufio.Reader) bool {
	b, _ := br.Peek(512)
	return len(b) == 512 && bytes.HasPrefix(b[257:], []byte("ustar"))
}

// readTar calls fn for every entry of the tar (plain or gzip) at p, with
// its cleaned name.
func readTar(ctx context.Context, p string, fn func(hdr *tar.Header, name string, body io.Reader) error) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("files: %w", err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return invalidf("files: %v", err)
		}
		r = zr
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return invalidf("files: not a tar: %v", err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		name, err := cleanTarName(hdr.Name)
		if err != nil {
			return err
		}
		if name == "" {
			continue
		}
		if err := fn(hdr, name, tr); err != nil {
			return err
		}
	}
}

// cleanTarName is an entry's name relative to the archive's root; names
// that climb out of it are refused.
func cleanTarName(name string) (string, error) {
	n, err := contextPath(strings.TrimPrefix(name, "./"))
	if err != nil {
		return "", fmt.Errorf("tar entry %q: %w", name, err)
	}
	return n, nil
}

// fromTree copies src (absolute in the tree root; wildcards in its last
// component) to dest.
func (c *copier) fromTree(ctx context.Context, root, src, dest string, intoDir bool) error {
	srcs := []string{path.Clean("/" + src)}
	if dir, pattern := path.Split(srcs[0]); strings.ContainsAny(pattern, "*?[") {
		hostDir, err := resolveIn(root, dir, true)
		if err != nil {
			return err
		}
		entries, _ := os.ReadDir(hostDir)
		srcs = srcs[:0]
		for _, e := range entries {
			if ok, _ := path.Match(pattern, e.Name()); ok {
				srcs = append(srcs, path.Join(dir, e.Name()))
			}
		}
		intoDir = intoDir || len(srcs) > 1
	}
	if len(srcs) == 0 {
		return notFound("%s: no such file or directory in the stage", src)
	}
	for _, s := range srcs {
		host, err := resolveIn(root, s, true)
		if err != nil {
			return err
		}
		if err := c.walkTree(ctx, host, s, dest, intoDir); err != nil {
			return err
		}
	}
	return nil
}

func (c *copier) walkTree(ctx context.Context, host, src, dest string, intoDir bool) error {
	top, err := os.Lstat(host)
	if errors.Is(err, fs.ErrNotExist) {
		return notFound("%s: no such file or directory in the stage", src)
	}
	if err != nil {
		return err
	}
	return filepath.WalkDir(host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(host, p)
		if rel == "." {
			rel = ""
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		hdr, err := headerOf(p, rel, &st, 0)
		if err != nil || hdr == nil {
			return err
		}
		hdr.Name = target(dest, src, top.IsDir(), intoDir, filepath.ToSlash(rel))
		if hdr.Typeflag != tar.TypeReg {
			return c.put(hdr, nil, false)
		}
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		return c.put(hdr, f, false)
	})
}
