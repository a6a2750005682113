package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"roost.dev/roost/errdefs"
)

//go:embed migrations/*.sql
var migrations embed.FS

// dialect holds everything that differs between the databases. Keep it
// small: every field here is a place where the two can drift apart.
type dialect struct {
	name string
	// forUpdate is appended to the SELECT of a read-modify-write to lock
	// the row. SQLite has no row locks and needs none: it has one writer
	// connection, and its transactions begin IMMEDIATE.
	forUpdate string
	// constraint classifies a constraint violation: "unique",
	// "foreign_key" or "" for anything else.
	constraint func(error) string
	// now is the database's clock as SQL: UTC nanoseconds since the
	// epoch, as times are stored. SQLite's is its process's (the only
	// one using the file).
	now string
	// metadata is, in a SELECT of the sandboxes table, the row's
	// metadata as a JSON object: read with the row, not by a statement
	// of its own.
	metadata string
	// objectOf is, in a SELECT, the JSON object of key and value over the
	// rows of from (a table and its WHERE clause), as text: '{}' when
	// there are none.
	objectOf func(key, value, from string) string
}

var (
	sqliteDialect = dialect{
		name:      "sqlite",
		forUpdate: "",
		now:       "CAST((julianday('now') - 2440587.5) * 86400000000000 AS INTEGER)",
		metadata:  "COALESCE((SELECT json_group_object(key, value) FROM sandbox_metadata WHERE sandbox_id = sandboxes.id), '{}')",
		objectOf: func(key, value, from string) string {
			return "COALESCE((SELECT json_group_object(" + key + ", " + value + ") FROM " + from + "), '{}')"
		},
		constraint: func(err error) string {
			var e *sqlite.Error
			if !errors.As(err, &e) {
				return ""
			}
			switch e.Code() {
			case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
				return "unique"
			case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
				return "foreign_key"
			}
			return ""
		},
	}
	postgresDialect = dialect{
		name:      "postgres",
		forUpdate: " FOR UPDATE",
		now:       "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000000 AS BIGINT)",
		metadata:  "COALESCE((SELECT json_object_agg(key, value) FROM sandbox_metadata WHERE sandbox_id = sandboxes.id)::text, '{}')",
		objectOf: func(key, value, from string) string {
			return "COALESCE((SELECT json_object_agg(" + key + ", " + value + ") FROM " + from + ")::text, '{}')"
		},
		constraint: func(err error) string {
			var e *pgconn.PgError
			if !errors.As(err, &e) {
				return ""
			}
			switch e.Code {
			case "23505":
				return "unique"
			case "23503":
				return "foreign_key"
			}
			return ""
		},
	}
)

// Open connects to the database named by dbURL and migrates it up.
//
//   - "postgres://..." or "postgresql://..." is PostgreSQL (pgx); pass
//     search_path=... in the query to use a schema other than the default.
//   - "sqlite:///abs/path.db", "sqlite://rel/path.db" or a plain file path
//     is SQLite, created (with its directory, mode 0700) if missing, in WAL
//     mode with a busy timeout and foreign keys on. Writes go through one
//     connection, so SQLite never sees two writers from this process;
//     reads use a separate read-only pool and do not wait for writes.
//
// Every statement the store sends is timed (see WithRegisterer).
func Open(ctx context.Context, dbURL string, log *slog.Logger, opts ...Option) (Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newQueryMetrics(opts)
	if err != nil {
		return nil, err
	}
	var st Store
	switch {
	case strings.HasPrefix(dbURL, "postgres://"), strings.HasPrefix(dbURL, "postgresql://"):
		st, err = openPostgres(ctx, dbURL, log, m)
	case strings.HasPrefix(dbURL, "sqlite://"):
		st, err = openSQLite(ctx, strings.TrimPrefix(dbURL, "sqlite://"), log, m)
	case strings.Contains(dbURL, "://"):
		err = fmt.Errorf("open store: unknown database URL scheme in %q: %w", redact(dbURL), errdefs.ErrInvalid)
	default:
		st, err = openSQLite(ctx, dbURL, log, m)
	}
	if err != nil {
		m.unregister() // a later Open may register them
		return nil, err
	}
	return st, nil
}

func openPostgres(ctx context.Context, dbURL string, log *slog.Logger, m *queryMetrics) (Store, error) {
	db, err := openDB("pgx", dbURL, m)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", redact(dbURL), err)
	}
	db.SetMaxOpenConns(20)
	db.SetMaxIdleConns(10)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect postgres %s: %w", redact(dbURL), err)
	}
	// Several control planes may start at once against one database: they
	// serialise migrations with an advisory lock. Its ID is derived from
	// the schema so that separate schemas (tests, tenants) do not wait on
	// each other.
	var schema string
	if err := db.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("read postgres schema: %w", err)
	}
	h := fnv.New64a()
	h.Write([]byte("roost migrations " + schema))
	locker, err := lock.NewPostgresSessionLocker(
		lock.WithLockID(int64(h.Sum64()>>1)),
		lock.WithLockTimeout(1, 300), // poll each second, up to 5 minutes
	)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	if err := migrate(ctx, db, goose.DialectPostgres, log, goose.WithSessionLocker(locker)); err != nil {
		db.Close()
		return nil, err
	}
	st := &sqlStore{w: db, r: db, d: postgresDialect, log: log, bus: &pgBus{url: dbURL, channel: noticeChannel(schema), db: db}}
	if err := st.startClock(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return st, nil
}

func openSQLite(ctx context.Context, path string, log *slog.Logger, m *queryMetrics) (Store, error) {
	if path == "" || path == ":memory:" || strings.ContainsAny(path, "?#") {
		// In-memory databases are per connection, and the store uses two
		// pools; '?' and '#' would be read as URI syntax.
		return nil, fmt.Errorf("open sqlite %q: need a file path without '?' or '#': %w", path, errdefs.ErrInvalid)
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create sqlite directory: %w", err)
		}
	}
	common := "_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)"
	// The writer opens first: it sets WAL mode (persistent in the file)
	// and creates the file. Its transactions begin IMMEDIATE so a
	// read-then-write transaction takes the write lock up front and can
	// never fail to upgrade.
	w, err := openDB("sqlite", "file:"+path+"?"+common+"&_pragma=journal_mode(WAL)&_txlock=immediate", m)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if err := migrate(ctx, w, goose.DialectSQLite3, log); err != nil {
		w.Close()
		return nil, err
	}
	r, err := openDB("sqlite", "file:"+path+"?"+common+"&_pragma=query_only(1)", m)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s for reading: %w", path, err)
	}
	r.SetMaxOpenConns(8)
	r.SetMaxIdleConns(8)
	st := &sqlStore{w: w, r: r, d: sqliteDialect, log: log, bus: &localBus{}}
	if err := st.startClock(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// migrate applies the embedded migrations that db lacks.
func migrate(ctx context.Context, db *sql.DB, d goose.Dialect, log *slog.Logger, opts ...goose.ProviderOption) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	opts = append(opts, goose.WithDisableGlobalRegistry(true))
	p, err := goose.NewProvider(d, db, sub, opts...)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate up: %w", err)
	}
	for _, r := range results {
		log.Info("store migration applied", "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
	}
	return hashHostTokens(ctx, db, log)
}

// redact hides a password in a database URL for errors and logs.
func redact(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "<unparseable database URL>"
	}
	return u.Redacted()
}
