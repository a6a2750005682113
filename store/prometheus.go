package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Option configures Open.
type Option func(*options)

type options struct {
	registerer prometheus.Registerer
	sent       func(query string, args []any)
}

// WithRegisterer registers the store's metrics in r: how long each
// statement sent to the database took, by kind and table
// (roost_store_query_duration_seconds, docs/prometheus.md). Open fails
// when r already has them (one store per registry). Without it, nobody
// sees the timings.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) { o.registerer = r }
}

// WithStatements calls sent with the text and arguments of every
// statement the store sends (through Exec or Query), before it goes: for
// tests that look at what the store asks the database, such as the scale
// benchmark, which EXPLAINs each. sent must be safe for concurrent use
// and quick.
func WithStatements(sent func(query string, args []any)) Option {
	return func(o *options) { o.sent = sent }
}

// queryMetrics times the statements of one store's connections.
type queryMetrics struct {
	registerer prometheus.Registerer // nil: registered nowhere
	duration   *prometheus.HistogramVec
	sent       func(query string, args []any) // nil: none (WithStatements)
}

func newQueryMetrics(opts []Option) (*queryMetrics, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	m := &queryMetrics{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "roost_store_query_duration_seconds",
		Help: "Time from sending a statement to the database to its answer (a query's first row), by kind (select, insert, update, delete, begin, commit, rollback, other) and the table it names first (not a subquery's).",
		// 250 µs to 16 s.
		Buckets: prometheus.ExponentialBuckets(0.00025, 4, 9),
	}, []string{"op", "table"}), registerer: o.registerer, sent: o.sent}
	if m.registerer != nil {
		if err := m.registerer.Register(m.duration); err != nil {
			return nil, fmt.Errorf("register store metrics: %w", err)
		}
	}
	return m, nil
}

// unregister takes the metrics out of their registry.
func (m *queryMetrics) unregister() {
	if m.registerer != nil {
		m.registerer.Unregister(m.duration)
	}
}

// observe records a statement that began at start; ErrSkip is not an
// answer (database/sql asks again another way).
func (m *queryMetrics) observe(op, table string, start time.Time, err error) {
	if errors.Is(err, driver.ErrSkip) {
		return
	}
	m.duration.WithLabelValues(op, table).Observe(time.Since(start).Seconds())
}

// send tells WithStatements' function of a statement about to go.
func (m *queryMetrics) send(query string, args []driver.NamedValue) {
	if m.sent == nil {
		return
	}
	vals := make([]any, len(args))
	for i, a := range args {
		vals[i] = a.Value
	}
	m.sent(query, vals)
}

func (m *queryMetrics) observeQuery(query string, start time.Time, err error) {
	op, table := statementLabels(query)
	m.observe(op, table, start, err)
}

// openDB is sql.Open of driverName with every statement of its
// connections timed into m. The connections are the driver's own,
// wrapped: database/sql sees the same abilities (context, transactions,
// argument checks, session reset) and the driver gets the same calls.
func openDB(driverName, dsn string, m *queryMetrics) (*sql.DB, error) {
	probe, err := sql.Open(driverName, dsn)
	if err != nil {
		return nil, err
	}
	d := probe.Driver()
	_ = probe.Close() // sql.Open connects to nothing
	var c driver.Connector = dsnConnector{d: d, dsn: dsn}
	if dc, ok := d.(driver.DriverContext); ok {
		if c, err = dc.OpenConnector(dsn); err != nil {
			return nil, err
		}
	}
	return sql.OpenDB(timedConnector{Connector: c, m: m}), nil
}

// dsnConnector is a driver without its own Connector, as sql.Open uses it.
type dsnConnector struct {
	d   driver.Driver
	dsn string
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.d.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.d }

// timedConnector makes timedConns.
type timedConnector struct {
	driver.Connector
	m *queryMetrics
}

func (c timedConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &timedConn{Conn: conn, m: c.m}, nil
}

// Close closes the driver's connector if it holds anything (sql.DB.Close
// calls it).
func (c timedConnector) Close() error {
	if cl, ok := c.Connector.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// timedConn is a driver connection whose statements and transactions are
// timed. Each optional interface falls back to what database/sql does
// when a driver lacks it.
type timedConn struct {
	driver.Conn
	m *queryMetrics
}

var (
	_ driver.ExecerContext      = (*timedConn)(nil)
	_ driver.QueryerContext     = (*timedConn)(nil)
	_ driver.ConnPrepareContext = (*timedConn)(nil)
	_ driver.ConnBeginTx        = (*timedConn)(nil)
	_ driver.Pinger             = (*timedConn)(nil)
	_ driver.SessionResetter    = (*timedConn)(nil)
	_ driver.Validator          = (*timedConn)(nil)
	_ driver.NamedValueChecker  = (*timedConn)(nil)
)

func (c *timedConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := c.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip // database/sql prepares the statement instead
	}
	c.m.send(query, args)
	start := time.Now()
	res, err := e.ExecContext(ctx, query, args)
	c.m.observeQuery(query, start, err)
	return res, err
}

func (c *timedConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := c.Conn.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	c.m.send(query, args)
	start := time.Now()
	rows, err := q.QueryContext(ctx, query, args)
	c.m.observeQuery(query, start, err)
	return rows, err
}

func (c *timedConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if p, ok := c.Conn.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.Conn.Prepare(query)
}

func (c *timedConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	start := time.Now()
	var tx driver.Tx
	var err error
	if b, ok := c.Conn.(driver.ConnBeginTx); ok {
		tx, err = b.BeginTx(ctx, opts)
	} else if opts.Isolation != driver.IsolationLevel(sql.LevelDefault) || opts.ReadOnly {
		return nil, errors.New("sql: driver does not support non-default isolation level or read-only transactions")
	} else {
		//lint:ignore SA1019 the fallback database/sql itself uses
		tx, err = c.Conn.Begin()
	}
	// SQLite's transactions begin IMMEDIATE: this is the wait for the
	// write lock.
	c.m.observe("begin", "", start, err)
	if err != nil {
		return nil, err
	}
	return timedTx{tx: tx, m: c.m}, nil
}

func (c *timedConn) Ping(ctx context.Context) error {
	if p, ok := c.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *timedConn) ResetSession(ctx context.Context) error {
	if r, ok := c.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *timedConn) IsValid() bool {
	if v, ok := c.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (c *timedConn) CheckNamedValue(nv *driver.NamedValue) error {
	if ch, ok := c.Conn.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(nv)
	}
	return driver.ErrSkip // database/sql's default conversion
}

// timedTx times a transaction's end.
type timedTx struct {
	tx driver.Tx
	m  *queryMetrics
}

func (t timedTx) Commit() error {
	start := time.Now()
	err := t.tx.Commit()
	t.m.observe("commit", "", start, err)
	return err
}

func (t timedTx) Rollback() error {
	start := time.Now()
	err := t.tx.Rollback()
	t.m.observe("rollback", "", start, err)
	return err
}

// statementLabels names a statement for its metric: its kind (select,
// insert, update, delete, or other) and the table it names first (after
// FROM, INTO or UPDATE, outside parentheses: not a subquery's; "" when
// none, or when the name is not a plain identifier). Both come from the store's own query texts and a
// migration's, so there are few; never from a value, which is always a
// placeholder.
func statementLabels(query string) (op, table string) {
	w := words{s: query}
	op = w.next()
	var after string
	switch op {
	case "select":
		after = "from"
	case "insert":
		after = "into"
	case "update":
		return op, identifier(w.next())
	case "delete":
		after = "from"
	default:
		return "other", ""
	}
	for word := w.next(); word != ""; word = w.next() {
		if word == after && w.depth == 0 {
			return op, identifier(w.next())
		}
	}
	return op, ""
}

// identifier is name if it is a plain identifier of at most 63
// characters, else "".
func identifier(name string) string {
	if name == "" || len(name) > 63 || name[0] >= '0' && name[0] <= '9' {
		return ""
	}
	return name
}

// words scans a statement's words, lower-cased: runs of letters, digits
// and underscores outside string literals and quoted identifiers.
type words struct {
	s string
	i int
	// depth is how many parentheses are open before the last word.
	depth int
}

func (w *words) next() string {
	for w.i < len(w.s) {
		c := w.s[w.i]
		switch {
		case c == '\'' || c == '"':
			// A literal or quoted name: skip it ('' and "" escape the quote).
			w.i++
			for w.i < len(w.s) && w.s[w.i] != c {
				w.i++
			}
			w.i++
		case c == '(':
			w.depth++
			w.i++
		case c == ')':
			w.depth--
			w.i++
		case isWordByte(c):
			start := w.i
			for w.i < len(w.s) && isWordByte(w.s[w.i]) {
				w.i++
			}
			return lower(w.s[start:w.i])
		default:
			w.i++
		}
	}
	return ""
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// lower is strings.ToLower for ASCII words, without allocating when the
// word is lower case already (every table name).
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
