package controlplane

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

// templateRoutes registers the template API: E2B's, roost's own
// (/v1/templates...) and the signed upload URL (no API key: its
// signature is the credential).
func (s *Server) templateRoutes(mux *http.ServeMux, api func(pattern string, h apiHandler)) {
	api("GET /templates", s.listE2BTemplates)
	api("GET /v2/templates", s.listE2BTemplates)
	api("POST /v3/templates", s.createTemplate)
	api("GET /templates/{id}", s.getE2BTemplate)
	api("DELETE /templates/{id}", s.deleteTemplate)
	api("PATCH /templates/{id}", s.updateTemplate)
	api("PATCH /v2/templates/{id}", s.updateTemplate)
	api("GET /templates/aliases/{alias}", s.templateByAlias)
	api("GET /templates/{id}/files/{hash}", s.templateFileLink)
	mux.HandleFunc("PUT /templates/{id}/files/{hash}", s.receiveTemplateFile)
	api("POST /v2/templates/{id}/builds/{buildID}", s.startE2BBuild)
	api("POST /v1/templates/{id}/builds/{buildID}", s.startSpecBuild)
	api("GET /templates/{id}/builds/{buildID}/status", s.buildStatus)
	api("GET /templates/{id}/builds/{buildID}/logs", s.buildLogs)
	api("POST /templates/tags", s.assignTags)
	api("DELETE /templates/tags", s.deleteTags)
	// GET /templates/{id}/tags would conflict with the alias lookup in
	// the mux (both match /templates/aliases/tags).
	api("GET /templates/{id}/{sub}", s.templateSubresource)
	api("GET /v1/templates", s.listTemplates)
}

// templateSubresource serves GET /templates/{id}/{sub}: E2B has only
// "tags" there; anything else is no route.
func (s *Server) templateSubresource(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	if r.PathValue("sub") != "tags" {
		errdefs.WriteHTTP(w, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path)
		return
	}
	s.listTags(w, r, key)
}

// templateTagJSON is E2B's TemplateTag.
type templateTagJSON struct {
	Tag       string    `json:"tag"`
	BuildID   string    `json:"buildID"`
	CreatedAt time.Time `json:"createdAt"`
}

// listTags is GET /templates/{id}/tags.
func (s *Server) listTags(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	t, err := s.visibleTemplate(r.Context(), key.TeamID, r.PathValue("id"))
	var tags []store.TemplateTag
	if err == nil {
		tags, err = s.store.Tags(r.Context(), t.ID)
	}
	if err != nil {
		s.fail(w, r, "list tags", err)
		return
	}
	out := make([]templateTagJSON, 0, len(tags))
	for _, tag := range tags {
		out = append(out, templateTagJSON{Tag: tag.Tag, BuildID: tag.BuildID, CreatedAt: tag.CreatedAt})
	}
	writeJSON(w, http.StatusOK, out)
}

// assignTagsRequest is E2B's AssignTemplateTagsRequest.
type assignTagsRequest struct {
	Target string   `json:"target"` // "name:tag": the build the tags go to
	Tags   []string `json:"tags"`
}

// checkTags validates tags of a request.
func checkTags(tags []string) error {
	if len(tags) == 0 {
		return fmt.Errorf("tags: at least one: %w", errdefs.ErrInvalid)
	}
	for _, t := range tags {
		if !validTemplate(t) {
			return fmt.Errorf("tag %q: 1-63 characters of [a-zA-Z0-9._-]: %w", t, errdefs.ErrInvalid)
		}
	}
	return nil
}

// assignTags is POST /templates/tags: the tags point at the build the
// target ("name:tag", default "default") points at. 201, E2B's
// AssignedTemplateTags.
func (s *Server) assignTags(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	ctx := r.Context()
	var req assignTagsRequest
	err := decodeJSON(r.Body, &req)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("empty body: %w", errdefs.ErrInvalid)
	}
	var name, tag string
	if err == nil {
		name, tag, err = splitTemplateRef(req.Target)
	}
	if err == nil {
		err = checkTags(req.Tags)
	}
	var t store.Template
	if err == nil {
		t, err = s.ownTemplate(ctx, key.TeamID, name)
	}
	var b store.TemplateBuild
	if err == nil {
		b, err = s.store.TaggedBuild(ctx, t.ID, cmp.Or(tag, defaultTag))
	}
	if err == nil {
		err = s.store.SetTags(ctx, t.ID, b.ID, req.Tags)
	}
	if err != nil {
		s.fail(w, r, "assign tags", err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"tags": req.Tags, "buildID": b.ID})
}

// deleteTagsRequest is E2B's DeleteTemplateTagsRequest.
type deleteTagsRequest struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

// deleteTags is DELETE /templates/tags: 204; a tag the template lacks is
// 404 and nothing is removed.
func (s *Server) deleteTags(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	var req deleteTagsRequest
	err := decodeJSON(r.Body, &req)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("empty body: %w", errdefs.ErrInvalid)
	}
	if err == nil {
		err = checkTags(req.Tags)
	}
	var t store.Template
	if err == nil {
		t, err = s.ownTemplate(r.Context(), key.TeamID, req.Name)
	}
	if err == nil {
		err = s.store.DeleteTags(r.Context(), t.ID, req.Tags)
	}
	if err != nil {
		s.fail(w, r, "delete tags", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
