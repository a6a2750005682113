package controlplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

// Per-team quotas. Each limit has a server-wide default (DefaultTeamQuota
// under Config.TeamQuota, which `roost server --team-quota` and `roost up
// --team-quota` set); a team's own limits in the store override it
// (SetTeamQuota). What each limit counts is documented with its name in
// the store package. Refusals are *store.QuotaError, errdefs.ErrExhausted:
// 429 with E2B's {"code":429,"message":...}, the message naming the
// limit. When a refusal happens:
//   - create: the timeout before anything is scheduled; the counted limits
//     in the store transaction that inserts the record, so creates racing
//     for the last slot cannot both get it;
//   - resume (connect, legacy resume, auto-resume): the timeout, and the
//     counted limits in the transaction that marks it running, before the
//     agent is asked;
//   - timeout changes (set timeout, connect, refresh): the timeout;
//   - explicit pause: the paused count. A pause on timeout is never
//     refused (the sandbox would have to be killed instead); the
//     retention sweep deletes the sandboxes paused longest ago down to
//     the limit, and those paused longer than paused-retention.

// DefaultTeamQuota is every team's quota unless the server or the team
// sets a limit: generous but finite. A sandbox that names no size gets
// 2 vCPUs, 512 MiB and 2 GiB of disk, so 100 of them fit every limit,
// with as many paused beside them; a host's own capacity bounds far less.
var DefaultTeamQuota = store.Quota{
	store.LimitSandboxes:       100,
	store.LimitVCPUs:           200,
	store.LimitMemoryMB:        200 << 10, // 200 GiB
	store.LimitDiskMB:          1 << 20,   // 1 TiB
	store.LimitTimeout:         int64(maxTimeout / time.Second),
	store.LimitPaused:          100,
	store.LimitPausedRetention: int64(30 * 24 * time.Hour / time.Second),
}

// What an agent gives a create that names no size (the CreateSandboxRequest
// contract in hostagent.proto): the quota reserves these while the sandbox
// starts, then counts what the agent reports.
const (
	agentDefaultVCPUs    = 2 // at most the host's CPUs
	agentDefaultMemoryMB = 512
	agentDefaultDiskMB   = 2048
)

// defaultRetentionInterval is how often paused sandboxes are checked
// against the paused limits.
const defaultRetentionInterval = 30 * time.Second

// quotaDefaults returns the server's defaults: DefaultTeamQuota under
// the configured limits, which must be valid.
func quotaDefaults(cfg store.Quota) (store.Quota, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("team quota defaults: %w", err)
	}
	if t, ok := cfg[store.LimitTimeout]; ok && (t < 1 || t > int64(maxTimeout/time.Second)) {
		return nil, fmt.Errorf("team quota defaults: timeout=%d: must be between 1 and %d seconds: %w",
			t, int64(maxTimeout/time.Second), errdefs.ErrInvalid)
	}
	return store.MergeQuota(DefaultTeamQuota, cfg), nil
}

// teamQuota is the team's effective quota: its own limits over the
// server's defaults.
func (s *Server) teamQuota(ctx context.Context, teamID string) (store.Quota, error) {
	own, err := s.store.TeamQuota(ctx, teamID)
	if err != nil {
		return nil, fmt.Errorf("quota of team %s: %w", teamID, err)
	}
	return store.MergeQuota(s.cfg.TeamQuota, own), nil
}

// checkTimeout refuses a timeout longer than the team's limit.
func (s *Server) checkTimeout(ctx context.Context, teamID string, d time.Duration) error {
	q, err := s.teamQuota(ctx, teamID)
	if err != nil {
		return err
	}
	return q.CheckTimeout(d)
}

// reserve fills in the sizes a create leaves to the agent, so that the
// starting record counts toward the team's limits at once.
func reserve(sb *store.Sandbox, p createParams, host store.Host) {
	sb.VCPUs, sb.MemoryMB, sb.DiskMB = int(p.VCPUs), int64(p.MemoryMB), int64(p.DiskMB)
	if sb.VCPUs == 0 {
		sb.VCPUs = agentDefaultVCPUs
		if host.CPUs > 0 {
			sb.VCPUs = max(1, min(sb.VCPUs, host.CPUs))
		}
	}
	if sb.MemoryMB == 0 {
		sb.MemoryMB = agentDefaultMemoryMB
	}
	if sb.DiskMB == 0 {
		sb.DiskMB = agentDefaultDiskMB
	}
}

// checkPauseRoom refuses an explicit pause when the team already keeps
// as many paused sandboxes as its quota allows.
func (s *Server) checkPauseRoom(ctx context.Context, teamID string) error {
	q, err := s.teamQuota(ctx, teamID)
	if err != nil {
		return err
	}
	limit, ok := q[store.LimitPaused]
	if !ok {
		return nil
	}
	u, err := s.store.TeamUsage(ctx, teamID)
	if err != nil {
		return err
	}
	if u.Paused+1 > limit {
		return &store.QuotaError{Limit: store.LimitPaused, Max: limit, Used: u.Paused, Asked: 1}
	}
	return nil
}

// SetTeamQuota replaces the team's own limits (the others take the
// server's defaults); an operator's command, not an API route. A lower
// limit stops new use; what the team has keeps running.
func (s *Server) SetTeamQuota(ctx context.Context, teamID string, q store.Quota) error {
	if t, ok := q[store.LimitTimeout]; ok && t > int64(maxTimeout/time.Second) {
		return fmt.Errorf("timeout=%d: at most %d seconds: %w", t, int64(maxTimeout/time.Second), errdefs.ErrInvalid)
	}
	return s.store.SetTeamQuota(ctx, teamID, q)
}

// parseQuotaBody reads limits given as JSON ({"sandboxes": 5, ...}).
func parseQuotaBody(m map[string]int64) (store.Quota, error) {
	q := store.Quota{}
	for k, v := range m {
		q[store.QuotaLimit(k)] = v
	}
	return q, q.Validate()
}

// changeTeamQuota sets the team's own limits that changes gives a value
// and drops those it gives null, leaving the others.
func (s *Server) changeTeamQuota(ctx context.Context, teamID string, changes map[string]*int64) error {
	own, err := s.store.TeamQuota(ctx, teamID)
	if err != nil {
		return err
	}
	own = store.MergeQuota(own, nil)
	for k, v := range changes {
		l := store.QuotaLimit(k)
		switch {
		case !l.Valid():
			return store.Quota{l: 0}.Validate()
		case v == nil:
			delete(own, l)
		default:
			own[l] = *v
		}
	}
	if err := own.Validate(); err != nil {
		return err
	}
	return s.SetTeamQuota(ctx, teamID, own)
}

// TeamQuota is a team's quota as an operator sees it.
type TeamQuota struct {
	Effective store.Quota // what is enforced
	Own       store.Quota // the limits set for the team itself
	Usage     store.Usage
}

// TeamQuota returns the team's limits and what its sandboxes hold.
func (s *Server) TeamQuota(ctx context.Context, teamID string) (TeamQuota, error) {
	own, err := s.store.TeamQuota(ctx, teamID)
	if err != nil {
		return TeamQuota{}, err
	}
	u, err := s.store.TeamUsage(ctx, teamID)
	if err != nil {
		return TeamQuota{}, err
	}
	return TeamQuota{Effective: store.MergeQuota(s.cfg.TeamQuota, own), Own: own, Usage: u}, nil
}

// quotaJSON is a team's quota in GET /teams: every limit enforced, and
// the use of each counted one.
type quotaJSON struct {
	Limits map[store.QuotaLimit]int64 `json:"limits"`
	Usage  map[store.QuotaLimit]int64 `json:"usage"`
	// Own are the limits set for the team itself; the others are the
	// server's defaults.
	Own map[store.QuotaLimit]int64 `json:"own"`
	// PausedDiskBytes is the disk the team's paused sandboxes hold on
	// their hosts (see pausedDisk); null when a host could not be asked.
	PausedDiskBytes *int64 `json:"pausedDiskBytes"`
}

func (s *Server) quotaView(ctx context.Context, teamID string) (*quotaJSON, error) {
	tq, err := s.TeamQuota(ctx, teamID)
	if err != nil {
		return nil, err
	}
	out := &quotaJSON{Limits: maps.Clone(tq.Effective), Usage: map[store.QuotaLimit]int64{}, Own: store.MergeQuota(tq.Own, nil),
		PausedDiskBytes: s.pausedDisk(ctx, teamID)}
	for _, l := range store.Limits {
		if v, ok := tq.Usage.Of(l); ok {
			out.Usage[l] = v
		}
	}
	return out, nil
}

// enforceRetention deletes the paused sandboxes each team keeps beyond
// its limits: those paused longer than paused-retention, and, beyond the
// paused count, those paused longest ago. Each is first claimed in the
// store (still paused: a resume a moment ago wins), then destroyed.
func (s *Server) enforceRetention(ctx context.Context) {
	byTeam := map[string][]store.Sandbox{}
	err := s.eachPage(ctx, store.SandboxFilter{States: []store.SandboxState{store.SandboxPaused}}, func(page []store.Sandbox) {
		for _, sb := range page {
			byTeam[sb.TeamID] = append(byTeam[sb.TeamID], sb)
		}
	})
	if err != nil {
		s.log.Warn("retention: list paused sandboxes failed", "err", err)
		return
	}
	now := s.store.Now()
	for _, team := range slices.Sorted(maps.Keys(byTeam)) {
		if ctx.Err() != nil {
			return
		}
		q, err := s.teamQuota(ctx, team)
		if err != nil {
			s.log.Warn("retention: read team quota failed", "team", team, "err", err)
			continue
		}
		for _, d := range overRetention(byTeam[team], q, now) {
			if err := s.retire(ctx, d.sb, d.reason); err != nil && !errors.Is(err, errSkip) {
				s.log.Warn("retention: delete paused sandbox failed", "sandbox", d.sb.ID, "err", err)
			}
		}
	}
}

// retirement is a paused sandbox to delete and why.
type retirement struct {
	sb     store.Sandbox
	reason string
}

// overRetention picks, of one team's paused sandboxes, those its quota
// no longer keeps.
func overRetention(paused []store.Sandbox, q store.Quota, now time.Time) []retirement {
	since := func(sb store.Sandbox) time.Time {
		if sb.PausedAt.IsZero() { // paused before PausedAt was recorded
			return sb.UpdatedAt
		}
		return sb.PausedAt
	}
	// Most recently paused first: the count keeps those.
	slices.SortFunc(paused, func(a, b store.Sandbox) int {
		return cmp.Or(since(b).Compare(since(a)), cmp.Compare(a.ID, b.ID))
	})
	keep, limitCount := q[store.LimitPaused]
	ret, limitAge := q[store.LimitPausedRetention]
	var out []retirement
	for i, sb := range paused {
		switch {
		case limitAge && now.Sub(since(sb)) > time.Duration(ret)*time.Second:
			out = append(out, retirement{sb, fmt.Sprintf("paused longer than the team's paused-retention of %d s", ret)})
		case limitCount && int64(i) >= keep:
			out = append(out, retirement{sb, fmt.Sprintf("beyond the team's paused quota of %d", keep)})
		}
	}
	return out
}

// retire claims a paused sandbox (paused → stopped) and destroys it.
func (s *Server) retire(ctx context.Context, sb store.Sandbox, reason string) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	_, err := s.store.UpdateSandbox(ctx, sb.ID, func(cur *store.Sandbox) error {
		if cur.State != store.SandboxPaused || !cur.PausedAt.Equal(sb.PausedAt) {
			return errSkip
		}
		cur.State = store.SandboxStopped
		return nil
	})
	if err != nil {
		return fmt.Errorf("claim paused sandbox: %w", err)
	}
	if err := s.destroy(ctx, sb, reasonRetention); err != nil { // sb: as it was, paused
		return err
	}
	s.log.Info("paused sandbox deleted", "sandbox", sb.ID, "team", sb.TeamID, "reason", reason)
	return nil
}
