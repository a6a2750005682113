package template

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"roost.dev/roost/errdefs"
)

// Import makes template name from a root filesystem tarball, such as
// `docker export` output, plain or gzip-compressed (told apart by their
// magic bytes). The tar is streamed, never held in memory, into a build
// dir that is renamed into place once complete.
//
// Entries keep their mode, uid/gid (when running as root), times,
// symlinks and hard links; extended attributes are kept where the store's
// filesystem allows. Device nodes are skipped (a sandbox's /dev is made by
// its runtime). An entry that would land outside the tree (a ".."
// component, an absolute name, a path through a symlink, a hard link to
// outside) fails the import with errdefs.ErrInvalid, as does a damaged
// archive; nothing is written outside the build dir, and the partial
// tree is removed.
//
// The default user is "user" when the tree has /home/user and a passwd
// entry for it, "root" otherwise; the workdir is that user's home.
// Importing over an existing name returns errdefs.ErrConflict. ctx is
// checked between reads; closing tarball also ends an import blocked on it.
func (s *Store) Import(ctx context.Context, name string, tarball io.Reader) (Template, error) {
	if err := ValidName(name); err != nil {
		return Template{}, err
	}
	if _, err := s.read(name); err == nil {
		return Template{}, fmt.Errorf("template %q: %w", name, errdefs.ErrConflict)
	}
	unlock, err := s.lock(ctx, name, nil)
	if err != nil {
		return Template{}, err
	}
	defer unlock()
	log := s.log.With("template", name)
	log.Info("importing template")
	return s.create(ctx, name, func(ctx context.Context, build string) (Template, error) {
		rootfs := filepath.Join(build, rootfsDir)
		if err := os.Mkdir(rootfs, rootfsPerm); err != nil {
			return Template{}, fmt.Errorf("import template %q: %w", name, err)
		}
		src := &errReader{r: &ctxReader{ctx: ctx, r: tarball}}
		r, err := decompress(src)
		if err != nil {
			return Template{}, fmt.Errorf("import template %q: %w", name, err)
		}
		srcErr := func() error { return src.err }
		if err := extract(ctx, rootfs, r, srcErr, log); err != nil {
			return Template{}, fmt.Errorf("import template %q: %w", name, err)
		}
		return importDefaults(rootfs), nil
	})
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// decompress returns the tar stream inside r: r itself, or r un-gzipped.
// Other compressions are named in the error rather than misread as tar.
func decompress(src *errReader) (io.Reader, error) {
	br := bufio.NewReaderSize(src, 64*1024)
	magic, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("read tarball: %w", err)
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil && src.err != nil {
			return nil, fmt.Errorf("read tarball: %w", src.err)
		}
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", invalid(err))
		}
		return zr, nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return nil, fmt.Errorf("xz-compressed tarball: decompress it first (plain or gzip tar): %w", errdefs.ErrInvalid)
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return nil, fmt.Errorf("zstd-compressed tarball: decompress it first (plain or gzip tar): %w", errdefs.ErrInvalid)
	case bytes.HasPrefix(magic, []byte("BZh")):
		return nil, fmt.Errorf("bzip2-compressed tarball: decompress it first (plain or gzip tar): %w", errdefs.ErrInvalid)
	}
	return br, nil
}

// passwdEntry is one line of /etc/passwd.
type passwdEntry struct {
	uid, gid string
	home     string
}

// parsePasswd reads /etc/passwd lines; malformed ones are skipped.
func parsePasswd(data []byte) map[string]passwdEntry {
	users := map[string]passwdEntry{}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 7 || f[0] == "" || strings.HasPrefix(f[0], "#") {
			continue
		}
		if _, dup := users[f[0]]; !dup { // the first entry wins, as in getpwnam
			users[f[0]] = passwdEntry{uid: f[2], gid: f[3], home: f[5]}
		}
	}
	return users
}

// importDefaults picks an imported tree's default user and workdir.
func importDefaults(rootfs string) Template {
	t := Template{Source: SourceImport, DefaultUser: "root", Workdir: "/"}
	data, _ := readInTree(rootfs, "etc/passwd", 4<<20)
	users := parsePasswd(data)
	homeIn := func(home string) (string, bool) {
		if !path.IsAbs(home) {
			return "", false
		}
		home = path.Clean(home)
		return home, home == "/" || isDirInTree(rootfs, strings.TrimPrefix(home, "/"))
	}
	if u, ok := users["user"]; ok && isDirInTree(rootfs, "home/user") {
		t.DefaultUser, t.Workdir = "user", "/home/user"
		if home, ok := homeIn(u.home); ok {
			t.Workdir = home
		}
		return t
	}
	if u, ok := users["root"]; ok {
		if home, ok := homeIn(u.home); ok {
			t.Workdir = home
		}
	} else if isDirInTree(rootfs, "root") {
		t.Workdir = "/root"
	}
	return t
}
