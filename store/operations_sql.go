package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
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

func (e *TeamBusyError) Error() string {
	return fmt.Sprintf("team %s still has %d sandboxes and %d volumes: kill its sandboxes (force does) and delete its volumes first", e.TeamID, e.Sandboxes, e.Volumes)
}

func (e *TeamBusyError) Unwrap() error { return errdefs.ErrConflict }

// NewEventID returns an ID that sorts after every ID made before it in
// this process at the same instant: the time in hex, then random bits.
func NewEventID(at time.Time) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%016x%s", uint64(at.UnixNano()), hex.EncodeToString(b[:]))
}

func (s *sqlStore) ListTeams(ctx context.Context) ([]Team, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, name, created_at FROM teams ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list teams: %w", err)
	}
	return collect(rows, "list teams", func(r *sql.Rows) (Team, error) {
		var t Team
		var created sql.NullInt64
		err := r.Scan(&t.ID, &t.Name, &created)
		t.CreatedAt = fromNanos(created)
		return t, err
	})
}

func (s *sqlStore) DeleteTeam(ctx context.Context, id string) error {
	return s.inTx(ctx, "delete team "+id, func(tx *sql.Tx) error {
		if err := lockTeam(ctx, tx, s.d, id); err != nil {
			return err
		}
		busy := TeamBusyError{TeamID: id}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM sandboxes WHERE team_id = $1 AND state <> $2`,
			id, string(SandboxStopped)).Scan(&busy.Sandboxes); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM volumes WHERE team_id = $1`, id).Scan(&busy.Volumes); err != nil {
			return err
		}
		if busy.Sandboxes > 0 || busy.Volumes > 0 {
			return &busy
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM teams WHERE id = $1`, id)
		return one(res, err, "delete team")
	})
}

// Operator tokens.

func (s *sqlStore) CreateAdminToken(ctx context.Context, t AdminToken) error {
	if len(t.Hash) == 0 || t.ID == "" {
		return fmt.Errorf("create admin token: empty id or hash: %w", errdefs.ErrInvalid)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO admin_tokens (id, name, hash, prefix, mask_suffix, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, t.ID, t.Name, t.Hash, t.Prefix, t.MaskSuffix, s.orNow(t.CreatedAt).UnixNano())
	if err != nil {
		return s.classify(err, "create admin token "+t.ID)
	}
	return nil
}

func (s *sqlStore) AdminTokenByHash(ctx context.Context, hash []byte) (AdminToken, error) {
	var t AdminToken
	var created sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT id, name, hash, prefix, mask_suffix, created_at FROM admin_tokens WHERE hash = $1`, hash).
		Scan(&t.ID, &t.Name, &t.Hash, &t.Prefix, &t.MaskSuffix, &created)
	if err != nil {
		return AdminToken{}, notFound(err, "admin token by hash")
	}
	t.CreatedAt = fromNanos(created)
	return t, nil
}

func (s *sqlStore) CountAdminTokens(ctx context.Context) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM admin_tokens`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count admin tokens: %w", err)
	}
	return n, nil
}

// The audit log.

func (s *sqlStore) AppendAudit(ctx context.Context, entries ...AuditEntry) error {
	if len(entries) == 0 {
		return nil
	}
	// One statement, all or nothing, however many entries.
	const entryArgs = 9
	rows := make([]string, len(entries))
	args := make([]any, 0, len(entries)*entryArgs)
	for i, e := range entries {
		at := s.orNow(e.At)
		if e.ID == "" {
			e.ID = NewEventID(at)
		}
		rows[i] = "(" + placeholders(len(args)+1, entryArgs) + ")"
		args = append(args, e.ID, at.UnixNano(), e.TeamID, e.Actor, e.Action, e.Target, e.Source, e.Status, e.Error)
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO audit_log (id, at, team_id, actor, action, target, source, status, error) VALUES `+
		strings.Join(rows, ", "), args...); err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	return nil
}

func (s *sqlStore) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, string, error) {
	limit := pageSize(f.Limit)
	var q conditions
	if f.TeamID != "" {
		q.where = append(q.where, "team_id = "+q.arg(f.TeamID))
	}
	if f.Action != "" {
		q.where = append(q.where, "action = "+q.arg(f.Action))
	}
	if !f.Since.IsZero() {
		q.where = append(q.where, "at >= "+q.arg(f.Since.UnixNano()))
	}
	if !f.Until.IsZero() {
		q.where = append(q.where, "at < "+q.arg(f.Until.UnixNano()))
	}
	if f.Cursor != "" {
		tok, err := parsePageToken(f.Cursor, OldestFirst)
		if err != nil {
			return nil, "", fmt.Errorf("list audit: %w", err)
		}
		q.where = append(q.where, "(at > "+q.arg(tok.created)+" OR (at = "+q.arg(tok.created)+" AND id > "+q.arg(tok.id)+"))")
	}
	rows, err := s.r.QueryContext(ctx, `SELECT id, at, team_id, actor, action, target, source, status, error FROM audit_log`+
		q.whereClause()+` ORDER BY at, id LIMIT `+strconv.Itoa(limit+1), q.args...)
	if err != nil {
		return nil, "", fmt.Errorf("list audit: %w", err)
	}
	entries, err := collect(rows, "list audit", func(r *sql.Rows) (AuditEntry, error) {
		var e AuditEntry
		var at int64
		err := r.Scan(&e.ID, &at, &e.TeamID, &e.Actor, &e.Action, &e.Target, &e.Source, &e.Status, &e.Error)
		e.At = time.Unix(0, at).UTC()
		return e, err
	})
	if err != nil || len(entries) <= limit {
		return entries, "", err
	}
	last := entries[limit-1]
	return entries[:limit], pageToken{order: OldestFirst, created: last.At.UnixNano(), id: last.ID}.String(), nil
}

func (s *sqlStore) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM audit_log WHERE at < $1`, before.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("prune audit: %w", err)
	}
	return res.RowsAffected()
}

// Events.

func (s *sqlStore) AppendEvents(ctx context.Context, events ...Event) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	// One statement for their teams' webhooks and one for the events,
	// however many events there are; when a webhook subscribes, one more
	// for the deliveries, in a transaction with the events.
	const eventArgs = 10
	rows := make([]string, len(events))
	args := make([]any, 0, len(events)*eventArgs)
	teams := map[string]bool{}
	for i, e := range events {
		if e.ID == "" || e.TeamID == "" || e.Type == "" {
			return 0, fmt.Errorf("event without id, team or type: %w", errdefs.ErrInvalid)
		}
		if e.RunningDelta < -1 || e.RunningDelta > 1 {
			return 0, fmt.Errorf("event %s: running delta %d: %w", e.ID, e.RunningDelta, errdefs.ErrInvalid)
		}
		data := string(e.Data)
		if data == "" {
			data = "{}"
		}
		rows[i] = "(" + placeholders(len(args)+1, eventArgs) + ")"
		args = append(args, e.ID, s.orNow(e.At).UnixNano(), e.TeamID, e.SandboxID, e.Type, e.TemplateID, e.BuildID, e.ExecutionID, data, e.RunningDelta)
		teams[e.TeamID] = true
	}
	hooks, err := enabledWebhooks(ctx, s.r, slices.Collect(maps.Keys(teams)))
	if err != nil {
		return 0, fmt.Errorf("append events: %w", err)
	}
	insertEvents := `INSERT INTO events (` + eventColumns + `) VALUES ` + strings.Join(rows, ", ")
	deliveries, dargs := s.deliveries(events, hooks)
	if len(deliveries) == 0 {
		// Most teams have no webhooks: the events go in one statement,
		// without a transaction's two more.
		if _, err := s.w.ExecContext(ctx, insertEvents, args...); err != nil {
			return 0, fmt.Errorf("append events: %w", s.classify(err, "events"))
		}
		return 0, nil
	}
	err = s.inTx(ctx, "append events", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, insertEvents, args...); err != nil {
			return s.classify(err, "events")
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_deliveries (id, webhook_id, event_id, event_at, state, attempts,
			next_at, created_at, last_status, last_error) VALUES `+strings.Join(deliveries, ", "), dargs...); err != nil {
			return fmt.Errorf("queue deliveries: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(deliveries), nil
}

// deliveries are the rows of webhook_deliveries, and their arguments,
// of the events the teams' hooks subscribe to: one each, due at once.
// The hooks are read before the transaction that queues them, as they
// were read in it before: a hook enabled meanwhile misses these events
// either way.
func (s *sqlStore) deliveries(events []Event, hooks map[string][]Webhook) ([]string, []any) {
	var rows []string
	var args []any
	now := s.clock.Now().UnixNano()
	for _, e := range events {
		at := s.orNow(e.At)
		for _, w := range hooks[e.TeamID] {
			if !slices.Contains(w.Events, e.Type) {
				continue
			}
			rows = append(rows, "("+placeholders(len(args)+1, 5)+", 0, "+placeholders(len(args)+6, 2)+", 0, '')")
			args = append(args, NewEventID(at), w.ID, e.ID, at.UnixNano(), DeliveryPending, at.UnixNano(), now)
		}
	}
	return rows, args
}

// enabledWebhooks returns the enabled webhooks of teams, by team, each
// team's in the order they were created.
func enabledWebhooks(ctx context.Context, q querier, teams []string) (map[string][]Webhook, error) {
	args := make([]any, len(teams))
	for i, t := range teams {
		args[i] = t
	}
	rows, err := q.QueryContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE team_id IN (`+placeholders(1, len(teams))+`) AND enabled
		ORDER BY team_id, created_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	whs, err := collect(rows, "list webhooks", func(r *sql.Rows) (Webhook, error) { return scanWebhook(r) })
	if err != nil {
		return nil, err
	}
	out := map[string][]Webhook{}
	for _, w := range whs {
		out[w.TeamID] = append(out[w.TeamID], w)
	}
	return out, nil
}

const eventColumns = `id, at, team_id, sandbox_id, type, template_id, build_id, execution_id, data, running_delta`

func scanEvent(r interface{ Scan(...any) error }) (Event, error) {
	var e Event
	var at int64
	var data string
	err := r.Scan(&e.ID, &at, &e.TeamID, &e.SandboxID, &e.Type, &e.TemplateID, &e.BuildID, &e.ExecutionID, &data, &e.RunningDelta)
	e.At = time.Unix(0, at).UTC()
	e.Data = json.RawMessage(data)
	return e, err
}

func (s *sqlStore) ListEvents(ctx context.Context, f EventFilter) ([]Event, error) {
	var q conditions
	if f.TeamID != "" {
		q.where = append(q.where, "team_id = "+q.arg(f.TeamID))
	}
	if f.SandboxID != "" {
		q.where = append(q.where, "sandbox_id = "+q.arg(f.SandboxID))
	}
	if len(f.Types) > 0 {
		ph := make([]string, len(f.Types))
		for i, t := range f.Types {
			ph[i] = q.arg(t)
		}
		q.where = append(q.where, "type IN ("+strings.Join(ph, ", ")+")")
	}
	if !f.Since.IsZero() {
		q.where = append(q.where, "at >= "+q.arg(f.Since.UnixNano()))
	}
	order, cmp := " ORDER BY at DESC, id DESC", "<"
	if f.Asc {
		order, cmp = " ORDER BY at, id", ">"
	}
	if !f.AfterAt.IsZero() {
		n := f.AfterAt.UnixNano()
		q.where = append(q.where, "(at "+cmp+" "+q.arg(n)+" OR (at = "+q.arg(n)+" AND id "+cmp+" "+q.arg(f.AfterID)+"))")
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+eventColumns+` FROM events`+q.whereClause()+order+
		` LIMIT `+strconv.Itoa(pageSize(f.Limit))+` OFFSET `+strconv.Itoa(max(f.Offset, 0)), q.args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return collect(rows, "list events", func(r *sql.Rows) (Event, error) { return scanEvent(r) })
}

func (s *sqlStore) TeamEventCounts(ctx context.Context, teamID string, since time.Time) ([]EventCount, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT at, type, running_delta FROM events
		WHERE team_id = $1 AND at >= $2 AND (running_delta <> 0 OR type = $3) ORDER BY at, id`,
		teamID, since.UnixNano(), EventCreated)
	if err != nil {
		return nil, fmt.Errorf("team event counts: %w", err)
	}
	return collect(rows, "team event counts", func(r *sql.Rows) (EventCount, error) {
		var c EventCount
		var at int64
		var typ string
		err := r.Scan(&at, &typ, &c.RunningDelta)
		c.At, c.Created = time.Unix(0, at).UTC(), typ == EventCreated
		return c, err
	})
}

func (s *sqlStore) PruneEvents(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.inTx(ctx, "prune events", func(tx *sql.Tx) error {
		// The deliveries go first, by hand: SQLite enforces the cascade
		// only with foreign keys on, which a caller's pool may not have.
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE event_at < $1`, before.UnixNano()); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE at < $1`, before.UnixNano())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// Webhooks.

const webhookColumns = `id, team_id, name, url, secret, events, enabled, created_at`

func scanWebhook(r interface{ Scan(...any) error }) (Webhook, error) {
	var w Webhook
	var events string
	var created int64
	if err := r.Scan(&w.ID, &w.TeamID, &w.Name, &w.URL, &w.Secret, &events, &w.Enabled, &created); err != nil {
		return Webhook{}, err
	}
	w.CreatedAt = time.Unix(0, created).UTC()
	if err := json.Unmarshal([]byte(events), &w.Events); err != nil {
		return Webhook{}, fmt.Errorf("webhook %s events: %w", w.ID, err)
	}
	return w, nil
}

func teamWebhooks(ctx context.Context, q querier, teamID string, enabledOnly bool) ([]Webhook, error) {
	query := `SELECT ` + webhookColumns + ` FROM webhooks`
	var args []any
	switch {
	case teamID != "" && enabledOnly:
		query += ` WHERE team_id = $1 AND enabled`
		args = append(args, teamID)
	case teamID != "":
		query += ` WHERE team_id = $1`
		args = append(args, teamID)
	}
	rows, err := q.QueryContext(ctx, query+` ORDER BY created_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	return collect(rows, "list webhooks", func(r *sql.Rows) (Webhook, error) { return scanWebhook(r) })
}

func (s *sqlStore) CreateWebhook(ctx context.Context, w Webhook) error {
	events, err := json.Marshal(w.Events)
	if err != nil || w.ID == "" || w.TeamID == "" {
		return fmt.Errorf("create webhook: empty id or team: %w", errdefs.ErrInvalid)
	}
	_, err = s.w.ExecContext(ctx, `INSERT INTO webhooks (`+webhookColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		w.ID, w.TeamID, w.Name, w.URL, w.Secret, string(events), w.Enabled, s.orNow(w.CreatedAt).UnixNano())
	if err != nil {
		return s.classify(err, "create webhook "+w.ID)
	}
	return nil
}

func (s *sqlStore) GetWebhook(ctx context.Context, teamID, id string) (Webhook, error) {
	w, err := scanWebhook(s.r.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE team_id = $1 AND id = $2`, teamID, id))
	if err != nil {
		return Webhook{}, notFound(err, "webhook "+id)
	}
	return w, nil
}

func (s *sqlStore) ListWebhooks(ctx context.Context, teamID string) ([]Webhook, error) {
	return teamWebhooks(ctx, s.r, teamID, false)
}

func (s *sqlStore) UpdateWebhook(ctx context.Context, teamID, id string, fn func(*Webhook) error) (Webhook, error) {
	var w Webhook
	err := s.inTx(ctx, "update webhook "+id, func(tx *sql.Tx) error {
		var err error
		w, err = scanWebhook(tx.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE team_id = $1 AND id = $2`+s.d.forUpdate, teamID, id))
		if err != nil {
			return notFound(err, "webhook")
		}
		if err := fn(&w); err != nil {
			return err
		}
		events, err := json.Marshal(w.Events)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE webhooks SET name = $1, url = $2, secret = $3, events = $4, enabled = $5 WHERE id = $6`,
			w.Name, w.URL, w.Secret, string(events), w.Enabled, id)
		return err
	})
	return w, err
}

func (s *sqlStore) DeleteWebhook(ctx context.Context, teamID, id string) error {
	return s.inTx(ctx, "delete webhook "+id, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE webhook_id IN
			(SELECT id FROM webhooks WHERE team_id = $1 AND id = $2)`, teamID, id); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM webhooks WHERE team_id = $1 AND id = $2`, teamID, id)
		return one(res, err, "webhook")
	})
}

// Deliveries.

const deliveryColumns = `d.id, d.webhook_id, d.event_id, e.type, d.event_at, d.state, d.attempts, d.next_at,
	d.last_status, d.last_error, d.created_at, d.done_at`

func scanDelivery(r interface{ Scan(...any) error }, extra ...any) (Delivery, error) {
	var d Delivery
	var eventAt, next, created int64
	var done sql.NullInt64
	dest := append([]any{&d.ID, &d.WebhookID, &d.EventID, &d.EventType, &eventAt, &d.State, &d.Attempts, &next,
		&d.LastStatus, &d.LastError, &created, &done}, extra...)
	if err := r.Scan(dest...); err != nil {
		return Delivery{}, err
	}
	d.EventAt, d.NextAt, d.CreatedAt = time.Unix(0, eventAt).UTC(), time.Unix(0, next).UTC(), time.Unix(0, created).UTC()
	d.DoneAt = fromNanos(done)
	return d, nil
}

func (s *sqlStore) ClaimDeliveries(ctx context.Context, now, leaseUntil time.Time, limit int) ([]DueDelivery, error) {
	// The head of each webhook's queue: its pending delivery with no
	// older pending one.
	rows, err := s.r.QueryContext(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
		WHERE d.state = $1 AND d.next_at <= $2 AND (d.lease_until IS NULL OR d.lease_until < $2)
		AND NOT EXISTS (SELECT 1 FROM webhook_deliveries o WHERE o.webhook_id = d.webhook_id AND o.state = $1
			AND (o.event_at < d.event_at OR (o.event_at = d.event_at AND o.event_id < d.event_id)))
		ORDER BY d.next_at LIMIT `+strconv.Itoa(max(limit, 1)), DeliveryPending, now.UnixNano())
	if err != nil {
		return nil, fmt.Errorf("due deliveries: %w", err)
	}
	due, err := collect(rows, "due deliveries", func(r *sql.Rows) (Delivery, error) { return scanDelivery(r) })
	if err != nil {
		return nil, err
	}
	var out []DueDelivery
	for _, d := range due {
		// Claim it: of control planes racing, one UPDATE wins.
		res, err := s.w.ExecContext(ctx, `UPDATE webhook_deliveries SET lease_until = $1
			WHERE id = $2 AND state = $3 AND (lease_until IS NULL OR lease_until < $4)`,
			leaseUntil.UnixNano(), d.ID, DeliveryPending, now.UnixNano())
		if err := one(res, err, "claim delivery"); err != nil {
			if errors.Is(err, errdefs.ErrNotFound) {
				continue
			}
			return out, err
		}
		dd := DueDelivery{Delivery: d}
		if dd.Webhook, err = scanWebhook(s.w.QueryRowContext(ctx, `SELECT `+webhookColumns+` FROM webhooks WHERE id = $1`, d.WebhookID)); err != nil {
			return out, notFound(err, "webhook of delivery "+d.ID)
		}
		if dd.Event, err = scanEvent(s.w.QueryRowContext(ctx, `SELECT `+eventColumns+` FROM events WHERE id = $1`, d.EventID)); err != nil {
			return out, notFound(err, "event of delivery "+d.ID)
		}
		out = append(out, dd)
	}
	return out, nil
}

func (s *sqlStore) RecordAttempt(ctx context.Context, id string, a Attempt) error {
	var done any
	if a.State != DeliveryPending {
		done = s.orNow(a.At).UnixNano()
	}
	res, err := s.w.ExecContext(ctx, `UPDATE webhook_deliveries SET attempts = attempts + 1, state = $1, next_at = $2,
		lease_until = NULL, last_status = $3, last_error = $4, done_at = $5 WHERE id = $6`,
		a.State, a.NextAt.UnixNano(), a.Status, a.Error, done, id)
	return one(res, err, "record attempt of delivery "+id)
}

func (s *sqlStore) ListDeliveries(ctx context.Context, teamID, webhookID string, limit int) ([]Delivery, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
		JOIN webhooks w ON w.id = d.webhook_id WHERE w.team_id = $1 AND d.webhook_id = $2
		ORDER BY d.event_at DESC, d.event_id DESC LIMIT `+strconv.Itoa(pageSize(limit)), teamID, webhookID)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	return collect(rows, "list deliveries", func(r *sql.Rows) (Delivery, error) { return scanDelivery(r) })
}

// pageSize bounds a requested page size to [1, MaxPageSize], 0 being
// DefaultPageSize.
func pageSize(n int) int {
	switch {
	case n <= 0:
		return DefaultPageSize
	case n > MaxPageSize:
		return MaxPageSize
	}
	return n
}

// collect scans every row with scan and closes rows.
func collect[T any](rows *sql.Rows, what string, scan func(*sql.Rows) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}
