package server

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"roost.dev/roost/envd/auth"
	"roost.dev/roost/envd/defaults"
	"roost.dev/roost/wire"
)

// Every request but /health makes the forwarder look for new servers,
// authorised or not: a proxy whose dial a sandbox port refused sends
// GET wire.EnvdScanPath without a token.
func TestRequestsKickPortScan(t *testing.T) {
	s, err := New(Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	token := "secret"
	s.defaults.Apply(defaults.Init{AccessToken: &token})
	for _, tc := range []struct {
		method, path, token string
		status              int
		kicks               bool
	}{
		{"GET", "/health", "", http.StatusNoContent, false},
		{"GET", wire.EnvdScanPath, "", http.StatusUnauthorized, true},
		{"GET", wire.EnvdScanPath, "secret", http.StatusOK, true},
		{"GET", "/envs", "secret", http.StatusOK, true},
	} {
		kicked := false
		s.kick = func() { kicked = true }
		req := httptest.NewRequest(tc.method, tc.path, nil)
		if tc.token != "" {
			req.Header.Set(auth.TokenHeader, tc.token)
		}
		rec := httptest.NewRecorder()
		s.handler.ServeHTTP(rec, req)
		if rec.Code != tc.status || kicked != tc.kicks {
			t.Errorf("%s %s (token %q): %d, kicked %v; want %d, %v", tc.method, tc.path, tc.token, rec.Code, kicked, tc.status, tc.kicks)
		}
	}
}
