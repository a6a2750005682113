package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"roost.dev/roost/errdefs"
)

// Leases elect one holder among control-plane replicas for work that
// must run once. Expiry is judged by the database's clock alone, so
// replicas whose clocks disagree still agree on who holds a lease.
type Leases interface {
	// HoldLease takes lease name for holder, or renews it, for ttl from
	// now by the database's clock: true when holder has it now, false
	// when another holder's lease has not expired.
	HoldLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error)
	// ReleaseLease gives lease name up if holder has it, so that another
	// may take it at once.
	ReleaseLease(ctx context.Context, name, holder string) error
	// LeaseHolder says who holds lease name and until when by the
	// database's clock; "" when no one does (never held, released or
	// expired).
	LeaseHolder(ctx context.Context, name string) (holder string, until time.Time, err error)
}

func (s *sqlStore) HoldLease(ctx context.Context, name, holder string, ttl time.Duration) (bool, error) {
	if name == "" || holder == "" || ttl <= 0 {
		return false, fmt.Errorf("hold lease %q for %q for %v: %w", name, holder, ttl, errdefs.ErrInvalid)
	}
	now := s.d.now
	res, err := s.w.ExecContext(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, `+now+` + $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE leases.holder = excluded.holder OR leases.expires_at <= `+now, name, holder, ttl.Nanoseconds())
	if err != nil {
		return false, fmt.Errorf("hold lease %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("hold lease %s: %w", name, err)
	}
	return n == 1, nil
}

func (s *sqlStore) ReleaseLease(ctx context.Context, name, holder string) error {
	if _, err := s.w.ExecContext(ctx, `DELETE FROM leases WHERE name = $1 AND holder = $2`, name, holder); err != nil {
		return fmt.Errorf("release lease %s: %w", name, err)
	}
	return nil
}

func (s *sqlStore) LeaseHolder(ctx context.Context, name string) (string, time.Time, error) {
	var holder string
	var until int64
	err := s.r.QueryRowContext(ctx, `SELECT holder, expires_at FROM leases WHERE name = $1 AND expires_at > `+s.d.now, name).Scan(&holder, &until)
	if errors.Is(err, sql.ErrNoRows) {
		return "", time.Time{}, nil
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("lease %s: %w", name, err)
	}
	return holder, time.Unix(0, until).UTC(), nil
}
