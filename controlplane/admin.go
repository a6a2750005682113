package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/wire"
)

// adminTokenPrefix starts every operator token roost makes, followed by
// credentialHexLen lowercase hex digits.
const adminTokenPrefix = "roost_admin_"

// adminHandler serves a request made with an operator token.
type adminHandler func(w http.ResponseWriter, r *http.Request, adm store.AdminToken)

// CheckAdminTokenFormat says whether tok is an operator token in roost's
// format. Errors wrap errdefs.ErrUnauthenticated.
func CheckAdminTokenFormat(tok string) error {
	if !isE2BFormat(tok, adminTokenPrefix) {
		return fmt.Errorf("malformed admin token: want %q and %d lowercase hex digits: %w", adminTokenPrefix, credentialHexLen, errdefs.ErrUnauthenticated)
	}
	return nil
}

// CreateAdminToken makes an operator token named name and returns its
// plaintext, which is stored only hashed: show it once. `roost up` and
// `roost server` call it on the first start.
func (s *Server) CreateAdminToken(ctx context.Context, name string) (string, error) {
	random := randomHex(credentialHexLen / 2)
	plain := adminTokenPrefix + random
	if err := s.addAdminToken(ctx, name, plain); err != nil {
		return "", err
	}
	return plain, nil
}

// AddAdminToken makes plain, given by the operator ($ROOST_ADMIN_TOKEN or
// the data directory's file), an operator token; one the store knows
// already is left as it is.
func (s *Server) AddAdminToken(ctx context.Context, plain string) error {
	if err := CheckAdminTokenFormat(plain); err != nil {
		return err
	}
	if _, err := s.store.AdminTokenByHash(ctx, store.HashKey(plain)); err == nil {
		return nil
	}
	return s.addAdminToken(ctx, "operator", plain)
}

func (s *Server) addAdminToken(ctx context.Context, name, plain string) error {
	random := strings.TrimPrefix(plain, adminTokenPrefix)
	t := store.AdminToken{ID: "adm_" + randomString(10), Name: name, Hash: store.HashKey(plain),
		Prefix: adminTokenPrefix + random[:maskShown], MaskSuffix: random[len(random)-maskShown:]}
	if err := s.store.CreateAdminToken(ctx, t); err != nil {
		return fmt.Errorf("create admin token: %w", err)
	}
	return nil
}

// adminToken resolves an operator token's plaintext.
func (s *Server) adminToken(ctx context.Context, plain string) (store.AdminToken, error) {
	if err := CheckAdminTokenFormat(plain); err != nil {
		return store.AdminToken{}, err
	}
	t, err := s.store.AdminTokenByHash(ctx, store.HashKey(plain))
	if errors.Is(err, errdefs.ErrNotFound) {
		return store.AdminToken{}, fmt.Errorf("invalid admin token: %w", errdefs.ErrUnauthenticated)
	}
	return t, err
}

// adminFor resolves an operator token acting for the team X-Team-ID
// names, as a credential of that team (E2B's AdminTeamAuth).
func (s *Server) adminFor(r *http.Request, plain string) (store.APIKey, error) {
	adm, err := s.adminToken(r.Context(), plain)
	if err != nil {
		return store.APIKey{}, err
	}
	team := r.Header.Get(wire.HeaderTeamID)
	if team == "" {
		return store.APIKey{}, fmt.Errorf("an admin token acts for the team named in %s, which is missing: %w", wire.HeaderTeamID, errdefs.ErrInvalid)
	}
	if _, err := s.store.GetTeam(r.Context(), team); err != nil {
		return store.APIKey{}, notFoundAs(err, "team", team)
	}
	return store.APIKey{ID: adm.ID, TeamID: team, Kind: store.KindAdmin, Name: adm.Name}, nil
}

// authenticateOrAdmin serves h to a team's credential, as authenticate
// does, and to the operator's token without a team (h gets the token as
// a credential of KindAdmin with no TeamID): for routes that are not a
// team's.
func (s *Server) authenticateOrAdmin(h apiHandler) http.Handler {
	team := s.authenticate(h)
	admin := s.adminOnly(func(w http.ResponseWriter, r *http.Request, adm store.AdminToken) {
		h(w, r, store.APIKey{ID: adm.ID, Kind: store.KindAdmin, Name: adm.Name})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(wire.HeaderAdminToken) != "" && r.Header.Get(wire.HeaderTeamID) == "" {
			admin.ServeHTTP(w, r)
			return
		}
		team.ServeHTTP(w, r)
	})
}

// adminOnly serves h to requests with a valid operator token.
func (s *Server) adminOnly(h adminHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plain := r.Header.Get(wire.HeaderAdminToken)
		if plain == "" {
			s.fail(w, r, "authenticate admin", fmt.Errorf("missing %s header: this route is the operator's: %w", wire.HeaderAdminToken, errdefs.ErrUnauthenticated))
			return
		}
		adm, err := s.adminToken(r.Context(), plain)
		if err != nil {
			s.fail(w, r, "authenticate admin", err)
			return
		}
		noteActor(r, "admin:"+adm.ID, "")
		h(w, r, adm)
	})
}

// adminRoutes are the operator's: teams, their keys and quotas, and
// E2B's admin routes.
func (s *Server) adminRoutes(mux *http.ServeMux) {
	admin := func(pattern, action string, h adminHandler) {
		mux.Handle(pattern, s.audited(action, s.adminOnly(h)))
	}
	admin("POST /v1/teams", "team.create", s.createTeam)
	admin("GET /v1/teams", "", s.listAllTeams)
	admin("GET /v1/teams/{teamID}", "", s.getTeam)
	admin("DELETE /v1/teams/{teamID}", "team.delete", s.deleteTeam)
	admin("GET /v1/teams/{teamID}/quota", "", s.getTeamQuota)
	admin("PATCH /v1/teams/{teamID}/quota", "team.quota", s.patchTeamQuota)
	admin("POST /admin/teams/{teamID}/api-keys", "key.create", s.adminCreateKey)
	admin("DELETE /admin/teams/{teamID}/api-keys/{id}", "key.delete", s.adminDeleteKey)
	admin("POST /admin/teams/{teamID}/sandboxes/kill", "team.kill_sandboxes", s.adminKillSandboxes)
	admin("GET /admin/sandboxes/running-counts", "", s.runningCounts)
	admin("POST /admin/teams/{teamID}/builds/cancel", "team.cancel_builds", s.adminCancelBuilds)
	s.hostRoutes(admin)
}

// teamInfoJSON is one team as the operator sees it.
type teamInfoJSON struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"createdAt"`
	Quota     *quotaJSON `json:"quota,omitempty"`
	// APIKey is the team's first key, in the create's answer only.
	APIKey *apiKeyJSON `json:"apiKey,omitempty"`
}

// maxTeamNameLen bounds a team's name.
const maxTeamNameLen = 128

// createTeam is POST /v1/teams {"name", "quota"}: a team, its quota and a
// first API key, whose plaintext is in the answer only.
func (s *Server) createTeam(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	var req struct {
		Name  string           `json:"name"`
		Quota map[string]int64 `json:"quota"`
	}
	if err := decodeJSON(r.Body, &req); err != nil {
		s.fail(w, r, "create team", err)
		return
	}
	quota, err := parseQuotaBody(req.Quota)
	if err == nil && (req.Name == "" || len(req.Name) > maxTeamNameLen || strings.ContainsFunc(req.Name, isControl)) {
		err = fmt.Errorf("name is required: 1 to %d bytes, no control characters: %w", maxTeamNameLen, errdefs.ErrInvalid)
	}
	if err != nil {
		s.fail(w, r, "create team", err)
		return
	}
	ctx := r.Context()
	team := store.Team{ID: "team_" + randomString(10), Name: req.Name, CreatedAt: s.store.Now()}
	noteTarget(r, team.ID, team.ID)
	if err := s.store.CreateTeam(ctx, team); err != nil {
		s.fail(w, r, "create team", err)
		return
	}
	if len(quota) > 0 {
		if err := s.SetTeamQuota(ctx, team.ID, quota); err != nil {
			s.fail(w, r, "create team", err)
			return
		}
	}
	k, plain, err := s.storeCredential(ctx, team.ID, store.KindAPIKey, "default")
	if err != nil {
		s.fail(w, r, "create team", err)
		return
	}
	view, err := s.teamInfo(ctx, team)
	if err != nil {
		s.fail(w, r, "create team", err)
		return
	}
	key := apiKeyView(k)
	key.Key = plain
	view.APIKey = &key
	s.log.Info("team created", "team", team.ID, "name", team.Name)
	writeJSON(w, http.StatusCreated, view)
}

func (s *Server) teamInfo(ctx context.Context, t store.Team) (teamInfoJSON, error) {
	q, err := s.quotaView(ctx, t.ID)
	if err != nil {
		return teamInfoJSON{}, err
	}
	return teamInfoJSON{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt, Quota: q}, nil
}

// listAllTeams is GET /v1/teams: every team with its quota and use.
func (s *Server) listAllTeams(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	teams, err := s.store.ListTeams(r.Context())
	if err != nil {
		s.fail(w, r, "list teams", err)
		return
	}
	out := make([]teamInfoJSON, 0, len(teams))
	for _, t := range teams {
		v, err := s.teamInfo(r.Context(), t)
		if err != nil {
			s.fail(w, r, "list teams", err)
			return
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

// pathTeam loads the team the path names; an unknown one is 404.
func (s *Server) pathTeam(r *http.Request) (store.Team, error) {
	id := r.PathValue("teamID")
	t, err := s.store.GetTeam(r.Context(), id)
	if err != nil {
		return store.Team{}, notFoundAs(err, "team", id)
	}
	noteTarget(r, id, id)
	return t, nil
}

func (s *Server) getTeam(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	t, err := s.pathTeam(r)
	var v teamInfoJSON
	if err == nil {
		v, err = s.teamInfo(r.Context(), t)
	}
	if err != nil {
		s.fail(w, r, "get team", err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// deleteTeam is DELETE /v1/teams/{teamID}[?force=true]: the team, its
// keys, quotas, templates and webhooks. A team with sandboxes or volumes
// is 409 naming them; force kills its sandboxes first (volumes are
// deleted by their owner).
func (s *Server) deleteTeam(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	t, err := s.pathTeam(r)
	if err == nil && r.URL.Query().Get("force") == "true" {
		var res killResultJSON
		res, err = s.killTeamSandboxes(r.Context(), t.ID, "team deleted")
		if err == nil && res.FailedCount > 0 {
			err = fmt.Errorf("%d of the team's sandboxes could not be killed: %w", res.FailedCount, errdefs.ErrUnavailable)
		}
	}
	if err == nil {
		err = s.store.DeleteTeam(r.Context(), t.ID)
	}
	if err != nil {
		s.fail(w, r, "delete team", err)
		return
	}
	s.log.Info("team deleted", "team", t.ID)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) getTeamQuota(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	t, err := s.pathTeam(r)
	var q *quotaJSON
	if err == nil {
		q, err = s.quotaView(r.Context(), t.ID)
	}
	if err != nil {
		s.fail(w, r, "get team quota", err)
		return
	}
	writeJSON(w, http.StatusOK, q)
}

// patchTeamQuota is PATCH /v1/teams/{teamID}/quota {"limit": value, ...}:
// sets those of the team's own limits; a null value drops the team's own
// (the default applies again). It answers the quota now enforced.
func (s *Server) patchTeamQuota(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	var req map[string]*int64
	t, err := s.pathTeam(r)
	if err == nil {
		err = decodeJSON(r.Body, &req)
	}
	var q *quotaJSON
	if err == nil {
		err = s.changeTeamQuota(r.Context(), t.ID, req)
	}
	if err == nil {
		q, err = s.quotaView(r.Context(), t.ID)
	}
	if err != nil {
		s.fail(w, r, "set team quota", err)
		return
	}
	writeJSON(w, http.StatusOK, q)
}

// adminCreateKey is E2B's POST /admin/teams/{teamID}/api-keys.
func (s *Server) adminCreateKey(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	t, err := s.pathTeam(r)
	var name string
	if err == nil {
		name, err = parseKeyName(r.Body)
	}
	var k store.APIKey
	var plain string
	if err == nil {
		k, plain, err = s.storeCredential(r.Context(), t.ID, store.KindAPIKey, name)
	}
	if err != nil {
		s.fail(w, r, "create api key", err)
		return
	}
	noteTarget(r, t.ID, k.ID)
	out := apiKeyView(k)
	out.Key = plain
	writeJSON(w, http.StatusCreated, out)
}

// adminDeleteKey is E2B's DELETE /admin/teams/{teamID}/api-keys/{id}.
func (s *Server) adminDeleteKey(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	t, err := s.pathTeam(r)
	if err == nil {
		noteTarget(r, t.ID, r.PathValue("id"))
		err = notFoundAs(s.store.DeleteAPIKey(r.Context(), t.ID, store.KindAPIKey, r.PathValue("id")), "api key", r.PathValue("id"))
	}
	if err != nil {
		s.fail(w, r, "delete api key", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// killResultJSON is E2B's AdminSandboxKillResult.
type killResultJSON struct {
	KilledCount int `json:"killedCount"`
	FailedCount int `json:"failedCount"`
}

// adminKillSandboxes is E2B's POST /admin/teams/{teamID}/sandboxes/kill:
// every sandbox of the team, running, paused or lost.
func (s *Server) adminKillSandboxes(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	t, err := s.pathTeam(r)
	var res killResultJSON
	if err == nil {
		res, err = s.killTeamSandboxes(r.Context(), t.ID, "killed by the operator")
	}
	if err != nil {
		s.fail(w, r, "kill team sandboxes", err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) killTeamSandboxes(ctx context.Context, teamID, reason string) (killResultJSON, error) {
	var res killResultJSON
	var all []store.Sandbox
	err := s.eachPage(ctx, store.SandboxFilter{TeamID: teamID, States: []store.SandboxState{store.SandboxStarting,
		store.SandboxRunning, store.SandboxPaused, store.SandboxLost, store.SandboxError}}, func(page []store.Sandbox) {
		all = append(all, page...)
	})
	if err != nil {
		return res, err
	}
	for _, sb := range all {
		octx, cancel := opContext(ctx)
		err := s.destroy(octx, sb, reasonAdmin)
		cancel()
		if err != nil {
			s.log.Warn("operator kill failed", "sandbox", sb.ID, "team", teamID, "err", err)
			res.FailedCount++
			continue
		}
		res.KilledCount++
	}
	s.log.Info("team's sandboxes killed", "team", teamID, "killed", res.KilledCount, "failed", res.FailedCount, "reason", reason)
	return res, nil
}

// runningCounts is E2B's GET /admin/sandboxes/running-counts: running
// sandboxes by team; teams with none are left out.
func (s *Server) runningCounts(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	out := map[string]int{}
	err := s.eachPage(r.Context(), store.SandboxFilter{States: []store.SandboxState{store.SandboxRunning}}, func(page []store.Sandbox) {
		for _, sb := range page {
			out[sb.TeamID]++
		}
	})
	if err != nil {
		s.fail(w, r, "running counts", err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// adminCancelBuilds is E2B's POST /admin/teams/{teamID}/builds/cancel:
// every waiting or building build of the team's templates fails, and
// those this control plane runs are stopped.
func (s *Server) adminCancelBuilds(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
	t, err := s.pathTeam(r)
	var tpls []store.Template
	if err == nil {
		tpls, err = s.store.ListTemplates(r.Context(), t.ID)
	}
	if err != nil {
		s.fail(w, r, "cancel builds", err)
		return
	}
	var res struct {
		CancelledCount int `json:"cancelledCount"`
		FailedCount    int `json:"failedCount"`
	}
	reason := store.BuildReason{Message: "cancelled by the operator"}
	for _, tpl := range tpls {
		builds, err := s.store.ListBuilds(r.Context(), tpl.ID)
		if err != nil {
			s.fail(w, r, "cancel builds", err)
			return
		}
		for _, b := range builds {
			if b.Status != store.BuildWaiting && b.Status != store.BuildBuilding {
				continue
			}
			if _, err := s.store.FailBuild(r.Context(), b.ID, reason); err != nil {
				res.FailedCount++
				continue
			}
			s.builds.stop(b.ID)
			res.CancelledCount++
		}
	}
	writeJSON(w, http.StatusOK, res)
}
