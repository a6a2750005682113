package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/wire"
)

// E2B's team, API-key and access-token routes. E2B authenticates them
// with a user's login; roost has teams, not users, so a team's API key or
// access token manages the team's credentials.

// maxKeyNameLen bounds a credential's name, in bytes.
const maxKeyNameLen = 128

// maskJSON is E2B's IdentifierMaskingDetails: what can be shown of a key.
type maskJSON struct {
	Prefix            string `json:"prefix"`
	ValueLength       int    `json:"valueLength"`
	MaskedValuePrefix string `json:"maskedValuePrefix"`
	MaskedValueSuffix string `json:"maskedValueSuffix"`
}

// maskOf splits a credential's stored prefix into its type prefix and the
// first characters of its value. A legacy roost_ key's length is not on
// record: its valueLength is 0.
func maskOf(k store.APIKey) maskJSON {
	for _, p := range []string{accessTokenPrefix, apiKeyPrefix} {
		if shown, ok := strings.CutPrefix(k.Prefix, p); ok {
			return maskJSON{Prefix: p, ValueLength: credentialHexLen, MaskedValuePrefix: shown, MaskedValueSuffix: k.MaskSuffix}
		}
	}
	shown, _ := strings.CutPrefix(k.Prefix, legacyKeyPrefix)
	return maskJSON{Prefix: legacyKeyPrefix, MaskedValuePrefix: shown, MaskedValueSuffix: k.MaskSuffix}
}

// apiKeyJSON is E2B's TeamAPIKey; key is set only in the answer to a
// create (CreatedTeamAPIKey), the one time a key is shown.
type apiKeyJSON struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Key       string     `json:"key,omitempty"`
	Mask      maskJSON   `json:"mask"`
	CreatedAt time.Time  `json:"createdAt"`
	CreatedBy *struct{}  `json:"createdBy"` // roost has no users: always null
	LastUsed  *time.Time `json:"lastUsed"`
}

func apiKeyView(k store.APIKey) apiKeyJSON {
	return apiKeyJSON{ID: k.ID, Name: k.Name, Mask: maskOf(k), CreatedAt: k.CreatedAt, LastUsed: k.LastUsedAt}
}

// accessTokenJSON is E2B's CreatedAccessToken.
type accessTokenJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Token     string    `json:"token"`
	Mask      maskJSON  `json:"mask"`
	CreatedAt time.Time `json:"createdAt"`
}

// teamJSON is E2B's Team.
type teamJSON struct {
	TeamID string `json:"teamID"`
	Name   string `json:"name"`
	// APIKey is the key the request came with; roost keeps keys hashed,
	// so a request with an access token gets "".
	APIKey    string `json:"apiKey"`
	IsDefault bool   `json:"isDefault"`
	// Quota is roost's: the team's limits and its use of them.
	Quota *quotaJSON `json:"quota"`
}

// listTeams is GET /teams: the caller's team, its only one, with its
// quota.
func (s *Server) listTeams(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	team, err := s.store.GetTeam(r.Context(), cred.TeamID)
	if err != nil {
		s.fail(w, r, "list teams", err)
		return
	}
	quota, err := s.quotaView(r.Context(), team.ID)
	if err != nil {
		s.fail(w, r, "list teams", err)
		return
	}
	key := ""
	if cred.Kind == store.KindAPIKey {
		key = r.Header.Get(wire.HeaderAPIKey)
	}
	writeJSON(w, http.StatusOK, []teamJSON{{TeamID: team.ID, Name: team.Name, APIKey: key, IsDefault: true, Quota: quota}})
}

// listAPIKeys is GET /api-keys: the team's API keys, oldest first.
func (s *Server) listAPIKeys(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	keys, err := s.store.ListAPIKeys(r.Context(), cred.TeamID, store.KindAPIKey)
	if err != nil {
		s.fail(w, r, "list api keys", err)
		return
	}
	out := make([]apiKeyJSON, 0, len(keys))
	for _, k := range keys {
		out = append(out, apiKeyView(k))
	}
	writeJSON(w, http.StatusOK, out)
}

// createAPIKey is POST /api-keys: a new key of the caller's team. Its
// plaintext is in the answer and nowhere else: the store keeps its hash.
func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	k, plain, err := s.newTeamCredential(r, cred, store.KindAPIKey)
	if err != nil {
		s.fail(w, r, "create api key", err)
		return
	}
	out := apiKeyView(k)
	out.Key = plain
	writeJSON(w, http.StatusCreated, out)
}

// createAccessToken is POST /access-tokens: a new access token of the
// caller's team, shown this once.
func (s *Server) createAccessToken(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	k, plain, err := s.newTeamCredential(r, cred, store.KindAccessToken)
	if err != nil {
		s.fail(w, r, "create access token", err)
		return
	}
	writeJSON(w, http.StatusCreated, accessTokenJSON{ID: k.ID, Name: k.Name, Token: plain, Mask: maskOf(k), CreatedAt: k.CreatedAt})
}

// newTeamCredential makes and stores a credential of kind for cred's
// team, named by the request body.
func (s *Server) newTeamCredential(r *http.Request, cred store.APIKey, kind store.KeyKind) (store.APIKey, string, error) {
	name, err := parseKeyName(r.Body)
	if err != nil {
		return store.APIKey{}, "", err
	}
	k, plain, err := s.storeCredential(r.Context(), cred.TeamID, kind, name)
	if err == nil {
		noteTarget(r, cred.TeamID, k.ID)
	}
	return k, plain, err
}

// storeCredential makes and stores a credential of kind for the team.
func (s *Server) storeCredential(ctx context.Context, teamID string, kind store.KeyKind, name string) (store.APIKey, string, error) {
	plain, prefix, suffix := newCredential(kind)
	k := store.APIKey{
		ID: credentialID(kind), TeamID: teamID, Kind: kind, Name: name, Hash: store.HashKey(plain),
		Prefix: prefix, MaskSuffix: suffix, CreatedAt: s.store.Now(),
	}
	if err := s.store.CreateAPIKey(ctx, k); err != nil {
		return store.APIKey{}, "", err
	}
	s.log.Info("credential created", "kind", kind, "team", teamID, "id", k.ID)
	return k, plain, nil
}

func credentialID(kind store.KeyKind) string {
	if kind == store.KindAccessToken {
		return "tok_" + randomString(10)
	}
	return "key_" + randomString(10)
}

// renameAPIKey is PATCH /api-keys/{id}: 200 with no body, as E2B answers.
func (s *Server) renameAPIKey(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	name, err := parseKeyName(r.Body)
	if err == nil {
		err = s.store.RenameAPIKey(r.Context(), cred.TeamID, store.KindAPIKey, r.PathValue("id"), name)
	}
	if err != nil {
		s.fail(w, r, "rename api key", notFoundAs(err, "api key", r.PathValue("id")))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// deleteAPIKey is DELETE /api-keys/{id}. Another team's key is not found;
// the key the request is authenticated with may delete itself.
func (s *Server) deleteAPIKey(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	s.deleteCredential(w, r, cred, store.KindAPIKey)
}

// deleteAccessToken is DELETE /access-tokens/{id}.
func (s *Server) deleteAccessToken(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	s.deleteCredential(w, r, cred, store.KindAccessToken)
}

func (s *Server) deleteCredential(w http.ResponseWriter, r *http.Request, cred store.APIKey, kind store.KeyKind) {
	id := r.PathValue("id")
	if err := s.store.DeleteAPIKey(r.Context(), cred.TeamID, kind, id); err != nil {
		s.fail(w, r, "delete "+string(kind), notFoundAs(err, strings.ReplaceAll(string(kind), "_", " "), id))
		return
	}
	s.log.Info("credential deleted", "kind", kind, "team", cred.TeamID, "id", id, "by", cred.ID)
	w.WriteHeader(http.StatusNoContent)
}

// notFoundAs words the store's not-found for a client.
func notFoundAs(err error, what, id string) error {
	if errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("%s %q not found: %w", what, id, errdefs.ErrNotFound)
	}
	return err
}

// parseKeyName decodes {"name": ...}: 1 to maxKeyNameLen bytes without
// control characters. Errors wrap errdefs.ErrInvalid.
func parseKeyName(body io.Reader) (string, error) {
	var req struct {
		Name string `json:"name"`
	}
	err := decodeJSON(body, &req)
	if errors.Is(err, io.EOF) {
		return "", fmt.Errorf("empty body: want {\"name\": ...}: %w", errdefs.ErrInvalid)
	}
	if err != nil {
		return "", err
	}
	if req.Name == "" || len(req.Name) > maxKeyNameLen {
		return "", fmt.Errorf("name is required, at most %d bytes: %w", maxKeyNameLen, errdefs.ErrInvalid)
	}
	if strings.ContainsFunc(req.Name, isControl) {
		return "", fmt.Errorf("name %q: no control characters or invalid UTF-8: %w", req.Name, errdefs.ErrInvalid)
	}
	return req.Name, nil
}

// isControl refuses a control character or invalid UTF-8 in a name.
func isControl(c rune) bool { return unicode.IsControl(c) || c == unicode.ReplacementChar }
