package controlplane

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/wire"
)

// A signed /files URL of a secure sandbox (E2B's downloadUrl and
// uploadUrl) is fetched by any HTTP client, without the SDK's routing
// headers. In domain mode its host names the sandbox
// ({envd port}-{id}.{domain}), which the proxy matches; with
// E2B_SANDBOX_URL set the SDK builds it on that URL, and only the
// signature says which sandbox it is for. The signature is a hash over
// the sandbox's envd access token, so the sandbox whose token reproduces
// it is the one; envd then checks the signature itself, expiry included.

// serveSignedFile serves r when it is a signed /files request that names
// no sandbox, and reports whether it was one.
func (s *Server) serveSignedFile(w http.ResponseWriter, r *http.Request) bool {
	if r.URL == nil || r.URL.EscapedPath() != "/files" {
		return false
	}
	q := r.URL.Query()
	if !strings.HasPrefix(q.Get("signature"), "v1_") {
		return false
	}
	id, err := s.signedFileSandbox(r.Context(), r.Method, q)
	if err != nil {
		s.fail(w, r, "signed file", err)
		return true
	}
	r.Header.Set(wire.HeaderSandboxID, id)
	r.Header.Set(wire.HeaderSandboxPort, strconv.Itoa(wire.EnvdPort))
	s.proxy.ServeHTTP(w, r)
	return true
}

// signedFileSandbox finds the running or paused sandbox whose envd access
// token signs q's path, user and expiry for method's operation (read for
// GET and HEAD, write otherwise, as envd checks). It reads every such
// sandbox's token: a hash each, in pages of the store's largest.
func (s *Server) signedFileSandbox(ctx context.Context, method string, q url.Values) (string, error) {
	op := "write"
	if method == http.MethodGet || method == http.MethodHead {
		op = "read"
	}
	sig := []byte(strings.TrimRight(q.Get("signature"), "="))
	path, user, exp := q.Get("path"), q.Get("username"), q.Get("signature_expiration")
	f := store.SandboxFilter{States: []store.SandboxState{store.SandboxRunning, store.SandboxPaused}, Limit: store.MaxPageSize}
	for {
		page, next, err := s.store.ListSandboxes(ctx, f)
		if err != nil {
			return "", fmt.Errorf("list sandboxes: %w", err)
		}
		for _, sb := range page {
			if sb.EnvdAccessToken == "" {
				continue
			}
			want := wire.FileSignature(path, op, user, sb.EnvdAccessToken, exp)
			if subtle.ConstantTimeCompare(sig, []byte(want)) == 1 {
				return sb.ID, nil
			}
		}
		if next == "" {
			return "", fmt.Errorf("the signature of this /files URL is no sandbox's: %w", errdefs.ErrUnauthenticated)
		}
		f.NextToken = next
	}
}
