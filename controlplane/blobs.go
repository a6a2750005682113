package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/template/content"
)

// maxBlobBytes bounds one blob an agent or a client uploads (a layer, an
// uploaded build context): 10 GiB.
const maxBlobBytes = 10 << 30

// errNoBlobs answers template routes of a server configured without a
// content store.
var errNoBlobs = fmt.Errorf("this control plane has no template content store (Config.Blobs): %w", errdefs.ErrUnavailable)

// contentStore is the server's blobs, or errNoBlobs.
func (s *Server) contentStore() (*content.Blobs, error) {
	if s.cfg.Blobs == nil {
		return nil, errNoBlobs
	}
	return s.cfg.Blobs, nil
}

// hostBlob authenticates an agent's blob request (Bearer: its heartbeat
// token) and parses the path's digest.
func (s *Server) hostBlob(r *http.Request) (*content.Blobs, content.Digest, error) {
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if _, err := s.authHost(r.Context(), r.PathValue("id"), got); err != nil {
		return nil, "", err
	}
	blobs, err := s.contentStore()
	if err != nil {
		return nil, "", err
	}
	d, err := content.ParseDigest(r.PathValue("digest"))
	if err != nil {
		return nil, "", err
	}
	return blobs, d, nil
}

// serveHostBlob is GET and HEAD /v1/hosts/{id}/blobs/{digest}: an agent
// pulls a template's layer or manifest (resumable with Range).
func (s *Server) serveHostBlob(w http.ResponseWriter, r *http.Request) {
	blobs, d, err := s.hostBlob(r)
	if err != nil {
		s.fail(w, r, "serve blob", err)
		return
	}
	content.ServeBlob(w, r, blobs, d)
}

// receiveHostBlob is PUT /v1/hosts/{id}/blobs/{digest}: an agent pushes
// what a build made, verified against the digest.
func (s *Server) receiveHostBlob(w http.ResponseWriter, r *http.Request) {
	blobs, d, err := s.hostBlob(r)
	if err != nil {
		s.fail(w, r, "receive blob", err)
		return
	}
	content.ReceiveBlob(w, r, blobs, d, s.blobLimit)
}

// collectGarbage deletes, of the candidate blobs (those of a deleted
// template: its manifests, their layers, its uploaded files), the ones
// nothing kept names: no ready build's manifest or its layers, no
// uploaded file. It runs after the deletion committed, so a blob is never
// gone while a row still names it, and waits for snapshots being made
// (unnamedBlobs); a blob a concurrent build just reused may go, which
// that build then reports as missing. Errors are logged.
func (s *Server) collectGarbage(ctx context.Context, blobs *content.Blobs, candidates []content.Digest) {
	if len(candidates) == 0 {
		return
	}
	s.unnamedBlobs.Lock()
	defer s.unnamedBlobs.Unlock()
	keep, err := s.keptBlobs(ctx, blobs)
	if err != nil {
		s.log.Warn("template blobs kept: garbage collection skipped", "err", err)
		return
	}
	var freed int64
	for _, d := range candidates {
		if keep[d] {
			continue
		}
		size, _ := blobs.Stat(d)
		if err := blobs.Delete(d); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			s.log.Warn("delete template blob", "digest", d, "err", err)
			continue
		}
		freed += size
	}
	s.log.Info("template blobs collected", "candidates", len(candidates), "freed_bytes", freed)
}

// keptBlobs is every blob a row of the store names.
func (s *Server) keptBlobs(ctx context.Context, blobs *content.Blobs) (map[content.Digest]bool, error) {
	manifests, err := s.store.ReadyManifests(ctx)
	if err != nil {
		return nil, err
	}
	files, err := s.store.FileDigests(ctx)
	if err != nil {
		return nil, err
	}
	keep := map[content.Digest]bool{}
	for _, f := range files {
		keep[content.Digest(f)] = true
	}
	for _, m := range manifests {
		d := content.Digest(m)
		keep[d] = true
		man, err := blobs.Manifest(d)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue // nothing of it to keep
		}
		if err != nil {
			return nil, fmt.Errorf("manifest %s: %w", d, err)
		}
		for _, l := range man.Layers {
			keep[l.Digest] = true
		}
	}
	return keep, nil
}

// blobsOf lists a deleted template's blobs: its builds' manifests with
// their layers, and its files.
func blobsOf(blobs *content.Blobs, builds []store.TemplateBuild, files []store.TemplateFile) []content.Digest {
	var out []content.Digest
	for _, b := range builds {
		if b.Manifest == "" {
			continue
		}
		d := content.Digest(b.Manifest)
		out = append(out, d)
		if m, err := blobs.Manifest(d); err == nil {
			for _, l := range m.Layers {
				out = append(out, l.Digest)
			}
		}
	}
	for _, f := range files {
		out = append(out, content.Digest(f.Digest))
	}
	return out
}
