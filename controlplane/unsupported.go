package controlplane

import (
	"fmt"
	"net/http"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

// unsupportedRoutes registers E2B's routes for what roost does not have
// yet: they answer 501 naming the feature, never 404 "no route" and never
// a silent no-op.
func (s *Server) unsupportedRoutes(api func(pattern string, h apiHandler)) {
	api("PUT /sandboxes/{id}/network", s.unsupported("updating a sandbox's network"))
	// E2B's legacy template builds (its v1 Dockerfile builds): its SDKs
	// build through /v3/templates and /v2/.../builds, which roost serves.
	legacy := s.unsupported("E2B's legacy template builds (use POST /v3/templates, or `roost template build`)")
	api("POST /templates", legacy)
	api("POST /v2/templates", legacy)
	api("POST /templates/{id}", legacy)
	api("POST /templates/{id}/builds/{buildID}", legacy)
	secrets := s.unsupported("secrets")
	api("GET /secrets", secrets)
	api("POST /secrets", secrets)
	api("GET /secrets/{id}", secrets)
	api("POST /secrets/{id}", secrets)
	api("DELETE /secrets/{id}", secrets)
	nodes := s.unsupported("E2B's node API (roost's hosts are at GET /v1/hosts)")
	api("GET /nodes", nodes)
	api("GET /nodes/{id}", nodes)
	api("POST /nodes/{id}", nodes)
}

// unsupported answers 501 naming the feature.
func (s *Server) unsupported(feature string) apiHandler {
	err := fmt.Errorf("%s is not supported by roost yet: %w", feature, errdefs.ErrUnsupported)
	return func(w http.ResponseWriter, r *http.Request, _ store.APIKey) {
		s.fail(w, r, feature, err)
	}
}
