package store

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Notices tell the control planes sharing a store what changed, so that
// what each keeps in memory (credentials, the proxy's routes) is dropped
// everywhere at once rather than when it expires. On PostgreSQL they are
// LISTEN/NOTIFY on a channel of the store's schema; on SQLite, whose file
// one control plane uses, they go to this store's listeners.
type Notices interface {
	// Announce sends notices to every control plane listening on the
	// store, this one included, once the statements before it have
	// committed; several in one statement.
	Announce(ctx context.Context, notices ...Notice) error
	// Listen calls fn with each notice until ctx ends. Notices that may
	// have been missed (the connection to PostgreSQL was lost; it is
	// made again) are told as one notice of TopicAll, also sent when
	// Listen starts.
	Listen(ctx context.Context, fn func(Notice))
}

// Notice says that what Key names in Topic changed.
type Notice struct {
	Topic string
	Key   string
}

// TopicAll is a notice that anything may have changed.
const TopicAll = "all"

// noticeBus is how a store's notices travel.
type noticeBus interface {
	announce(ctx context.Context, payloads ...string) error
	// listen calls ready once notices are being heard, then fn with each
	// until ctx ends or the bus fails.
	listen(ctx context.Context, ready func(), fn func(payload string)) error
}

func (s *sqlStore) Announce(ctx context.Context, notices ...Notice) error {
	if len(notices) == 0 {
		return nil
	}
	payloads := make([]string, len(notices))
	for i, n := range notices {
		if n.Topic == "" || strings.Contains(n.Topic, ":") {
			return fmt.Errorf("announce: bad topic %q", n.Topic)
		}
		payloads[i] = n.Topic + ":" + n.Key
	}
	if err := s.bus.announce(ctx, payloads...); err != nil {
		return fmt.Errorf("announce %s %s (of %d): %w", notices[0].Topic, notices[0].Key, len(notices), err)
	}
	return nil
}

// noticeRetry is how long Listen waits before connecting again.
const noticeRetry = time.Second

func (s *sqlStore) Listen(ctx context.Context, fn func(Notice)) {
	for ctx.Err() == nil {
		err := s.bus.listen(ctx, func() { fn(Notice{Topic: TopicAll}) }, func(p string) {
			topic, key, _ := strings.Cut(p, ":")
			fn(Notice{Topic: topic, Key: key})
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("store notices interrupted; listening again", "err", err, "retry_in", noticeRetry)
		select {
		case <-ctx.Done():
		case <-time.After(noticeRetry):
		}
	}
}

// localBus delivers notices to the listeners in this process (SQLite).
type localBus struct {
	mu        sync.Mutex
	listeners map[*func(string)]struct{}
}

func (b *localBus) announce(_ context.Context, payloads ...string) error {
	b.mu.Lock()
	fns := make([]func(string), 0, len(b.listeners))
	for fn := range b.listeners {
		fns = append(fns, *fn)
	}
	b.mu.Unlock()
	for _, p := range payloads {
		for _, fn := range fns {
			fn(p)
		}
	}
	return nil
}

func (b *localBus) listen(ctx context.Context, ready func(), fn func(string)) error {
	b.mu.Lock()
	if b.listeners == nil {
		b.listeners = map[*func(string)]struct{}{}
	}
	b.listeners[&fn] = struct{}{}
	b.mu.Unlock()
	ready()
	<-ctx.Done()
	b.mu.Lock()
	delete(b.listeners, &fn)
	b.mu.Unlock()
	return ctx.Err()
}

// pgBus is LISTEN/NOTIFY on a channel named for the store's schema, so
// stores in separate schemas of one database do not hear each other.
type pgBus struct {
	url     string
	channel string
	db      *sql.DB // the store's pool, which NOTIFYs
}

func noticeChannel(schema string) string {
	h := fnv.New64a()
	h.Write([]byte(schema))
	return fmt.Sprintf("roost_notices_%x", h.Sum64())
}

func (b *pgBus) announce(ctx context.Context, payloads ...string) error {
	calls := make([]string, len(payloads))
	args := make([]any, 0, 1+len(payloads))
	args = append(args, b.channel)
	for i, p := range payloads {
		calls[i] = "pg_notify($1, $" + strconv.Itoa(i+2) + ")"
		args = append(args, p)
	}
	_, err := b.db.ExecContext(ctx, `SELECT `+strings.Join(calls, ", "), args...)
	return err
}

// listen holds a connection of its own, LISTENing, until ctx ends or the
// connection fails.
func (b *pgBus) listen(ctx context.Context, ready func(), fn func(string)) error {
	conn, err := pgx.Connect(ctx, b.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{b.channel}.Sanitize()); err != nil {
		return err
	}
	ready()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		fn(n.Payload)
	}
}
