package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the database's clock, read without a round trip. Times that
// decide state (a sandbox's end, a heartbeat's age, a token's expiry)
// come from it, so replicas whose own clocks disagree still agree on
// them. It is the local clock plus an offset to the database's, measured
// at open and again every clockResync.
type Clock interface {
	Now() time.Time
}

// clockResync is how often the offset to the database's clock is
// measured again; a clock drifts by far less than a millisecond in it.
const clockResync = 30 * time.Second

// dbClock keeps the offset between the local clock and the database's.
type dbClock struct {
	local  func() time.Time // time.Now, or a skewed clock in tests
	read   func(ctx context.Context) (time.Time, error)
	offset atomic.Int64 // database minus local, in nanoseconds
	synced atomic.Int64 // local Unix nanoseconds of the last measurement
	mu     sync.Mutex   // one measurement at a time
}

func (c *dbClock) Now() time.Time {
	now := c.local()
	if c.read == nil { // SQLite: the database's clock is this process's
		return now.UTC()
	}
	if now.UnixNano()-c.synced.Load() >= int64(clockResync) && c.mu.TryLock() {
		go func() {
			defer c.mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = c.sync(ctx) // the last offset stays; the next Now tries again
		}()
	}
	return now.Add(time.Duration(c.offset.Load())).UTC()
}

// sync measures the offset: the database's time against the middle of
// the round trip that read it.
func (c *dbClock) sync(ctx context.Context) error {
	before := c.local()
	db, err := c.read(ctx)
	if err != nil {
		return err
	}
	after := c.local()
	mid := before.Add(after.Sub(before) / 2)
	c.offset.Store(int64(db.Sub(mid)))
	c.synced.Store(after.UnixNano())
	return nil
}

// startClock gives the store its clock. PostgreSQL's is measured now,
// so the first state-deciding time is already the database's.
func (s *sqlStore) startClock(ctx context.Context) error {
	s.clock = &dbClock{local: time.Now}
	if s.d.name == sqliteDialect.name {
		return nil
	}
	s.clock.read = s.readNow
	if err := s.clock.sync(ctx); err != nil {
		return fmt.Errorf("read the database's clock: %w", err)
	}
	return nil
}

// readNow reads the database's clock.
func (s *sqlStore) readNow(ctx context.Context) (time.Time, error) {
	var ns int64
	if err := s.r.QueryRowContext(ctx, `SELECT `+s.d.now).Scan(&ns); err != nil {
		return time.Time{}, err
	}
	return time.Unix(0, ns).UTC(), nil
}

func (s *sqlStore) Now() time.Time { return s.clock.Now() }
