package template

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

// SourceManifest is the Source of a tree made from a manifest whose
// config names none.
const SourceManifest = "manifest"

// treePrefix starts the names of trees made from manifests.
const treePrefix = "m-"

// TreeName is the name of manifest d's tree in a store: "m-" and the
// first 40 hex digits of d.
func TreeName(d content.Digest) string {
	h := d.Hex()
	if len(h) > 40 {
		h = h[:40]
	}
	return treePrefix + h
}

// IsTreeName reports whether name is that of a tree made from a manifest.
func IsTreeName(name string) bool { return strings.HasPrefix(name, treePrefix) }

// Materialize returns the tree of manifest m, whose digest is d, making
// it first if the store lacks it: its layers, all of which must be in
// blobs (errdefs.ErrNotFound names the first missing), are applied in
// order (see ApplyLayer) into a build dir renamed into place when
// complete, within the store's SizeBudget for them all. The template
// gets m's config; without a user, the one Import would pick. Concurrent
// calls for one digest, also from other processes, make the tree once; a
// tree present returns at once and is marked used (see Evict).
func (s *Store) Materialize(ctx context.Context, m content.Manifest, d content.Digest, blobs *content.Blobs) (Template, error) {
	name, err := s.checkManifest(m, d)
	if err != nil {
		return Template{}, err
	}
	if t, err := s.present(name, d); err == nil || !errors.Is(err, errdefs.ErrNotFound) {
		return t, err
	}
	for i, l := range m.Layers {
		if !blobs.Has(l.Digest) {
			return Template{}, fmt.Errorf("manifest %s: layer %d: blob %s: %w", d.Short(), i+1, l.Digest, errdefs.ErrNotFound)
		}
	}
	unlock, err := s.lock(ctx, name, nil)
	if err != nil {
		return Template{}, err
	}
	defer unlock()
	if t, err := s.present(name, d); err == nil || !errors.Is(err, errdefs.ErrNotFound) {
		return t, err
	}
	log := s.log.With("template", name, "manifest", d)
	start := time.Now()
	t, err := s.create(ctx, name, func(ctx context.Context, build string) (Template, error) {
		rootfs := filepath.Join(build, rootfsDir)
		if err := os.Mkdir(rootfs, rootfsPerm); err != nil {
			return Template{}, fmt.Errorf("materialize %s: %w", d.Short(), err)
		}
		budget := &sizeBudget{limit: s.sizeBudget()}
		for i, l := range m.Layers {
			if err := applyBlob(ctx, rootfs, blobs, l, budget, log); err != nil {
				return Template{}, fmt.Errorf("materialize %s: layer %d (%s): %w", d.Short(), i+1, l.Digest.Short(), err)
			}
		}
		return manifestTemplate(rootfs, m, d), nil
	})
	if err != nil {
		return Template{}, err
	}
	log.Info("template materialized", "layers", len(m.Layers), "duration", time.Since(start).Round(time.Millisecond))
	return t, nil
}

// checkManifest checks d is m's digest and returns its tree's name.
func (s *Store) checkManifest(m content.Manifest, d content.Digest) (string, error) {
	if _, err := content.ParseDigest(string(d)); err != nil {
		return "", err
	}
	if _, got := m.Encode(); got != d {
		return "", fmt.Errorf("manifest has digest %s, not %s: %w", got, d, errdefs.ErrInvalid)
	}
	return TreeName(d), nil
}

// present returns tree name, made from manifest d, marking it used.
func (s *Store) present(name string, d content.Digest) (Template, error) {
	t, err := s.read(name)
	if err != nil {
		return Template{}, err
	}
	if t.Manifest != d {
		return Template{}, fmt.Errorf("template %q is of manifest %s, not %s: %w", name, t.Manifest, d, errdefs.ErrConflict)
	}
	s.Touch(name)
	return t, nil
}

func applyBlob(ctx context.Context, rootfs string, blobs *content.Blobs, l content.Descriptor, budget *sizeBudget, log *slog.Logger) error {
	f, err := blobs.Open(l.Digest)
	if err != nil {
		return err
	}
	defer f.Close()
	return applyLayer(ctx, rootfs, f, budget, log)
}

// sizeBudget is SizeBudget, or its default.
func (s *Store) sizeBudget() int64 {
	if s.SizeBudget > 0 {
		return s.SizeBudget
	}
	return DefaultSizeBudget
}

// Adopt moves tree, the finished root filesystem of manifest m (digest
// d) on the store's filesystem, into the store as m's tree and returns
// its template (m's config, as Materialize). When the store has that
// tree already, it is returned and tree is left in place for the caller
// to remove. Adopting from another filesystem fails with
// errdefs.ErrInvalid, tree untouched.
func (s *Store) Adopt(ctx context.Context, tree string, m content.Manifest, d content.Digest) (Template, error) {
	name, err := s.checkManifest(m, d)
	if err != nil {
		return Template{}, err
	}
	if st, err := os.Lstat(tree); err != nil || !st.IsDir() {
		return Template{}, fmt.Errorf("adopt %s: not a directory: %w", tree, errdefs.ErrInvalid)
	}
	unlock, err := s.lock(ctx, name, nil)
	if err != nil {
		return Template{}, err
	}
	defer unlock()
	if t, err := s.present(name, d); err == nil || !errors.Is(err, errdefs.ErrNotFound) {
		return t, err
	}
	return s.create(ctx, name, func(ctx context.Context, build string) (Template, error) {
		rootfs := filepath.Join(build, rootfsDir)
		if err := os.Rename(tree, rootfs); err != nil {
			if errors.Is(err, unix.EXDEV) {
				return Template{}, fmt.Errorf("adopt %s: not on the template store's filesystem: %w", tree, errdefs.ErrInvalid)
			}
			return Template{}, fmt.Errorf("adopt %s: %w", tree, err)
		}
		return manifestTemplate(rootfs, m, d), nil
	})
}

// manifestTemplate is the record of manifest d's tree at rootfs.
func manifestTemplate(rootfs string, m content.Manifest, d content.Digest) Template {
	t := importDefaults(rootfs)
	c := m.Config
	if c.User != "" {
		t.DefaultUser, t.Workdir = treeUser(rootfs, c.User)
	}
	if c.Workdir != "" {
		t.Workdir = path.Clean("/" + c.Workdir)
	}
	t.Env, t.StartCmd, t.ReadyCmd = c.Env, c.StartCmd, c.ReadyCmd
	t.Manifest, t.Source = d, c.Source
	if t.Source == "" {
		t.Source = SourceManifest
	}
	return t
}

// treeUser resolves an image's user ("name", "uid", "name:group",
// "uid:gid") to a name in the tree's passwd, when it has one, and that
// user's home ("/" when it has none).
func treeUser(rootfs, user string) (name, home string) {
	name, _, _ = strings.Cut(user, ":")
	data, _ := readInTree(rootfs, "etc/passwd", 4<<20)
	users := parsePasswd(data)
	if _, err := strconv.Atoi(name); err == nil {
		best := "" // of several names of one uid, the first in sort order
		for n, u := range users {
			if u.uid == name && (best == "" || n < best) {
				best = n
			}
		}
		if best != "" {
			name = best
		}
	}
	home = "/"
	if u, ok := users[name]; ok && path.IsAbs(u.home) {
		home = path.Clean(u.home)
	}
	return name, home
}
