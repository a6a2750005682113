package store

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"roost.dev/roost/errdefs"
)

// Build logs on SQL. The build's row counts its entries (log_count) and
// those dropped past MaxBuildLogEntries (log_dropped); appends lock the
// row, so two appenders never number two entries alike.

func (s *sqlStore) AppendBuildLog(ctx context.Context, buildID string, entries []BuildLogEntry) error {
	if len(entries) == 0 {
		return nil
	}
	levels := make([]int, len(entries))
	for i, e := range entries {
		n, err := levelNumber(e.Level)
		if err != nil {
			return fmt.Errorf("append build log %s: %w", buildID, err)
		}
		levels[i] = n
	}
	return s.inTx(ctx, "append build log "+buildID, func(tx *sql.Tx) error {
		var count int
		var dropped int64
		err := tx.QueryRowContext(ctx, `SELECT log_count, log_dropped FROM template_builds WHERE id = $1`+s.d.forUpdate, buildID).
			Scan(&count, &dropped)
		if err != nil {
			return notFound(err, "build")
		}
		for i, e := range entries {
			if count >= MaxBuildLogEntries-1 {
				// The last place is the summary of what was dropped.
				dropped += int64(len(entries) - i)
				if err := putDropped(ctx, tx, buildID, s.orNow(e.Time), dropped); err != nil {
					return err
				}
				count = MaxBuildLogEntries
				break
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO template_build_logs (build_id, seq, time, level, step, message)
				VALUES ($1, $2, $3, $4, $5, $6)`, buildID, count, s.orNow(e.Time).UnixNano(), levels[i], e.Step, e.Message); err != nil {
				return fmt.Errorf("insert entry: %w", err)
			}
			count++
		}
		_, err = tx.ExecContext(ctx, `UPDATE template_builds SET log_count = $1, log_dropped = $2, updated_at = $3 WHERE id = $4`,
			count, dropped, s.clock.Now().UnixNano(), buildID)
		return err
	})
}

// putDropped writes the log's last entry: how many were dropped.
func putDropped(ctx context.Context, tx *sql.Tx, buildID string, at time.Time, dropped int64) error {
	msg := strconv.FormatInt(dropped, 10) + " more log entries were dropped: a build keeps " +
		strconv.Itoa(MaxBuildLogEntries) + " at most"
	_, err := tx.ExecContext(ctx, `INSERT INTO template_build_logs (build_id, seq, time, level, step, message)
		VALUES ($1, $2, $3, $4, '', $5) ON CONFLICT (build_id, seq) DO UPDATE SET time = excluded.time, message = excluded.message`,
		buildID, MaxBuildLogEntries-1, at.UnixNano(), logLevels["warn"], msg)
	if err != nil {
		return fmt.Errorf("summarise dropped entries: %w", err)
	}
	return nil
}

func (s *sqlStore) BuildLog(ctx context.Context, buildID string, f BuildLogFilter) ([]BuildLogEntry, error) {
	if f.Offset < 0 || f.Limit < 0 {
		return nil, fmt.Errorf("build log %s: negative offset or limit: %w", buildID, errdefs.ErrInvalid)
	}
	where, args := `build_id = $1`, []any{buildID}
	if f.MinLevel != "" {
		n, err := levelNumber(f.MinLevel)
		if err != nil {
			return nil, fmt.Errorf("build log %s: %w", buildID, err)
		}
		args = append(args, n)
		where += ` AND level >= $` + strconv.Itoa(len(args))
	}
	order, cmp := "ASC", ">="
	if f.Backward {
		order, cmp = "DESC", "<="
	}
	if !f.Cursor.IsZero() {
		args = append(args, f.Cursor.UnixNano())
		where += ` AND time ` + cmp + ` $` + strconv.Itoa(len(args))
	}
	query := `SELECT time, level, step, message FROM template_build_logs WHERE ` + where +
		` ORDER BY seq ` + order + limitOffset(f.Limit, f.Offset)
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("build log %s: %w", buildID, err)
	}
	defer rows.Close()
	out := []BuildLogEntry{}
	for rows.Next() {
		var e BuildLogEntry
		var t sql.NullInt64
		var level int
		if err := rows.Scan(&t, &level, &e.Step, &e.Message); err != nil {
			return nil, fmt.Errorf("build log %s: %w", buildID, err)
		}
		e.Time = fromNanos(t)
		if level > 0 && level < len(levelNames) {
			e.Level = levelNames[level]
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// limitOffset renders LIMIT and OFFSET (SQLite takes an OFFSET only
// after a LIMIT); limit 0 is no limit.
func limitOffset(limit, offset int) string {
	l := int64(limit)
	if l == 0 {
		l = 1 << 62
	}
	return ` LIMIT ` + strconv.FormatInt(l, 10) + ` OFFSET ` + strconv.Itoa(offset)
}
