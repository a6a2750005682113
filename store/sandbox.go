package store

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
)

const sandboxColumns = `id, team_id, host_id, template_id, alias, client_id, state, vcpus, memory_mb, disk_mb,
	env_vars, envd_version, envd_access_token, traffic_access_token, allow_public_traffic, allow_internet,
	auto_pause, timeout_secs, started_at, end_at, created_at, updated_at, error, auto_resume, paused_at, auto_pause_filesystem`

// sandboxArgs are s's values in sandboxColumns order.
func sandboxArgs(s *Sandbox) ([]any, error) {
	env := s.EnvVars
	if env == nil {
		env = map[string]string{}
	}
	envJSON, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("encode env vars: %w", err)
	}
	return []any{s.ID, s.TeamID, s.HostID, s.TemplateID, s.Alias, s.ClientID, string(s.State), s.VCPUs,
		s.MemoryMB, s.DiskMB, string(envJSON), s.EnvdVersion, s.EnvdAccessToken, s.TrafficAccessToken,
		s.AllowPublicTraffic, s.AllowInternet, s.AutoPause, s.TimeoutSecs, nanos(s.StartedAt), nanos(s.EndAt),
		s.CreatedAt.UnixNano(), s.UpdatedAt.UnixNano(), s.Error, s.AutoResume, nanos(s.PausedAt), s.AutoPauseFilesystem}, nil
}

// scanSandbox scans a row of sandboxColumns, then extra.
func scanSandbox(row interface{ Scan(...any) error }, extra ...any) (Sandbox, error) {
	var s Sandbox
	var env string
	var started, end, created, updated, paused sql.NullInt64
	dest := append([]any{&s.ID, &s.TeamID, &s.HostID, &s.TemplateID, &s.Alias, &s.ClientID, &s.State, &s.VCPUs,
		&s.MemoryMB, &s.DiskMB, &env, &s.EnvdVersion, &s.EnvdAccessToken, &s.TrafficAccessToken,
		&s.AllowPublicTraffic, &s.AllowInternet, &s.AutoPause, &s.TimeoutSecs, &started, &end,
		&created, &updated, &s.Error, &s.AutoResume, &paused, &s.AutoPauseFilesystem}, extra...)
	if err := row.Scan(dest...); err != nil {
		return Sandbox{}, err
	}
	if err := json.Unmarshal([]byte(env), &s.EnvVars); err != nil {
		return Sandbox{}, fmt.Errorf("decode env vars of %s: %w", s.ID, err)
	}
	if s.EnvVars == nil {
		s.EnvVars = map[string]string{}
	}
	s.Metadata = map[string]string{}
	s.StartedAt, s.EndAt = fromNanos(started), fromNanos(end)
	s.CreatedAt, s.UpdatedAt = fromNanos(created), fromNanos(updated)
	s.PausedAt = fromNanos(paused)
	return s, nil
}

func validState(st SandboxState) bool {
	switch st {
	case SandboxStarting, SandboxRunning, SandboxPaused, SandboxStopped, SandboxLost, SandboxError:
		return true
	}
	return false
}

func (s *sqlStore) CreateSandbox(ctx context.Context, sb Sandbox) error {
	return s.createSandbox(ctx, sb, nil)
}

// createSandbox inserts sb; check, when not nil, runs first in the same
// transaction and aborts the insert with its error.
func (s *sqlStore) createSandbox(ctx context.Context, sb Sandbox, check func(*sql.Tx, Sandbox) error) error {
	if sb.ID == "" || sb.TeamID == "" || !validState(sb.State) {
		return fmt.Errorf("create sandbox %q: missing id or team, or state %q: %w", sb.ID, sb.State, errdefs.ErrInvalid)
	}
	now := s.clock.Now()
	if sb.CreatedAt.IsZero() {
		sb.CreatedAt = now
	}
	if sb.UpdatedAt.IsZero() {
		sb.UpdatedAt = now
	}
	setPausedAt(&sb, "", now)
	args, err := sandboxArgs(&sb)
	if err != nil {
		return fmt.Errorf("create sandbox %s: %w", sb.ID, err)
	}
	return s.inTx(ctx, "create sandbox "+sb.ID, func(tx *sql.Tx) error {
		if check != nil {
			if err := check(tx, sb); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sandboxes (`+sandboxColumns+`) VALUES (`+placeholders(1, len(args))+`)`, args...); err != nil {
			return s.classify(err, "insert")
		}
		return insertMetadata(ctx, tx, sb.ID, sb.Metadata)
	})
}

// setPausedAt keeps PausedAt: now when the sandbox becomes paused, zero
// when it is not paused (from is "" on a create, which may give its own).
// Stored to the nanosecond in UTC, as read back.
func setPausedAt(sb *Sandbox, from SandboxState, now time.Time) {
	switch {
	case sb.State != SandboxPaused:
		sb.PausedAt = time.Time{}
	case from == SandboxPaused, from == "" && !sb.PausedAt.IsZero():
	default:
		sb.PausedAt = time.Unix(0, now.UnixNano()).UTC()
	}
}

// inTx runs fn in a write transaction and commits when it returns nil.
func (s *sqlStore) inTx(ctx context.Context, what string, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", what, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", what, err)
	}
	return nil
}

func insertMetadata(ctx context.Context, q querier, id string, md map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(md)) {
		if _, err := q.ExecContext(ctx, `INSERT INTO sandbox_metadata (sandbox_id, key, value) VALUES ($1, $2, $3)`,
			id, k, md[k]); err != nil {
			return fmt.Errorf("insert metadata %q: %w", k, err)
		}
	}
	return nil
}

// placeholders returns "$from, ..., $(from+n-1)".
func placeholders(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(from+i))
	}
	return b.String()
}

// loadMetadata fills in the Metadata of sbs.
func loadMetadata(ctx context.Context, q querier, sbs []Sandbox) error {
	if len(sbs) == 0 {
		return nil
	}
	idx := make(map[string]int, len(sbs))
	args := make([]any, len(sbs))
	for i := range sbs {
		idx[sbs[i].ID] = i
		args[i] = sbs[i].ID
	}
	rows, err := q.QueryContext(ctx, `SELECT sandbox_id, key, value FROM sandbox_metadata
		WHERE sandbox_id IN (`+placeholders(1, len(args))+`)`, args...)
	if err != nil {
		return fmt.Errorf("load metadata: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, k, v string
		if err := rows.Scan(&id, &k, &v); err != nil {
			return fmt.Errorf("load metadata: %w", err)
		}
		sbs[idx[id]].Metadata[k] = v
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load metadata: %w", err)
	}
	return nil
}

// getSandbox reads one sandbox with its metadata, in one statement;
// where is a condition on columns with placeholders from $1; suffix may
// lock the row.
func (s *sqlStore) getSandbox(ctx context.Context, q querier, what, where, suffix string, args ...any) (Sandbox, error) {
	var meta string
	sb, err := scanSandbox(q.QueryRowContext(ctx, `SELECT `+sandboxColumns+`, `+s.d.metadata+` FROM sandboxes WHERE `+where+suffix, args...), &meta)
	if err != nil {
		return Sandbox{}, notFound(err, what)
	}
	if err := json.Unmarshal([]byte(meta), &sb.Metadata); err != nil {
		return Sandbox{}, fmt.Errorf("%s: decode metadata: %w", what, err)
	}
	return sb, nil
}

func (s *sqlStore) GetSandbox(ctx context.Context, teamID, id string) (Sandbox, error) {
	return s.getSandbox(ctx, s.r, "get sandbox "+id, "team_id = $1 AND id = $2", "", teamID, id)
}

func (s *sqlStore) LookupSandbox(ctx context.Context, id string) (Sandbox, error) {
	return s.getSandbox(ctx, s.r, "lookup sandbox "+id, "id = $1", "", id)
}

// pageToken is a position in the (created_at, id) order of one
// direction.
type pageToken struct {
	order   Order
	created int64
	id      string
}

// orderMark is a token's first byte, its direction.
var orderMark = map[Order]byte{OldestFirst: 'a', NewestFirst: 'd'}

func (p pageToken) String() string {
	return base64.RawURLEncoding.EncodeToString([]byte(string(orderMark[p.order]) + strconv.FormatInt(p.created, 10) + "." + p.id))
}

func parsePageToken(s string, order Order) (pageToken, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) == 0 {
		return pageToken{}, fmt.Errorf("page token: %w", errdefs.ErrInvalid)
	}
	if raw[0] != orderMark[order] {
		return pageToken{}, fmt.Errorf("page token of another order: %w", errdefs.ErrInvalid)
	}
	ns, id, ok := strings.Cut(string(raw[1:]), ".")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || id == "" {
		return pageToken{}, fmt.Errorf("page token: %w", errdefs.ErrInvalid)
	}
	return pageToken{order: order, created: n, id: id}, nil
}

// conditions collects a WHERE clause and its arguments.
type conditions struct {
	where []string
	args  []any
}

// arg adds v and returns its placeholder.
func (q *conditions) arg(v any) string {
	q.args = append(q.args, v)
	return "$" + strconv.Itoa(len(q.args))
}

// filter adds f's conditions but its page (Order, Limit, NextToken).
func (q *conditions) filter(f SandboxFilter) {
	if f.TeamID != "" {
		q.where = append(q.where, "team_id = "+q.arg(f.TeamID))
	}
	if f.HostID != "" {
		q.where = append(q.where, "host_id = "+q.arg(f.HostID))
	}
	if len(f.States) > 0 {
		ph := make([]string, len(f.States))
		for i, st := range f.States {
			ph[i] = q.arg(string(st))
		}
		q.where = append(q.where, "state IN ("+strings.Join(ph, ", ")+")")
	}
	if !f.StartedAfter.IsZero() {
		q.where = append(q.where, "started_at >= "+q.arg(f.StartedAfter.UnixNano()))
	}
	if f.Template != "" {
		t := q.arg(f.Template)
		q.where = append(q.where, "(template_id = "+t+" OR alias = "+t+")")
	}
	for _, k := range slices.Sorted(maps.Keys(f.Metadata)) {
		q.where = append(q.where, "EXISTS (SELECT 1 FROM sandbox_metadata m WHERE m.sandbox_id = sandboxes.id AND m.key = "+
			q.arg(k)+" AND m.value = "+q.arg(f.Metadata[k])+")")
	}
}

func (q *conditions) whereClause() string {
	if len(q.where) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(q.where, " AND ")
}

func (s *sqlStore) CountSandboxes(ctx context.Context, f SandboxFilter) (int, error) {
	var q conditions
	q.filter(f)
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM sandboxes`+q.whereClause(), q.args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count sandboxes: %w", err)
	}
	return n, nil
}

func (s *sqlStore) ListSandboxes(ctx context.Context, f SandboxFilter) ([]Sandbox, string, error) {
	limit := f.Limit
	switch {
	case limit <= 0:
		limit = DefaultPageSize
	case limit > MaxPageSize:
		limit = MaxPageSize
	}
	if _, ok := orderMark[f.Order]; !ok {
		return nil, "", fmt.Errorf("list sandboxes: order %d: %w", f.Order, errdefs.ErrInvalid)
	}
	var q conditions
	q.filter(f)
	cmp, dir := ">", "ASC"
	if f.Order == NewestFirst {
		cmp, dir = "<", "DESC"
	}
	if f.NextToken != "" {
		p, err := parsePageToken(f.NextToken, f.Order)
		if err != nil {
			return nil, "", fmt.Errorf("list sandboxes: %w", err)
		}
		q.where = append(q.where, "(created_at "+cmp+" "+q.arg(p.created)+" OR (created_at = "+q.arg(p.created)+" AND id "+cmp+" "+q.arg(p.id)+"))")
	}
	// One row more than the page tells whether there is a next page.
	stmt := `SELECT ` + sandboxColumns + ` FROM sandboxes` + q.whereClause() +
		" ORDER BY created_at " + dir + ", id " + dir + " LIMIT " + q.arg(limit+1)
	sbs, err := s.querySandboxes(ctx, stmt, q.args...)
	if err != nil {
		return nil, "", fmt.Errorf("list sandboxes: %w", err)
	}
	next := ""
	if len(sbs) > limit {
		sbs = sbs[:limit]
		last := sbs[limit-1]
		next = pageToken{order: f.Order, created: last.CreatedAt.UnixNano(), id: last.ID}.String()
	}
	if err := loadMetadata(ctx, s.r, sbs); err != nil {
		return nil, "", fmt.Errorf("list sandboxes: %w", err)
	}
	return sbs, next, nil
}

func (s *sqlStore) SandboxStatuses(ctx context.Context, hostID string, states ...SandboxState) ([]SandboxStatus, error) {
	if hostID == "" || len(states) == 0 {
		return nil, fmt.Errorf("sandbox statuses: no host or no states: %w", errdefs.ErrInvalid)
	}
	var q conditions
	q.filter(SandboxFilter{HostID: hostID, States: states})
	rows, err := s.r.QueryContext(ctx, `SELECT id, state, end_at, created_at, updated_at FROM sandboxes`+q.whereClause(), q.args...)
	if err != nil {
		return nil, fmt.Errorf("sandbox statuses of host %s: %w", hostID, err)
	}
	defer rows.Close()
	var out []SandboxStatus
	for rows.Next() {
		var st SandboxStatus
		var end, created, updated sql.NullInt64
		if err := rows.Scan(&st.ID, &st.State, &end, &created, &updated); err != nil {
			return nil, fmt.Errorf("sandbox statuses of host %s: %w", hostID, err)
		}
		st.EndAt, st.CreatedAt, st.UpdatedAt = fromNanos(end), fromNanos(created), fromNanos(updated)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sandbox statuses of host %s: %w", hostID, err)
	}
	return out, nil
}

// querySandboxes runs a SELECT of sandboxColumns, without metadata.
func (s *sqlStore) querySandboxes(ctx context.Context, q string, args ...any) ([]Sandbox, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var sbs []Sandbox
	for rows.Next() {
		sb, err := scanSandbox(rows)
		if err != nil {
			return nil, err
		}
		sbs = append(sbs, sb)
	}
	return sbs, rows.Err()
}

func (s *sqlStore) UpdateSandbox(ctx context.Context, id string, fn func(*Sandbox) error) (Sandbox, error) {
	return s.updateSandbox(ctx, id, fn, nil)
}

// updateSandbox is UpdateSandbox; check, when not nil, sees the sandbox
// before and after fn, in the same transaction, and aborts the write
// with its error.
func (s *sqlStore) updateSandbox(ctx context.Context, id string, fn func(*Sandbox) error, check func(tx *sql.Tx, before, after Sandbox) error) (Sandbox, error) {
	what := "update sandbox " + id
	if check == nil {
	optimistic:
		for range casAttempts {
			out, err := s.updateSandboxIfSame(ctx, id, fn)
			switch {
			case errors.Is(err, errChangedMeanwhile):
				continue
			case errors.Is(err, errMetadataChanged):
				break optimistic
			case err != nil:
				return Sandbox{}, fmt.Errorf("%s: %w", what, err)
			}
			return out, nil
		}
	}
	var out Sandbox
	err := s.inTx(ctx, what, func(tx *sql.Tx) error {
		sb, err := s.getSandbox(ctx, tx, "read", "id = $1", s.d.forUpdate, id)
		if err != nil {
			return err
		}
		prev, err := change(&sb, fn)
		if err != nil {
			return err
		}
		if check != nil {
			if err := check(tx, prev, sb); err != nil {
				return err
			}
		}
		s.stamp(&sb, prev)
		args, err := sandboxArgs(&sb)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE sandboxes SET `+sandboxSet+` WHERE id = $1`, args...); err != nil {
			return s.classify(err, "write")
		}
		if !maps.Equal(prev.Metadata, sb.Metadata) {
			if _, err := tx.ExecContext(ctx, `DELETE FROM sandbox_metadata WHERE sandbox_id = $1`, id); err != nil {
				return fmt.Errorf("replace metadata: %w", err)
			}
			if err := insertMetadata(ctx, tx, id, sb.Metadata); err != nil {
				return err
			}
		}
		out = written(sb)
		return nil
	})
	if err != nil {
		return Sandbox{}, err
	}
	return out, nil
}

// casAttempts is how many times an update with no check is tried
// without a transaction (updateSandboxIfSame) before it locks the row.
const casAttempts = 3

var (
	errChangedMeanwhile = errors.New("sandbox changed since it was read")
	errMetadataChanged  = errors.New("metadata changed: a transaction's work")
)

// updateSandboxIfSame is an update without a transaction: it reads the
// sandbox, calls fn and writes the result only if the sandbox's
// updated_at is still what it read, which every write moves forward
// (stamp): two statements, not a transaction's four, and no lock held
// while fn runs. It fails with errChangedMeanwhile when another write
// came in between, and with errMetadataChanged, writing nothing, when
// fn changed the metadata (rows of their own, which only a transaction
// replaces with the sandbox's).
func (s *sqlStore) updateSandboxIfSame(ctx context.Context, id string, fn func(*Sandbox) error) (Sandbox, error) {
	sb, err := s.getSandbox(ctx, s.w, "read", "id = $1", "", id)
	if err != nil {
		return Sandbox{}, err
	}
	prev, err := change(&sb, fn)
	if err != nil {
		return Sandbox{}, err
	}
	if !maps.Equal(prev.Metadata, sb.Metadata) {
		return Sandbox{}, errMetadataChanged
	}
	s.stamp(&sb, prev)
	args, err := sandboxArgs(&sb)
	if err != nil {
		return Sandbox{}, err
	}
	args = append(args, prev.UpdatedAt.UnixNano())
	res, err := s.w.ExecContext(ctx, `UPDATE sandboxes SET `+sandboxSet+` WHERE id = $1 AND updated_at = $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return Sandbox{}, s.classify(err, "write")
	}
	if n, err := res.RowsAffected(); err != nil {
		return Sandbox{}, fmt.Errorf("write: %w", err)
	} else if n == 0 {
		return Sandbox{}, errChangedMeanwhile // or deleted: the next read says so
	}
	return written(sb), nil
}

// sandboxSet is the SET list of an UPDATE of every column of
// sandboxColumns but id, which is $1, from $2 on.
var sandboxSet = func() string {
	cols := strings.Split(sandboxColumns, ",")
	set := make([]string, 0, len(cols)-1)
	for i, c := range cols[1:] {
		set = append(set, strings.TrimSpace(c)+" = $"+strconv.Itoa(i+2))
	}
	return strings.Join(set, ", ")
}()

// change calls fn on sb, which is as read, and refuses what it may not
// change; prev is sb before, with a copy of its metadata.
func change(sb *Sandbox, fn func(*Sandbox) error) (prev Sandbox, err error) {
	prev = *sb
	prev.Metadata = maps.Clone(sb.Metadata)
	if err := fn(sb); err != nil {
		return prev, err
	}
	if sb.ID != prev.ID || !validState(sb.State) || sb.TeamID != prev.TeamID {
		return prev, fmt.Errorf("changed id or team, or state %q: %w", sb.State, errdefs.ErrInvalid)
	}
	return prev, nil
}

// stamp sets what every write of a sandbox sets: UpdatedAt, later than
// prev's even when the clock says otherwise (updateSandboxIfSame
// compares it), and PausedAt.
func (s *sqlStore) stamp(sb *Sandbox, prev Sandbox) {
	now := s.clock.Now()
	if now.UnixNano() <= prev.UpdatedAt.UnixNano() {
		now = time.Unix(0, prev.UpdatedAt.UnixNano()+1)
	}
	sb.UpdatedAt = now
	setPausedAt(sb, prev.State, now)
}

// written is sb as the store returns it once written.
func written(sb Sandbox) Sandbox {
	if sb.Metadata == nil {
		sb.Metadata = map[string]string{}
	}
	if sb.EnvVars == nil {
		sb.EnvVars = map[string]string{}
	}
	sb.UpdatedAt = sb.UpdatedAt.UTC()
	return sb
}

func (s *sqlStore) DeleteSandbox(ctx context.Context, id string) error {
	// Metadata goes with it (ON DELETE CASCADE).
	res, err := s.w.ExecContext(ctx, `DELETE FROM sandboxes WHERE id = $1`, id)
	return one(res, err, "delete sandbox "+id)
}

func (s *sqlStore) DeleteSandboxes(ctx context.Context, ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	// Metadata goes with them (ON DELETE CASCADE).
	res, err := s.w.ExecContext(ctx, `DELETE FROM sandboxes WHERE id IN (`+placeholders(1, len(ids))+`)`, args...)
	if err != nil {
		return 0, fmt.Errorf("delete sandboxes: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete sandboxes: %w", err)
	}
	return int(n), nil
}

// Started is what a sandbox's agent says of it once it has started:
// the sizes it gave it (the agent's defaults fill in what the create
// left zero) and when it started (zero: now).
type Started struct {
	VCPUs    int
	MemoryMB int64
	DiskMB   int64
	At       time.Time
}

func (s *sqlStore) SandboxStarted(ctx context.Context, id string, st Started) (Sandbox, error) {
	what := "record sandbox " + id + " started"
	// updated_at moves forward as stamp moves it; paused_at stays NULL
	// (a starting sandbox was never paused).
	var meta string
	sb, err := scanSandbox(s.w.QueryRowContext(ctx, `UPDATE sandboxes SET state = 'running', vcpus = $2, memory_mb = $3, disk_mb = $4,
		started_at = $5, updated_at = CASE WHEN updated_at < $6 THEN $6 ELSE updated_at + 1 END
		WHERE id = $1 AND state = 'starting'
		RETURNING `+sandboxColumns+`, `+s.d.metadata,
		id, st.VCPUs, st.MemoryMB, st.DiskMB, s.orNow(st.At).UnixNano(), s.clock.Now().UnixNano()), &meta)
	if errors.Is(err, sql.ErrNoRows) {
		return Sandbox{}, s.notStarting(ctx, id, what)
	}
	if err != nil {
		return Sandbox{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := json.Unmarshal([]byte(meta), &sb.Metadata); err != nil {
		return Sandbox{}, fmt.Errorf("%s: decode metadata: %w", what, err)
	}
	return written(sb), nil
}

// notStarting is why SandboxStarted changed nothing: the sandbox is
// gone, or no longer starting.
func (s *sqlStore) notStarting(ctx context.Context, id, what string) error {
	sb, err := s.getSandbox(ctx, s.w, "sandbox "+id, "id = $1", "", id)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: it became %s while starting: %w", what, sb.State, errdefs.ErrConflict)
}

func (s *sqlStore) StopExpired(ctx context.Context, now time.Time, limit int) ([]Sandbox, error) {
	// The conditions twice: the subquery picks the rows, and the update
	// checks each again as it writes it (PostgreSQL reads a row another
	// transaction changed meanwhile again, but not the subquery). As
	// every write, this one moves updated_at forward (stamp).
	const expired = `state = 'running' AND end_at IS NOT NULL AND end_at <= $1 AND NOT auto_pause`
	rows, err := s.w.QueryContext(ctx, `UPDATE sandboxes SET state = 'stopped', paused_at = NULL,
		updated_at = CASE WHEN updated_at < $2 THEN $2 ELSE updated_at + 1 END
		WHERE id IN (SELECT id FROM sandboxes WHERE `+expired+` ORDER BY end_at, id LIMIT `+strconv.Itoa(max(limit, 1))+s.d.forUpdate+`)
		AND `+expired+`
		RETURNING `+sandboxColumns+`, `+s.d.metadata, now.UnixNano(), s.clock.Now().UnixNano())
	if err != nil {
		return nil, fmt.Errorf("stop expired sandboxes: %w", err)
	}
	defer rows.Close()
	var out []Sandbox
	for rows.Next() {
		var meta string
		sb, err := scanSandbox(rows, &meta)
		if err != nil {
			return nil, fmt.Errorf("stop expired sandboxes: %w", err)
		}
		if err := json.Unmarshal([]byte(meta), &sb.Metadata); err != nil {
			return nil, fmt.Errorf("stop expired sandboxes: decode metadata of %s: %w", sb.ID, err)
		}
		out = append(out, sb)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("stop expired sandboxes: %w", err)
	}
	return out, nil
}

func (s *sqlStore) ExpiredSandboxes(ctx context.Context, now time.Time, states ...SandboxState) ([]Sandbox, error) {
	args := []any{now.UnixNano()}
	q := `SELECT ` + sandboxColumns + ` FROM sandboxes WHERE end_at IS NOT NULL AND end_at <= $1`
	if len(states) > 0 {
		for _, st := range states {
			args = append(args, string(st))
		}
		q += ` AND state IN (` + placeholders(2, len(states)) + `)`
	}
	sbs, err := s.querySandboxes(ctx, q+` ORDER BY end_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("expired sandboxes: %w", err)
	}
	if err := loadMetadata(ctx, s.r, sbs); err != nil {
		return nil, fmt.Errorf("expired sandboxes: %w", err)
	}
	return sbs, nil
}
