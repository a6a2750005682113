package store

import (
	"context"
	"encoding/json"
	"time"
)

// Operations is the store's part for running roost for many teams
// (docs/operations.md): the teams themselves, operator tokens, the audit
// log, sandbox lifecycle events, and webhooks with their deliveries.
// Errors: errdefs.ErrNotFound (unknown, or another team's), ErrConflict
// (a duplicate; a team that still holds things), ErrInvalid (a malformed
// argument or cursor).
type Operations interface {
	// ListTeams returns every team, oldest first.
	ListTeams(ctx context.Context) ([]Team, error)
	// DeleteTeam deletes a team with its API keys, quotas, templates and
	// webhooks. A team that still has sandboxes (of any state but
	// stopped) or volumes is a *TeamBusyError (errdefs.ErrConflict):
	// those live on hosts and must be removed there first.
	DeleteTeam(ctx context.Context, id string) error

	// CreateAdminToken stores an operator token; t.Hash is
	// HashKey(plaintext). errdefs.ErrConflict on a duplicate ID or hash.
	CreateAdminToken(ctx context.Context, t AdminToken) error
	// AdminTokenByHash finds the operator token whose Hash equals hash.
	AdminTokenByHash(ctx context.Context, hash []byte) (AdminToken, error)
	// CountAdminTokens says how many operator tokens exist.
	CountAdminTokens(ctx context.Context) (int, error)

	// AppendAudit stores audit entries (a zero At is now).
	AppendAudit(ctx context.Context, entries ...AuditEntry) error
	// ListAudit returns one page of entries, oldest first, and the
	// cursor of the next page ("" on the last).
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, string, error)
	// PruneAudit deletes the entries from before `before` and says how
	// many went.
	PruneAudit(ctx context.Context, before time.Time) (int64, error)

	// AppendEvents stores events and, in the same transaction, queues a
	// delivery of each to every enabled webhook of its team that
	// subscribes to its type; it returns how many deliveries it queued.
	// Events keep the order of the slice when their At are equal only if
	// their IDs sort so: give each a time-ordered ID (NewEventID). Its
	// statements are as many for a batch of events as for one.
	AppendEvents(ctx context.Context, events ...Event) (queued int, err error)
	// ListEvents returns events in (At, ID) order in f's direction.
	ListEvents(ctx context.Context, f EventFilter) ([]Event, error)
	// TeamEventCounts returns the team's events at or after since that
	// created a sandbox or changed how many run, oldest first.
	TeamEventCounts(ctx context.Context, teamID string, since time.Time) ([]EventCount, error)
	// PruneEvents deletes the events from before `before` (and their
	// deliveries) and says how many went.
	PruneEvents(ctx context.Context, before time.Time) (int64, error)

	// CreateWebhook stores a webhook; an unknown team is
	// errdefs.ErrNotFound, a duplicate ID errdefs.ErrConflict.
	CreateWebhook(ctx context.Context, w Webhook) error
	// GetWebhook returns a webhook of the team.
	GetWebhook(ctx context.Context, teamID, id string) (Webhook, error)
	// ListWebhooks returns the team's webhooks, oldest first; teamID ""
	// lists every team's.
	ListWebhooks(ctx context.Context, teamID string) ([]Webhook, error)
	// UpdateWebhook calls fn on the team's webhook and writes what it
	// made of it (all but ID, TeamID and CreatedAt).
	UpdateWebhook(ctx context.Context, teamID, id string, fn func(*Webhook) error) (Webhook, error)
	// DeleteWebhook deletes the team's webhook and its deliveries.
	DeleteWebhook(ctx context.Context, teamID, id string) error

	// ClaimDeliveries leases, until leaseUntil, up to limit deliveries
	// that are due at now: of each webhook, only its oldest pending
	// delivery (so a webhook gets its events in order), and only when no
	// other claim holds it. It returns them with their webhook and event.
	ClaimDeliveries(ctx context.Context, now, leaseUntil time.Time, limit int) ([]DueDelivery, error)
	// RecordAttempt records one attempt's outcome and ends the lease.
	RecordAttempt(ctx context.Context, deliveryID string, a Attempt) error
	// ListDeliveries returns a webhook's deliveries, newest first, at
	// most limit.
	ListDeliveries(ctx context.Context, teamID, webhookID string, limit int) ([]Delivery, error)
}

// TeamBusyError refuses to delete a team that still holds what lives on
// hosts. It wraps errdefs.ErrConflict.
type TeamBusyError struct {
	TeamID    string
	Sandboxes int
	Volumes   int
}

// AdminToken is an operator credential: it acts for every team.
type AdminToken struct {
	ID         string
	Name       string
	Hash       []byte // HashKey(plaintext)
	Prefix     string
	MaskSuffix string
	CreatedAt  time.Time // zero → now
}

// AuditEntry is one thing someone did through the API, and its outcome.
type AuditEntry struct {
	ID     string
	At     time.Time // zero → now
	TeamID string    // the team acted on; "" for the operator's own acts
	// Actor is who: "api_key:ID", "access_token:ID", "admin:ID" or
	// "system" (the control plane's own loops).
	Actor  string
	Action string // e.g. "sandbox.create", "team.delete"
	Target string // the sandbox, key, team or webhook ID acted on
	Source string // the client's address
	Status int    // the HTTP status answered (0 for a loop's act)
	Error  string // why it failed; "" on success
}

// AuditFilter selects audit entries. Zero fields match everything.
type AuditFilter struct {
	TeamID string
	Since  time.Time // at or after
	Until  time.Time // before
	Action string
	// Limit is the page size: default DefaultPageSize, at most MaxPageSize.
	Limit  int
	Cursor string // from the previous page
}

// Event is one state change of a sandbox.
type Event struct {
	ID          string // NewEventID
	At          time.Time
	TeamID      string
	SandboxID   string
	Type        string // EventCreated, ...
	TemplateID  string
	BuildID     string
	ExecutionID string
	// Data is the event's eventData as JSON: the sandbox's metadata,
	// the reason, the run's execution summary.
	Data json.RawMessage
	// RunningDelta is how the event changed its team's count of running
	// sandboxes: -1, 0 or 1.
	RunningDelta int
}

// EventCount is one event as team metrics count it.
type EventCount struct {
	At           time.Time
	Created      bool
	RunningDelta int
}

// Lifecycle event types: E2B's, and roost's own for a sandbox its host
// lost and one that came back.
const (
	EventCreated      = "sandbox.lifecycle.created"
	EventKilled       = "sandbox.lifecycle.killed"
	EventUpdated      = "sandbox.lifecycle.updated"
	EventPaused       = "sandbox.lifecycle.paused"
	EventResumed      = "sandbox.lifecycle.resumed"
	EventCheckpointed = "sandbox.lifecycle.checkpointed"
	EventLost         = "sandbox.lifecycle.lost"
	EventRecovered    = "sandbox.lifecycle.recovered"
)

// EventTypes are every lifecycle event type.
var EventTypes = []string{EventCreated, EventKilled, EventUpdated, EventPaused, EventResumed,
	EventCheckpointed, EventLost, EventRecovered}

// EventFilter selects events. Zero fields match everything.
type EventFilter struct {
	TeamID    string
	SandboxID string
	Types     []string // any of these
	// After is the (At, ID) position to read past, in Asc's direction:
	// the last event a reader holds; zero reads from the start.
	AfterAt time.Time
	AfterID string
	Since   time.Time // at or after
	Asc     bool
	Offset  int
	Limit   int // default DefaultPageSize, at most MaxPageSize
}

// Webhook is a team's endpoint for its lifecycle events.
type Webhook struct {
	ID      string
	TeamID  string
	Name    string
	URL     string
	Secret  string   // signs each delivery; kept as given
	Events  []string // the types it gets
	Enabled bool
	// CreatedAt: zero → now.
	CreatedAt time.Time
}

// Delivery states.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed" // gave up
)

// Delivery is one event's delivery to one webhook: its queue entry and
// its log.
type Delivery struct {
	ID         string
	WebhookID  string
	EventID    string
	EventType  string
	EventAt    time.Time
	State      string
	Attempts   int
	NextAt     time.Time
	LastStatus int // the endpoint's last HTTP status; 0 when none came
	LastError  string
	CreatedAt  time.Time
	DoneAt     time.Time // zero while pending
}

// DueDelivery is a claimed delivery with what sending it needs.
type DueDelivery struct {
	Delivery
	Webhook Webhook
	Event   Event
}

// Attempt is the outcome of one try to deliver.
type Attempt struct {
	At     time.Time
	Status int
	Error  string
	// State is the delivery's state after the attempt; NextAt is when
	// to try again if it is still pending.
	State  string
	NextAt time.Time
}
