package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"roost.dev/roost/errdefs"
)

// sqlStore implements Store on SQLite or PostgreSQL. Query texts are
// shared; d holds the differences.
type sqlStore struct {
	w     *sql.DB // writes and read-modify-write transactions
	r     *sql.DB // plain reads; the same pool as w on PostgreSQL
	d     dialect
	log   *slog.Logger
	bus   noticeBus
	clock *dbClock
}

var _ Store = (*sqlStore)(nil)

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *sqlStore) Close() error {
	err := s.w.Close()
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	return err
}

// nanos is how a time is stored: UTC nanoseconds since the epoch, NULL for
// the zero time. Integers sort and compare the same on both databases,
// which RFC 3339 text with varying fractional digits would not.
func nanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

// fromNanos reverses nanos.
func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// orNow returns t, or the current time when t is zero.
func (s *sqlStore) orNow(t time.Time) time.Time {
	if t.IsZero() {
		return s.clock.Now()
	}
	return t
}

// classify turns a constraint violation into a category; what names the
// object for the message.
func (s *sqlStore) classify(err error, what string) error {
	switch s.d.constraint(err) {
	case "unique":
		return fmt.Errorf("%s: %w", what, errdefs.ErrConflict)
	case "foreign_key":
		return fmt.Errorf("%s: referenced team: %w", what, errdefs.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// one checks that an UPDATE or DELETE touched a row.
func one(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, errdefs.ErrNotFound)
	}
	return nil
}

// notFound maps sql.ErrNoRows to errdefs.ErrNotFound.
func notFound(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", what, errdefs.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Teams and API keys.

func (s *sqlStore) CreateTeam(ctx context.Context, t Team) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)`,
		t.ID, t.Name, s.orNow(t.CreatedAt).UnixNano())
	if err != nil {
		return s.classify(err, "create team "+t.ID)
	}
	return nil
}

func (s *sqlStore) GetTeam(ctx context.Context, id string) (Team, error) {
	var t Team
	var created sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT id, name, created_at FROM teams WHERE id = $1`, id).
		Scan(&t.ID, &t.Name, &created)
	if err != nil {
		return Team{}, notFound(err, "get team "+id)
	}
	t.CreatedAt = fromNanos(created)
	return t, nil
}

const apiKeyColumns = `id, team_id, kind, name, hash, prefix, mask_suffix, created_at, last_used_at`

func scanAPIKey(row interface{ Scan(...any) error }) (APIKey, error) {
	var k APIKey
	var created, used sql.NullInt64
	if err := row.Scan(&k.ID, &k.TeamID, &k.Kind, &k.Name, &k.Hash, &k.Prefix, &k.MaskSuffix, &created, &used); err != nil {
		return APIKey{}, err
	}
	k.CreatedAt = fromNanos(created)
	if used.Valid {
		t := fromNanos(used)
		k.LastUsedAt = &t
	}
	return k, nil
}

func (s *sqlStore) CreateAPIKey(ctx context.Context, k APIKey) error {
	if len(k.Hash) == 0 {
		return fmt.Errorf("create api key %s: empty hash: %w", k.ID, errdefs.ErrInvalid)
	}
	switch k.Kind {
	case "":
		k.Kind = KindAPIKey
	case KindAPIKey, KindAccessToken:
	default:
		return fmt.Errorf("create api key %s: unknown kind %q: %w", k.ID, k.Kind, errdefs.ErrInvalid)
	}
	var used any
	if k.LastUsedAt != nil {
		used = nanos(*k.LastUsedAt)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO api_keys (`+apiKeyColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		k.ID, k.TeamID, k.Kind, k.Name, k.Hash, k.Prefix, k.MaskSuffix, s.orNow(k.CreatedAt).UnixNano(), used)
	if err != nil {
		return s.classify(err, "create api key "+k.ID)
	}
	return nil
}

func (s *sqlStore) APIKeyByHash(ctx context.Context, hash []byte) (APIKey, error) {
	k, err := scanAPIKey(s.r.QueryRowContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE hash = $1`, hash))
	if err != nil {
		return APIKey{}, notFound(err, "api key by hash")
	}
	return k, nil
}

func (s *sqlStore) ListAPIKeys(ctx context.Context, teamID string, kind KeyKind) ([]APIKey, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE team_id = $1 AND kind = $2 ORDER BY created_at, id`, teamID, kind)
	if err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	defer rows.Close()
	var keys []APIKey
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, fmt.Errorf("list api keys: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return keys, nil
}

func (s *sqlStore) RenameAPIKey(ctx context.Context, teamID string, kind KeyKind, id, name string) error {
	res, err := s.w.ExecContext(ctx, `UPDATE api_keys SET name = $1 WHERE team_id = $2 AND kind = $3 AND id = $4`, name, teamID, kind, id)
	return one(res, err, "rename "+string(kind)+" "+id)
}

func (s *sqlStore) DeleteAPIKey(ctx context.Context, teamID string, kind KeyKind, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM api_keys WHERE team_id = $1 AND kind = $2 AND id = $3`, teamID, kind, id)
	return one(res, err, "delete "+string(kind)+" "+id)
}

func (s *sqlStore) TouchAPIKey(ctx context.Context, id string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE api_keys SET last_used_at = $1 WHERE id = $2`, s.orNow(at).UnixNano(), id)
	return one(res, err, "touch api key "+id)
}

// Registration tokens.

func (s *sqlStore) CreateRegistrationToken(ctx context.Context, hash []byte, expires time.Time) error {
	if len(hash) == 0 || expires.IsZero() {
		return fmt.Errorf("create registration token: empty hash or expiry: %w", errdefs.ErrInvalid)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO registration_tokens (hash, expires_at) VALUES ($1, $2)`,
		hash, expires.UnixNano())
	if err != nil {
		return s.classify(err, "create registration token")
	}
	return nil
}

func (s *sqlStore) ConsumeRegistrationToken(ctx context.Context, hash []byte, now time.Time) error {
	// One conditional UPDATE: the database decides which racer wins.
	n := s.orNow(now).UnixNano()
	res, err := s.w.ExecContext(ctx, `UPDATE registration_tokens SET used_at = $1
		WHERE hash = $2 AND used_at IS NULL AND expires_at > $3`, n, hash, n)
	return one(res, err, "consume registration token")
}

// Hosts.

const hostColumns = `id, name, url, token_hash, runtime, capabilities, cpus, memory_mb, max_sandboxes,
	state, registered_at, last_heartbeat, used_sandboxes, used_vcpus, used_memory_mb, volume_dir_id`

// hostSelect is what scanHost reads: hostColumns and the operator's mark.
const hostSelect = hostColumns + `, cordoned`

func scanHost(row interface{ Scan(...any) error }) (Host, error) {
	var h Host
	var caps sql.NullString
	var registered, heartbeat sql.NullInt64
	err := row.Scan(&h.ID, &h.Name, &h.URL, &h.TokenHash, &h.Runtime, &caps, &h.CPUs, &h.MemoryMB, &h.MaxSandboxes,
		&h.State, &registered, &heartbeat, &h.Usage.Sandboxes, &h.Usage.VCPUs, &h.Usage.MemoryMB, &h.VolumeDirID, &h.Cordoned)
	if err != nil {
		return Host{}, err
	}
	if caps.Valid {
		h.Capabilities = []byte(caps.String)
	}
	h.RegisteredAt = fromNanos(registered)
	h.LastHeartbeat = fromNanos(heartbeat)
	return h, nil
}

func (s *sqlStore) UpsertHost(ctx context.Context, h Host) error {
	if h.ID == "" || h.State == "" {
		return fmt.Errorf("upsert host %q: empty id or state: %w", h.ID, errdefs.ErrInvalid)
	}
	var caps any
	if len(h.Capabilities) > 0 {
		caps = string(h.Capabilities)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO hosts (token, `+hostColumns+`)
		VALUES ('', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, url = excluded.url, token_hash = excluded.token_hash,
			runtime = excluded.runtime, capabilities = excluded.capabilities, cpus = excluded.cpus,
			memory_mb = excluded.memory_mb, max_sandboxes = excluded.max_sandboxes, state = excluded.state,
			volume_dir_id = excluded.volume_dir_id`,
		h.ID, h.Name, h.URL, h.TokenHash, h.Runtime, caps, h.CPUs, h.MemoryMB, h.MaxSandboxes,
		string(h.State), s.orNow(h.RegisteredAt).UnixNano(), nanos(h.LastHeartbeat),
		h.Usage.Sandboxes, h.Usage.VCPUs, h.Usage.MemoryMB, h.VolumeDirID)
	if err != nil {
		return fmt.Errorf("upsert host %s: %w", h.ID, err)
	}
	return nil
}

func (s *sqlStore) GetHost(ctx context.Context, id string) (Host, error) {
	h, err := scanHost(s.r.QueryRowContext(ctx, `SELECT `+hostSelect+` FROM hosts WHERE id = $1`, id))
	if err != nil {
		return Host{}, notFound(err, "get host "+id)
	}
	return h, nil
}

func (s *sqlStore) ListHosts(ctx context.Context) ([]Host, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+hostSelect+` FROM hosts ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer rows.Close()
	var hosts []Host
	for rows.Next() {
		h, err := scanHost(rows)
		if err != nil {
			return nil, fmt.Errorf("list hosts: %w", err)
		}
		hosts = append(hosts, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	return hosts, nil
}

func (s *sqlStore) Heartbeat(ctx context.Context, id string, at time.Time, u HostUsage) error {
	res, err := s.w.ExecContext(ctx, `UPDATE hosts SET last_heartbeat = $1, used_sandboxes = $2, used_vcpus = $3,
		used_memory_mb = $4 WHERE id = $5`, s.orNow(at).UnixNano(), u.Sandboxes, u.VCPUs, u.MemoryMB, id)
	return one(res, err, "heartbeat host "+id)
}

func (s *sqlStore) SetHostCordoned(ctx context.Context, id string, cordoned bool) error {
	res, err := s.w.ExecContext(ctx, `UPDATE hosts SET cordoned = $1 WHERE id = $2`, cordoned, id)
	return one(res, err, "cordon host "+id)
}

func (s *sqlStore) DeleteHost(ctx context.Context, id string) error {
	return s.inTx(ctx, "delete host "+id, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM sandboxes WHERE host_id = $1 AND state IN ($2, $3, $4, $5)`,
			id, SandboxStarting, SandboxRunning, SandboxPaused, SandboxLost).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("it still holds %d sandboxes (starting, running, paused or lost): drain it and end them first: %w", n, errdefs.ErrConflict)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM hosts WHERE id = $1`, id)
		return one(res, err, "host")
	})
}

func (s *sqlStore) SetHostState(ctx context.Context, id string, state HostState) error {
	switch state {
	case HostReady, HostDraining, HostDown:
	default:
		return fmt.Errorf("set host %s state %q: %w", id, state, errdefs.ErrInvalid)
	}
	res, err := s.w.ExecContext(ctx, `UPDATE hosts SET state = $1 WHERE id = $2`, string(state), id)
	return one(res, err, "set host state "+id)
}
