// Package store holds the control plane's state: teams and their API keys,
// hosts (agents) and their one-time registration tokens, and sandboxes.
// The control plane itself is stateless; everything it knows lives here.
//
// One interface, [Store], has one SQL implementation that runs on two
// databases: SQLite (pure Go, modernc.org/sqlite; the embedded default) and
// PostgreSQL (pgx). Both share one set of goose migrations, embedded in the
// binary, and one set of query texts ($1-style placeholders work on both).
// The few places where the dialects differ are the fields of the dialect
// type (open.go): row locking for read-modify-write and the classification
// of constraint errors. [Open] runs the migrations up. PostgreSQL is reached
// through pgx's database/sql driver (github.com/jackc/pgx/v5/stdlib).
//
// Secrets: API keys and registration tokens are stored only as SHA-256
// hashes; the caller hashes ([HashKey]) and the plaintext never reaches the
// database. An agent's bearer token is stored as given, because the control
// plane must present it to the agent.
//
// Errors are the categories of roost.dev/roost/runtime (errdefs.ErrNotFound,
// errdefs.ErrConflict, errdefs.ErrInvalid), re-exported here, so the API maps every layer's
// errors to HTTP statuses in one place.
//
// Quotas: a team's own limits (team_quotas) override the defaults the
// control plane passes in. The store checks them where a race could
// otherwise pass two writes at the limit: CreateSandboxWithin and
// UpdateSandboxWithin sum the team's usage and write in one transaction
// under the team's row lock. It keeps PausedAt on every pause, for the
// control plane's retention.
//
// Templates (templates.go): a team's content templates, their builds
// with each build's log (bounded at MaxBuildLogEntries), the tags that
// point at builds and the files uploaded for COPY steps. Blobs are named
// by digest only; the content itself lives in the control plane's content
// store. A building build holds a lease its control plane renews: one
// whose lease ran out was abandoned (FailAbandonedBuilds).
//
// Operations (operations.go): the teams themselves, operator tokens
// (hashed like API keys), the audit log and sandbox lifecycle events
// (append-only, read in (at, id) order, pruned by age), and webhooks with
// their deliveries. A delivery row is the queue entry and the log at
// once: AppendEvents queues one per subscribed webhook in the event's
// own transaction, and ClaimDeliveries hands out only each webhook's
// oldest pending one, under a lease, so an endpoint gets its events in
// order and two control planes never send one delivery at once.
//
// Metrics (prometheus.go): every statement the store sends is timed, in
// transactions and migrations too, on connections that are the driver's
// own, wrapped; Open's WithRegisterer registers the histogram, labelled by
// the statement's kind and first table as its text reads (bounded by the
// schema, never a value). Stats (stats.go) counts sandboxes by host and
// state for the control plane's metrics.
//
// The store does not schedule, reconcile, enforce timeouts or authenticate
// requests; it records what the control plane decides.
package store
