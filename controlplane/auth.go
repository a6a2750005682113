package controlplane

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/wire"
)

// Credential formats, E2B's: an API key is "e2b_" and an access token
// "sk_e2b_", each followed by 40 lowercase hex digits (160 random bits).
// Keys roost made before it used E2B's format start with "roost_" and
// keep working.
const (
	apiKeyPrefix      = "e2b_"
	accessTokenPrefix = "sk_e2b_"
	legacyKeyPrefix   = "roost_"
	credentialHexLen  = 40
	// maskShown is how many characters of a credential's random part the
	// store keeps in plaintext at each end, for humans to tell them apart.
	maskShown = 4
	// legacyMinLen and maxKeyLen bound a legacy key's length.
	legacyMinLen = len(legacyKeyPrefix) + 16
	maxKeyLen    = 256
)

// apiHandler serves an authenticated request; cred is the API key or
// access token it came with, and says its team.
type apiHandler func(w http.ResponseWriter, r *http.Request, cred store.APIKey)

// errInvalidKey answers a credential that is not one of the store's.
var errInvalidKey = fmt.Errorf("invalid API key: %w", errdefs.ErrUnauthenticated)

// newCredential returns a new credential of kind in E2B's format, and the
// prefix and suffix the store keeps to show it masked.
func newCredential(kind store.KeyKind) (plain, prefix, suffix string) {
	prefixOf := apiKeyPrefix
	if kind == store.KindAccessToken {
		prefixOf = accessTokenPrefix
	}
	random := randomHex(credentialHexLen / 2)
	return prefixOf + random, prefixOf + random[:maskShown], random[len(random)-maskShown:]
}

// CheckAPIKeyFormat says whether key is an API key in a format roost
// accepts: E2B's ("e2b_" and 40 lowercase hex digits) or roost's earlier
// ("roost_" and at least 16 letters, digits, '_' or '-'). Errors wrap
// errdefs.ErrUnauthenticated.
func CheckAPIKeyFormat(key string) error {
	return checkFormat(store.KindAPIKey, key)
}

func checkFormat(kind store.KeyKind, s string) error {
	switch {
	case kind == store.KindAccessToken && isE2BFormat(s, accessTokenPrefix):
		return nil
	case kind == store.KindAccessToken:
		return fmt.Errorf("malformed access token: want %q and %d lowercase hex digits: %w", accessTokenPrefix, credentialHexLen, errdefs.ErrUnauthenticated)
	case isE2BFormat(s, apiKeyPrefix), isLegacyKey(s):
		return nil
	default:
		return fmt.Errorf("malformed API key: want %q and %d lowercase hex digits: %w", apiKeyPrefix, credentialHexLen, errdefs.ErrUnauthenticated)
	}
}

func isE2BFormat(s, prefix string) bool {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok || len(rest) != credentialHexLen || strings.ToLower(rest) != rest {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil
}

func isLegacyKey(s string) bool {
	if !strings.HasPrefix(s, legacyKeyPrefix) || len(s) < legacyMinLen || len(s) > maxKeyLen {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// credentialOf reads the request's credential: X-API-Key, else an access
// token in "Authorization: Bearer".
func credentialOf(r *http.Request) (store.KeyKind, string, error) {
	if key := r.Header.Get(wire.HeaderAPIKey); key != "" {
		return store.KindAPIKey, key, nil
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && tok != "" {
		return store.KindAccessToken, strings.TrimSpace(tok), nil
	}
	return "", "", fmt.Errorf("missing %s header (or an access token in Authorization: Bearer): %w", wire.HeaderAPIKey, errdefs.ErrUnauthenticated)
}

// authenticate resolves the request's API key or access token to its
// team, or answers 401 (403 when X-Team-ID names another team). An
// operator token (X-Admin-Token) acts for the team X-Team-ID names.
func (s *Server) authenticate(h apiHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cred, err := s.credential(r)
		if err != nil {
			s.fail(w, r, "authenticate", err)
			return
		}
		noteActor(r, string(cred.Kind)+":"+cred.ID, cred.TeamID)
		s.touch(r.Context(), cred)
		h(w, r, cred)
	})
}

func (s *Server) credential(r *http.Request) (store.APIKey, error) {
	webSocketCredential(r)
	if adm := r.Header.Get(wire.HeaderAdminToken); adm != "" {
		return s.adminFor(r, adm)
	}
	kind, plain, err := credentialOf(r)
	if err != nil {
		return store.APIKey{}, err
	}
	if err := checkFormat(kind, plain); err != nil {
		return store.APIKey{}, err
	}
	cred, err := s.store.APIKeyByHash(r.Context(), store.HashKey(plain))
	if errors.Is(err, errdefs.ErrNotFound) || err == nil && cred.Kind != kind {
		return store.APIKey{}, errInvalidKey
	}
	if err != nil {
		return store.APIKey{}, err
	}
	if team := r.Header.Get(wire.HeaderTeamID); team != "" && team != cred.TeamID {
		return store.APIKey{}, fmt.Errorf("this credential does not act for team %q: %w", team, errdefs.ErrPermissionDenied)
	}
	return cred, nil
}

// webSocketCredential moves the credential a browser offers as
// WebSocket subprotocols (wire.WebSocketKeyPrefix and the others) into
// the headers every other client sends, for a WebSocket upgrade that
// carries none of those headers.
func webSocketCredential(r *http.Request) {
	h := r.Header
	if !strings.EqualFold(h.Get("Upgrade"), "websocket") || h.Get(wire.HeaderAPIKey) != "" || h.Get(wire.HeaderAdminToken) != "" || h.Get("Authorization") != "" {
		return
	}
	for _, field := range h.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(field, ",") {
			p = strings.TrimSpace(p)
			if v, ok := strings.CutPrefix(p, wire.WebSocketKeyPrefix); ok {
				h.Set(wire.HeaderAPIKey, v)
			} else if v, ok := strings.CutPrefix(p, wire.WebSocketAdminPrefix); ok {
				h.Set(wire.HeaderAdminToken, v)
			} else if v, ok := strings.CutPrefix(p, wire.WebSocketTeamPrefix); ok {
				h.Set(wire.HeaderTeamID, v)
			}
		}
	}
}

// keyTouchEvery is how stale a key's LastUsedAt may get: a write per
// request would make every API call a store write.
const keyTouchEvery = time.Minute

// touch records that k was used, at most once per keyTouchEvery.
func (s *Server) touch(ctx context.Context, k store.APIKey) {
	now := s.store.Now()
	if k.Kind == store.KindAdmin || k.LastUsedAt != nil && now.Sub(*k.LastUsedAt) < keyTouchEvery {
		return
	}
	if err := s.store.TouchAPIKey(ctx, k.ID, now); err != nil && ctx.Err() == nil {
		s.log.Warn("record api key use", "key", k.ID, "err", err)
	}
}
