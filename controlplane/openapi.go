package controlplane

import (
	_ "embed"
	"net/http"
)

// openapiDoc describes every endpoint the control plane serves, the E2B
// ones and roost's /v1 ones. It is served as written: keep it in step
// with routes() (TestOpenAPIRoutes checks every route is in it).
//
//go:embed openapi.yaml
var openapiDoc []byte

// serveOpenAPI is GET /openapi.yaml. It needs no API key: the document
// holds no secrets, and clients fetch it to learn how to authenticate.
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/yaml")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openapiDoc)
}
