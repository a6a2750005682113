package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
)

// Templates on SQL. Every change of a build's state is one conditional
// UPDATE, so of a finish and a fail racing (the build's stream ends as the
// control plane gives it up) exactly one wins.

const templateColumns = `id, team_id, name, public, created_at, updated_at, snapshot_of`

func scanTemplate(row interface{ Scan(...any) error }) (Template, error) {
	var t Template
	var created, updated sql.NullInt64
	if err := row.Scan(&t.ID, &t.TeamID, &t.Name, &t.Public, &created, &updated, &t.SnapshotOf); err != nil {
		return Template{}, err
	}
	t.CreatedAt, t.UpdatedAt = fromNanos(created), fromNanos(updated)
	return t, nil
}

func (s *sqlStore) CreateTemplate(ctx context.Context, t Template) error {
	if t.ID == "" || t.TeamID == "" || t.Name == "" {
		return fmt.Errorf("create template: empty id, team or name: %w", errdefs.ErrInvalid)
	}
	now := s.clock.Now()
	_, err := s.w.ExecContext(ctx, `INSERT INTO templates (`+templateColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		t.ID, t.TeamID, t.Name, t.Public, s.orNow(t.CreatedAt).UnixNano(), now.UnixNano(), t.SnapshotOf)
	if err != nil {
		return s.classify(err, "create template "+t.Name)
	}
	return nil
}

func (s *sqlStore) GetTemplate(ctx context.Context, idOrName string) (Template, error) {
	// An ID first: a name may look like another template's ID, and the ID
	// is what E2B's API hands out. One statement, as a create asks for
	// a template by a name that is often none (a host's own tree).
	t, err := scanTemplate(s.r.QueryRowContext(ctx, `SELECT `+templateColumns+` FROM templates WHERE id = $1 OR name = $1
		ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1`, idOrName))
	if err != nil {
		return Template{}, notFound(err, fmt.Sprintf("template %q", idOrName))
	}
	return t, nil
}

func (s *sqlStore) ListTemplates(ctx context.Context, teamID string) ([]Template, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+templateColumns+` FROM templates WHERE team_id = $1 OR public ORDER BY name`, teamID)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	defer rows.Close()
	var out []Template
	for rows.Next() {
		t, err := scanTemplate(rows)
		if err != nil {
			return nil, fmt.Errorf("list templates: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	return out, nil
}

func (s *sqlStore) SetTemplatePublic(ctx context.Context, id string, public bool) (Template, error) {
	res, err := s.w.ExecContext(ctx, `UPDATE templates SET public = $1, updated_at = $2 WHERE id = $3`, public, s.clock.Now().UnixNano(), id)
	if err := one(res, err, "set template public "+id); err != nil {
		return Template{}, err
	}
	t, err := scanTemplate(s.w.QueryRowContext(ctx, `SELECT `+templateColumns+` FROM templates WHERE id = $1`, id))
	if err != nil {
		return Template{}, notFound(err, "template "+id)
	}
	return t, nil
}

func (s *sqlStore) DeleteTemplate(ctx context.Context, id string) ([]TemplateBuild, []TemplateFile, error) {
	var builds []TemplateBuild
	var files []TemplateFile
	err := s.inTx(ctx, "delete template "+id, func(tx *sql.Tx) error {
		var err error
		if builds, err = listBuilds(ctx, tx, id); err != nil {
			return err
		}
		if files, err = queryFiles(ctx, tx, `WHERE template_id = $1`, id); err != nil {
			return err
		}
		// Children first: SQLite's foreign keys cascade, but only with
		// the pragma on, which a hand-opened database may lack.
		for _, q := range []string{
			`DELETE FROM template_tags WHERE template_id = $1`,
			`DELETE FROM template_build_logs WHERE build_id IN (SELECT id FROM template_builds WHERE template_id = $1)`,
			`DELETE FROM template_builds WHERE template_id = $1`,
			`DELETE FROM template_files WHERE template_id = $1`,
		} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return err
			}
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM templates WHERE id = $1`, id)
		return one(res, err, "template")
	})
	if err != nil {
		return nil, nil, err
	}
	return builds, files, nil
}

// Builds.

const buildColumns = `id, template_id, status, spec, tags, manifest, size_bytes, reason, cpus, memory_mb, host_id,
	created_at, updated_at, finished_at`

func scanBuild(row interface{ Scan(...any) error }) (TemplateBuild, error) {
	var b TemplateBuild
	var spec, tags, reason string
	var created, updated, finished sql.NullInt64
	err := row.Scan(&b.ID, &b.TemplateID, &b.Status, &spec, &tags, &b.Manifest, &b.SizeBytes, &reason, &b.CPUs,
		&b.MemoryMB, &b.HostID, &created, &updated, &finished)
	if err != nil {
		return TemplateBuild{}, err
	}
	if spec != "" {
		b.Spec = json.RawMessage(spec)
	}
	if err := json.Unmarshal([]byte(tags), &b.Tags); err != nil {
		return TemplateBuild{}, fmt.Errorf("decode tags of build %s: %w", b.ID, err)
	}
	if reason != "" {
		b.Reason = &BuildReason{}
		if err := json.Unmarshal([]byte(reason), b.Reason); err != nil {
			return TemplateBuild{}, fmt.Errorf("decode reason of build %s: %w", b.ID, err)
		}
	}
	b.CreatedAt, b.UpdatedAt, b.FinishedAt = fromNanos(created), fromNanos(updated), fromNanos(finished)
	return b, nil
}

func (s *sqlStore) CreateBuild(ctx context.Context, b TemplateBuild) error {
	if b.ID == "" || b.TemplateID == "" || b.Status != BuildWaiting {
		return fmt.Errorf("create build %q: want an id, a template and status waiting: %w", b.ID, errdefs.ErrInvalid)
	}
	tags := b.Tags
	if tags == nil {
		tags = []string{}
	}
	tagsJSON, err := json.Marshal(tags)
	if err != nil {
		return fmt.Errorf("create build %s: %w", b.ID, err)
	}
	now := s.clock.Now().UnixNano()
	_, err = s.w.ExecContext(ctx, `INSERT INTO template_builds (`+buildColumns+`)
		VALUES ($1, $2, $3, '', $4, '', 0, '', $5, $6, '', $7, $8, NULL)`,
		b.ID, b.TemplateID, string(b.Status), string(tagsJSON), b.CPUs, b.MemoryMB, s.orNow(b.CreatedAt).UnixNano(), now)
	if err != nil {
		if s.d.constraint(err) == "foreign_key" {
			return fmt.Errorf("create build %s: template %s: %w", b.ID, b.TemplateID, errdefs.ErrNotFound)
		}
		return s.classify(err, "create build "+b.ID)
	}
	return nil
}

func (s *sqlStore) GetBuild(ctx context.Context, templateID, buildID string) (TemplateBuild, error) {
	return getBuild(ctx, s.r, templateID, buildID)
}

func getBuild(ctx context.Context, q querier, templateID, buildID string) (TemplateBuild, error) {
	b, err := scanBuild(q.QueryRowContext(ctx, `SELECT `+buildColumns+` FROM template_builds WHERE id = $1 AND template_id = $2`,
		buildID, templateID))
	if err != nil {
		return TemplateBuild{}, notFound(err, fmt.Sprintf("build %q of template %s", buildID, templateID))
	}
	return b, nil
}

func (s *sqlStore) ListBuilds(ctx context.Context, templateID string) ([]TemplateBuild, error) {
	return listBuilds(ctx, s.r, templateID)
}

func listBuilds(ctx context.Context, q querier, templateID string) ([]TemplateBuild, error) {
	return queryBuilds(ctx, q, `SELECT `+buildColumns+` FROM template_builds WHERE template_id = $1
		ORDER BY created_at DESC, id DESC`, templateID)
}

func queryBuilds(ctx context.Context, q querier, query string, args ...any) ([]TemplateBuild, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	defer rows.Close()
	var out []TemplateBuild
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, fmt.Errorf("list builds: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list builds: %w", err)
	}
	return out, nil
}

func (s *sqlStore) StartBuild(ctx context.Context, templateID, buildID string, spec json.RawMessage, hostID string, leaseUntil time.Time) (TemplateBuild, error) {
	if !json.Valid(spec) {
		return TemplateBuild{}, fmt.Errorf("start build %s: spec is not JSON: %w", buildID, errdefs.ErrInvalid)
	}
	var b TemplateBuild
	err := s.inTx(ctx, "start build "+buildID, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE template_builds SET status = 'building', spec = $1, host_id = $2,
			lease_until = $3, updated_at = $4 WHERE id = $5 AND template_id = $6 AND status = 'waiting'`,
			string(spec), hostID, leaseUntil.UnixNano(), s.clock.Now().UnixNano(), buildID, templateID)
		if err := one(res, err, "update"); err != nil {
			return s.whyNot(ctx, tx, templateID, buildID, err)
		}
		b, err = getBuild(ctx, tx, templateID, buildID)
		return err
	})
	return b, err
}

// whyNot explains a conditional build UPDATE that touched nothing: the
// build is unknown (ErrNotFound) or in another status (ErrConflict).
func (s *sqlStore) whyNot(ctx context.Context, q querier, templateID, buildID string, err error) error {
	if !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	var status string
	if err := q.QueryRowContext(ctx, `SELECT status FROM template_builds WHERE id = $1 AND template_id = $2`,
		buildID, templateID).Scan(&status); err != nil {
		return notFound(err, "build "+buildID)
	}
	return fmt.Errorf("build %s is %s: %w", buildID, status, errdefs.ErrConflict)
}

func (s *sqlStore) RenewBuildLeases(ctx context.Context, ids []string, until time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	args := []any{until.UnixNano()}
	for _, id := range ids {
		args = append(args, id)
	}
	_, err := s.w.ExecContext(ctx, `UPDATE template_builds SET lease_until = $1
		WHERE status = 'building' AND id IN (`+placeholders(2, len(ids))+`)`, args...)
	if err != nil {
		return fmt.Errorf("renew build leases: %w", err)
	}
	return nil
}

func (s *sqlStore) FinishBuild(ctx context.Context, buildID, manifest string, size int64) (TemplateBuild, error) {
	if !validDigest(manifest) || size < 0 {
		return TemplateBuild{}, fmt.Errorf("finish build %s: manifest %q, size %d: %w", buildID, manifest, size, errdefs.ErrInvalid)
	}
	var b TemplateBuild
	err := s.inTx(ctx, "finish build "+buildID, func(tx *sql.Tx) error {
		tmpl, err := buildTemplate(ctx, tx, buildID)
		if err != nil {
			return err
		}
		now := s.clock.Now().UnixNano()
		res, err := tx.ExecContext(ctx, `UPDATE template_builds SET status = 'ready', manifest = $1, size_bytes = $2,
			lease_until = NULL, updated_at = $3, finished_at = $3 WHERE id = $4 AND status = 'building'`,
			manifest, size, now, buildID)
		if err := one(res, err, "update"); err != nil {
			return s.whyNot(ctx, tx, tmpl, buildID, err)
		}
		if b, err = getBuild(ctx, tx, tmpl, buildID); err != nil {
			return err
		}
		if err := setTags(ctx, tx, tmpl, buildID, b.Tags, now); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE templates SET updated_at = $1 WHERE id = $2`, now, tmpl)
		return err
	})
	return b, err
}

// buildTemplate is the template of a build.
func buildTemplate(ctx context.Context, q querier, buildID string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT template_id FROM template_builds WHERE id = $1`, buildID).Scan(&id)
	if err != nil {
		return "", notFound(err, "build "+buildID)
	}
	return id, nil
}

func (s *sqlStore) FailBuild(ctx context.Context, buildID string, reason BuildReason) (TemplateBuild, error) {
	reasonJSON, err := encodeReason(reason)
	if err != nil {
		return TemplateBuild{}, fmt.Errorf("fail build %s: %w", buildID, err)
	}
	var b TemplateBuild
	err = s.inTx(ctx, "fail build "+buildID, func(tx *sql.Tx) error {
		tmpl, err := buildTemplate(ctx, tx, buildID)
		if err != nil {
			return err
		}
		now := s.clock.Now().UnixNano()
		res, err := tx.ExecContext(ctx, `UPDATE template_builds SET status = 'error', reason = $1, lease_until = NULL,
			updated_at = $2, finished_at = $2 WHERE id = $3 AND status IN ('waiting', 'building')`, reasonJSON, now, buildID)
		if err := one(res, err, "update"); err != nil {
			return s.whyNot(ctx, tx, tmpl, buildID, err)
		}
		b, err = getBuild(ctx, tx, tmpl, buildID)
		return err
	})
	return b, err
}

func encodeReason(r BuildReason) (string, error) {
	if r.LogEntries == nil {
		r.LogEntries = []BuildLogEntry{}
	}
	b, err := json.Marshal(r)
	return string(b), err
}

func (s *sqlStore) FailAbandonedBuilds(ctx context.Context, now time.Time, reason BuildReason) ([]TemplateBuild, error) {
	reasonJSON, err := encodeReason(reason)
	if err != nil {
		return nil, fmt.Errorf("fail abandoned builds: %w", err)
	}
	var failed []TemplateBuild
	err = s.inTx(ctx, "fail abandoned builds", func(tx *sql.Tx) error {
		n := s.orNow(now).UnixNano()
		var err error
		failed, err = queryBuilds(ctx, tx, `SELECT `+buildColumns+` FROM template_builds
			WHERE status = 'building' AND (lease_until IS NULL OR lease_until < $1)`+s.d.forUpdate, n)
		if err != nil {
			return err
		}
		for i := range failed {
			res, err := tx.ExecContext(ctx, `UPDATE template_builds SET status = 'error', reason = $1, lease_until = NULL,
				updated_at = $2, finished_at = $2 WHERE id = $3 AND status = 'building'`, reasonJSON, n, failed[i].ID)
			if err := one(res, err, "update"); err != nil {
				return err
			}
			failed[i].Status, failed[i].Reason = BuildError, &reason
		}
		return nil
	})
	return failed, err
}

func (s *sqlStore) ReadyManifests(ctx context.Context) ([]string, error) {
	return queryStrings(ctx, s.r, `SELECT DISTINCT manifest FROM template_builds WHERE status = 'ready'`)
}

func (s *sqlStore) FileDigests(ctx context.Context) ([]string, error) {
	return queryStrings(ctx, s.r, `SELECT DISTINCT digest FROM template_files`)
}

func queryStrings(ctx context.Context, q querier, query string, args ...any) ([]string, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("query: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// validDigest checks a digest's form: "sha256:" and 64 lowercase hex.
func validDigest(d string) bool {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	return strings.Trim(hex, "0123456789abcdef") == ""
}

// Tags.

func (s *sqlStore) Tags(ctx context.Context, templateID string) ([]TemplateTag, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT template_id, tag, build_id, created_at FROM template_tags
		WHERE template_id = $1 ORDER BY tag`, templateID)
	if err != nil {
		return nil, fmt.Errorf("tags of %s: %w", templateID, err)
	}
	defer rows.Close()
	var out []TemplateTag
	for rows.Next() {
		var t TemplateTag
		var created sql.NullInt64
		if err := rows.Scan(&t.TemplateID, &t.Tag, &t.BuildID, &created); err != nil {
			return nil, fmt.Errorf("tags of %s: %w", templateID, err)
		}
		t.CreatedAt = fromNanos(created)
		out = append(out, t)
	}
	return out, rows.Err()
}

func (s *sqlStore) SetTags(ctx context.Context, templateID, buildID string, tags []string) error {
	return s.inTx(ctx, "set tags of "+templateID, func(tx *sql.Tx) error {
		b, err := getBuild(ctx, tx, templateID, buildID)
		if err != nil {
			return err
		}
		if b.Status != BuildReady {
			return fmt.Errorf("build %s is %s, not ready: %w", buildID, b.Status, errdefs.ErrInvalid)
		}
		return setTags(ctx, tx, templateID, buildID, tags, s.clock.Now().UnixNano())
	})
}

func setTags(ctx context.Context, tx *sql.Tx, templateID, buildID string, tags []string, now int64) error {
	for _, tag := range slices.Compact(slices.Sorted(slices.Values(tags))) {
		if tag == "" {
			return fmt.Errorf("empty tag: %w", errdefs.ErrInvalid)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO template_tags (template_id, tag, build_id, created_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (template_id, tag) DO UPDATE SET build_id = excluded.build_id, created_at = excluded.created_at`,
			templateID, tag, buildID, now)
		if err != nil {
			return fmt.Errorf("tag %q: %w", tag, err)
		}
	}
	return nil
}

func (s *sqlStore) DeleteTags(ctx context.Context, templateID string, tags []string) error {
	return s.inTx(ctx, "delete tags of "+templateID, func(tx *sql.Tx) error {
		for _, tag := range tags {
			res, err := tx.ExecContext(ctx, `DELETE FROM template_tags WHERE template_id = $1 AND tag = $2`, templateID, tag)
			if err := one(res, err, fmt.Sprintf("tag %q", tag)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *sqlStore) TaggedBuild(ctx context.Context, templateID, tag string) (TemplateBuild, error) {
	b, err := scanBuild(s.r.QueryRowContext(ctx, `SELECT `+prefixed("b.", buildColumns)+` FROM template_tags t
		JOIN template_builds b ON b.id = t.build_id WHERE t.template_id = $1 AND t.tag = $2`, templateID, tag))
	if err != nil {
		return TemplateBuild{}, notFound(err, fmt.Sprintf("tag %q of template %s", tag, templateID))
	}
	return b, nil
}

// prefixed qualifies every column of a column list with p.
func prefixed(p, columns string) string {
	parts := strings.Split(columns, ",")
	for i, c := range parts {
		parts[i] = p + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// Files.

func (s *sqlStore) PutTemplateFile(ctx context.Context, f TemplateFile) error {
	if f.TeamID == "" || f.Hash == "" || !validDigest(f.Digest) || f.SizeBytes < 0 {
		return fmt.Errorf("put template file %q: empty team or hash, or bad digest %q: %w", f.Hash, f.Digest, errdefs.ErrInvalid)
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO template_files (team_id, hash, template_id, digest, size_bytes, created_at)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (team_id, hash) DO UPDATE SET template_id = excluded.template_id,
		digest = excluded.digest, size_bytes = excluded.size_bytes, created_at = excluded.created_at`,
		f.TeamID, f.Hash, f.TemplateID, f.Digest, f.SizeBytes, s.orNow(f.CreatedAt).UnixNano())
	if err != nil {
		return s.classify(err, "put template file "+f.Hash)
	}
	return nil
}

func (s *sqlStore) TemplateFile(ctx context.Context, teamID, hash string) (TemplateFile, error) {
	files, err := queryFiles(ctx, s.r, `WHERE team_id = $1 AND hash = $2`, teamID, hash)
	if err == nil && len(files) == 0 {
		err = sql.ErrNoRows
	}
	if err != nil {
		return TemplateFile{}, notFound(err, fmt.Sprintf("template file %q", hash))
	}
	return files[0], nil
}

// queryFiles reads the template_files rows that where selects.
func queryFiles(ctx context.Context, q querier, where string, args ...any) ([]TemplateFile, error) {
	rows, err := q.QueryContext(ctx, `SELECT team_id, hash, template_id, digest, size_bytes, created_at FROM template_files `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("query template files: %w", err)
	}
	defer rows.Close()
	var out []TemplateFile
	for rows.Next() {
		var f TemplateFile
		var created sql.NullInt64
		if err := rows.Scan(&f.TeamID, &f.Hash, &f.TemplateID, &f.Digest, &f.SizeBytes, &created); err != nil {
			return nil, fmt.Errorf("query template files: %w", err)
		}
		f.CreatedAt = fromNanos(created)
		out = append(out, f)
	}
	return out, rows.Err()
}

// Secrets.

func (s *sqlStore) EnsureSecret(ctx context.Context, name string, value []byte) ([]byte, error) {
	if name == "" || len(value) == 0 {
		return nil, fmt.Errorf("ensure secret: empty name or value: %w", errdefs.ErrInvalid)
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO NOTHING`, name, value, s.clock.Now().UnixNano()); err != nil {
		return nil, fmt.Errorf("ensure secret %s: %w", name, err)
	}
	var v []byte
	if err := s.w.QueryRowContext(ctx, `SELECT value FROM server_secrets WHERE name = $1`, name).Scan(&v); err != nil {
		return nil, notFound(err, "secret "+name)
	}
	return v, nil
}
