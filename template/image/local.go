package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

// FromArchive imports the image in a `docker save` archive at path (of
// one image) as Pull does.
func FromArchive(ctx context.Context, path string, blobs *content.Blobs, progress func(string)) (content.Manifest, content.Digest, error) {
	if err := checkExists(path, false); err != nil {
		return content.Manifest{}, "", err
	}
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("docker archive %s: %w", path, invalid(err))
	}
	m, d, err := importImage(ctx, img, "archive "+filepath.Base(path), blobs, progress)
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("docker archive %s: %w", path, localErr(err))
	}
	return m, d, nil
}

// FromLayout imports the image in the OCI image layout directory dir as
// Pull does: of an index, linux on the host's architecture.
func FromLayout(ctx context.Context, dir string, blobs *content.Blobs, progress func(string)) (content.Manifest, content.Digest, error) {
	if err := checkExists(dir, true); err != nil {
		return content.Manifest{}, "", err
	}
	if err := checkPlainTree(dir); err != nil {
		return content.Manifest{}, "", fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("OCI layout %s: %w", dir, invalid(err))
	}
	img, err := pickImage(idx, Platform())
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	m, d, err := importImage(ctx, img, "layout "+filepath.Base(dir), blobs, progress)
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("OCI layout %s: %w", dir, localErr(err))
	}
	return m, d, nil
}

// pickImage finds in idx (and the indexes it holds) the image for p; an
// image without a platform is taken when it is the only one.
func pickImage(idx v1.ImageIndex, p v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, invalid(err)
	}
	var unnamed []v1.Hash // images without a platform
	for _, desc := range im.Manifests {
		switch {
		case desc.MediaType.IsIndex():
			child, err := idx.ImageIndex(desc.Digest)
			if err != nil {
				return nil, invalid(err)
			}
			if img, err := pickImage(child, p); err == nil {
				return img, nil
			}
		case desc.MediaType.IsImage() && desc.Platform == nil:
			unnamed = append(unnamed, desc.Digest)
		case desc.MediaType.IsImage() && desc.Platform.OS == p.OS && desc.Platform.Architecture == p.Architecture:
			return idx.Image(desc.Digest)
		}
	}
	if len(unnamed) == 1 {
		return idx.Image(unnamed[0])
	}
	return nil, fmt.Errorf("no image for %s/%s: %w", p.OS, p.Architecture, errdefs.ErrNotFound)
}

// checkPlainTree refuses a layout holding anything but directories and
// regular files: it may come from an upload, and a blob that is a
// symlink would be read wherever it points (/dev/zero, a host file).
func checkPlainTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file or directory: %w", p, errdefs.ErrInvalid)
		}
		return nil
	})
}

func checkExists(path string, dir bool) error {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", path, errdefs.ErrNotFound)
	}
	if err != nil {
		return err
	}
	if st.IsDir() != dir {
		if dir {
			return fmt.Errorf("%s: not a directory: %w", path, errdefs.ErrInvalid)
		}
		return fmt.Errorf("%s: a directory, want an archive: %w", path, errdefs.ErrInvalid)
	}
	return nil
}

// localErr marks an error reading a local image as the image's fault,
// unless it already has a category.
func localErr(err error) error {
	for _, cat := range []error{errdefs.ErrInvalid, errdefs.ErrNotFound, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, cat) {
			return err
		}
	}
	return invalid(err)
}
