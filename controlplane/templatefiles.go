package controlplane

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/template/content"
)

// Files for COPY steps are uploaded as E2B's SDK does: GET
// /templates/{id}/files/{hash} says whether the team has them already,
// and when not, gives a URL the client PUTs the tar (plain or gzip) to.
// The URL is signed (HMAC-SHA256 of the template, hash and expiry, with a
// key every replica shares through the store) and expires: the client's
// HTTP library uploads to it without the API key. The hash is the
// client's name for the files (E2B's SDK hashes their paths and
// contents; roost's CLI uses the tar's sha256): the blob's digest is
// computed from what arrives.

// fileURLTTL is how long an upload URL works.
const fileURLTTL = time.Hour

// filesSecret names the URL signing key in the store.
const filesSecret = "template-files-url"

// loadFilesKey returns the key that signs upload URLs, made on first use.
func loadFilesKey(st store.Store) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := make([]byte, 32)
	_, _ = rand.Read(key) // crypto/rand.Read never fails
	key, err := st.EnsureSecret(ctx, filesSecret, key)
	if err != nil {
		return nil, fmt.Errorf("template files key: %w", err)
	}
	return key, nil
}

// checkFilesHash accepts a files hash: 64 lowercase hex digits (a
// SHA-256), which both E2B's SDK and roost's CLI send.
func checkFilesHash(hash string) error {
	if len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
		return fmt.Errorf("files hash %q: want 64 lowercase hex digits: %w", hash, errdefs.ErrInvalid)
	}
	return nil
}

// filesSignature signs an upload of hash for template until expires.
func (s *Server) filesSignature(templateID, hash string, expires int64) string {
	m := hmac.New(sha256.New, s.filesKey)
	fmt.Fprintf(m, "%s\n%s\n%d", templateID, hash, expires)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// baseURL is where clients reach this server: Config.PublicURL, else the
// request's own host.
func (s *Server) baseURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimSuffix(s.cfg.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// fileUploadJSON is E2B's TemplateBuildFileUpload.
type fileUploadJSON struct {
	Present bool   `json:"present"`
	URL     string `json:"url,omitempty"`
}

// templateFileLink is GET /templates/{id}/files/{hash}: 201 with present
// true when the team uploaded these files already, else with a signed
// upload URL.
func (s *Server) templateFileLink(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	ctx := r.Context()
	hash := r.PathValue("hash")
	if err := checkFilesHash(hash); err != nil {
		s.fail(w, r, "template files", err)
		return
	}
	blobs, err := s.contentStore()
	if err != nil {
		s.fail(w, r, "template files", err)
		return
	}
	t, err := s.ownTemplate(ctx, key.TeamID, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, "template files", err)
		return
	}
	f, err := s.store.TemplateFile(ctx, key.TeamID, hash)
	switch {
	case err == nil && blobs.Has(content.Digest(f.Digest)):
		if f.TemplateID != t.ID { // the files now go with this template too
			f.TemplateID = t.ID
			if err := s.store.PutTemplateFile(ctx, f); err != nil {
				s.fail(w, r, "template files", err)
				return
			}
		}
		writeJSON(w, http.StatusCreated, fileUploadJSON{Present: true})
		return
	case err != nil && !errors.Is(err, errdefs.ErrNotFound):
		s.fail(w, r, "template files", err)
		return
	}
	expires := time.Now().Add(fileURLTTL).Unix()
	q := url.Values{"expires": {strconv.FormatInt(expires, 10)}, "token": {s.filesSignature(t.ID, hash, expires)}}
	u := s.baseURL(r) + "/templates/" + url.PathEscape(t.ID) + "/files/" + hash + "?" + q.Encode()
	writeJSON(w, http.StatusCreated, fileUploadJSON{URL: u})
}

// checkUpload verifies an upload URL's signature (401 when wrong) and
// expiry (403 when past).
func (s *Server) checkUpload(templateID, hash string, q url.Values) error {
	expires, err := strconv.ParseInt(q.Get("expires"), 10, 64)
	want := s.filesSignature(templateID, hash, expires)
	if err != nil || !hmac.Equal([]byte(q.Get("token")), []byte(want)) {
		return fmt.Errorf("upload URL: missing or wrong token (ask GET /templates/{templateID}/files/{hash} for one): %w", errdefs.ErrUnauthenticated)
	}
	if time.Now().Unix() > expires {
		return fmt.Errorf("upload URL expired at %s: ask for a new one: %w", time.Unix(expires, 0).UTC().Format(time.RFC3339), errdefs.ErrPermissionDenied)
	}
	return nil
}

// receiveTemplateFile is PUT /templates/{id}/files/{hash} on a signed
// URL: the body becomes a blob (at most maxBlobBytes: 413 beyond) and the
// team's files of that hash.
func (s *Server) receiveTemplateFile(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, hash := r.PathValue("id"), r.PathValue("hash")
	err := checkFilesHash(hash)
	if err == nil {
		err = s.checkUpload(id, hash, r.URL.Query())
	}
	var blobs *content.Blobs
	if err == nil {
		blobs, err = s.contentStore()
	}
	var t store.Template
	if err == nil {
		t, err = s.store.GetTemplate(ctx, id)
	}
	if err != nil {
		s.fail(w, r, "upload template files", err)
		return
	}
	desc, err := blobs.Put(ctx, http.MaxBytesReader(w, r.Body, s.blobLimit), "")
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		errdefs.WriteHTTP(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("files larger than %d bytes", s.blobLimit))
		return
	}
	if err != nil {
		s.fail(w, r, "upload template files", err)
		return
	}
	f := store.TemplateFile{TeamID: t.TeamID, Hash: hash, TemplateID: t.ID, Digest: string(desc.Digest), SizeBytes: desc.Size}
	if err := s.store.PutTemplateFile(ctx, f); err != nil {
		s.fail(w, r, "upload template files", err)
		return
	}
	s.log.Info("template files uploaded", "template", t.ID, "hash", hash, "digest", desc.Digest, "bytes", desc.Size)
	w.WriteHeader(http.StatusCreated)
}

// teamFiles resolves a files hash to the digest of what the team
// uploaded under it (errdefs.ErrInvalid naming it when nothing was).
func (s *Server) teamFiles(ctx context.Context, teamID string) func(hash string) (content.Digest, error) {
	return func(hash string) (content.Digest, error) {
		f, err := s.store.TemplateFile(ctx, teamID, hash)
		if errors.Is(err, errdefs.ErrNotFound) {
			return "", fmt.Errorf("files %s were never uploaded by the team (GET /templates/{templateID}/files/%s first): %w", hash, hash, errdefs.ErrInvalid)
		}
		if err != nil {
			return "", err
		}
		return content.Digest(f.Digest), nil
	}
}
