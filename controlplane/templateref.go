package controlplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/template/content"
)

// errNotContent says a template name is no content template the team may
// use: it names a host's own tree, if any.
var errNotContent = errors.New("not a content template")

// maxManifestBytes bounds a manifest read from the content store.
const maxManifestBytes = 4 << 20

// contentRef is one ready build of a content template, with its manifest.
type contentRef struct {
	Template store.Template
	Build    store.TemplateBuild
	Digest   content.Digest
	Manifest []byte // its canonical encoding, as the blob holds it
}

// resolveContent finds what "name[:tag]" (or a template ID) names for the
// team: the build its tag (default "default") points at, of a content
// template the team may use. errNotContent when the store has no such
// template and no tag was asked for (the name may be a host's tree); a
// template without a ready build is errdefs.ErrInvalid when a build is
// under way ("is still building"), else errdefs.ErrNotFound.
func (s *Server) resolveContent(ctx context.Context, teamID, ref string) (contentRef, error) {
	name, tag, err := splitTemplateRef(ref)
	if err != nil {
		return contentRef{}, err
	}
	t, err := s.visibleTemplate(ctx, teamID, name)
	switch {
	case errors.Is(err, errdefs.ErrNotFound) && tag == "":
		return contentRef{}, errNotContent
	case err != nil:
		return contentRef{}, err
	}
	tag = cmp.Or(tag, defaultTag)
	b, err := s.store.TaggedBuild(ctx, t.ID, tag)
	if errors.Is(err, errdefs.ErrNotFound) {
		return contentRef{}, s.notReady(ctx, t, tag)
	}
	if err != nil {
		return contentRef{}, err
	}
	blobs, err := s.contentStore()
	if err != nil {
		return contentRef{}, err
	}
	d := content.Digest(b.Manifest)
	raw, err := readManifest(blobs, d)
	if err != nil {
		return contentRef{}, fmt.Errorf("template %q build %s: %w", ref, b.ID, err)
	}
	return contentRef{Template: t, Build: b, Digest: d, Manifest: raw}, nil
}

// notReady explains why a template's tag has no build.
func (s *Server) notReady(ctx context.Context, t store.Template, tag string) error {
	builds, err := s.store.ListBuilds(ctx, t.ID)
	if err != nil {
		return err
	}
	if i := slices.IndexFunc(builds, func(b store.TemplateBuild) bool {
		return b.Status == store.BuildBuilding || b.Status == store.BuildWaiting
	}); i >= 0 {
		return fmt.Errorf("template %q is still building (build %s is %s): %w", t.Name, builds[i].ID, builds[i].Status, errdefs.ErrInvalid)
	}
	return fmt.Errorf("template %q has no ready build tagged %q: %w", t.Name, tag, errdefs.ErrNotFound)
}

// readManifest reads and verifies manifest d from blobs; a missing one
// is errdefs.ErrUnavailable (the store names content the blobs lack).
func readManifest(blobs *content.Blobs, d content.Digest) ([]byte, error) {
	f, err := blobs.Open(d)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("manifest %s is missing from the content store: %w", d, errdefs.ErrUnavailable)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxManifestBytes))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", d, err)
	}
	if _, err := content.DecodeManifestDigest(raw, d); err != nil {
		return nil, fmt.Errorf("manifest %s in the content store: %v: %w", d, err, errdefs.ErrUnavailable)
	}
	return raw, nil
}
