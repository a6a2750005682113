package store

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"time"
)

// Errors wrap errdefs categories: ErrNotFound (unknown, another team's,
// expired or used), ErrConflict (the ID or key hash is taken) and
// ErrInvalid (a malformed argument, e.g. a bad page token).

// Store is the control plane's state. All methods are safe for concurrent
// use by many goroutines and by several control-plane processes sharing one
// PostgreSQL database. Times are stored as UTC with nanosecond precision and
// returned in UTC.
type Store interface {
	// Close releases the database connections.
	Close() error

	CreateTeam(ctx context.Context, t Team) error // errdefs.ErrConflict on a duplicate ID
	GetTeam(ctx context.Context, id string) (Team, error)

	// TeamQuota returns the limits set for the team itself (empty when it
	// takes every default); an unknown team is errdefs.ErrNotFound.
	TeamQuota(ctx context.Context, teamID string) (Quota, error)
	// SetTeamQuota replaces the team's own limits with q (empty: the
	// defaults for all); errdefs.ErrInvalid for an unknown limit or a
	// negative value. Sandboxes the team already has are not touched.
	SetTeamQuota(ctx context.Context, teamID string, q Quota) error
	// TeamUsage sums what the team's sandboxes hold, as quotas count it.
	TeamUsage(ctx context.Context, teamID string) (Usage, error)

	// CreateAPIKey stores a key; k.Hash is HashKey(plaintext). errdefs.ErrConflict
	// on a duplicate ID or hash, errdefs.ErrNotFound when the team does not exist.
	CreateAPIKey(ctx context.Context, k APIKey) error
	// APIKeyByHash finds the key whose Hash equals hash (authentication).
	APIKeyByHash(ctx context.Context, hash []byte) (APIKey, error)
	// ListAPIKeys lists a team's credentials of one kind, oldest first.
	ListAPIKeys(ctx context.Context, teamID string, kind KeyKind) ([]APIKey, error)
	// RenameAPIKey renames a team's credential of kind; another team's or
	// another kind's is errdefs.ErrNotFound.
	RenameAPIKey(ctx context.Context, teamID string, kind KeyKind, id, name string) error
	// DeleteAPIKey deletes a team's credential of kind; another team's or
	// another kind's is errdefs.ErrNotFound.
	DeleteAPIKey(ctx context.Context, teamID string, kind KeyKind, id string) error
	TouchAPIKey(ctx context.Context, id string, at time.Time) error // records LastUsedAt

	// CreateRegistrationToken stores a one-time agent registration token by
	// its hash.
	CreateRegistrationToken(ctx context.Context, hash []byte, expires time.Time) error
	// ConsumeRegistrationToken marks the token used. It succeeds exactly
	// once per token, however many callers race; an unknown, expired or
	// already used token is errdefs.ErrNotFound.
	ConsumeRegistrationToken(ctx context.Context, hash []byte, now time.Time) error
	// EnsureClusterCA stores the agent link's CA when none is stored and
	// returns the stored one: replicas starting at once all get the CA
	// the first of them stored.
	EnsureClusterCA(ctx context.Context, certPEM, keyPEM []byte) (storedCert, storedKey []byte, err error)

	// UpsertHost inserts a host or replaces its fields; on an update
	// RegisteredAt keeps its first value and Usage/LastHeartbeat are kept.
	UpsertHost(ctx context.Context, h Host) error
	GetHost(ctx context.Context, id string) (Host, error)
	ListHosts(ctx context.Context) ([]Host, error) // ordered by ID
	// Heartbeat records that the host was alive at `at` with this usage.
	Heartbeat(ctx context.Context, id string, at time.Time, usage HostUsage) error
	SetHostState(ctx context.Context, id string, state HostState) error
	// SetHostCordoned marks a host cordoned (no new sandboxes) or not.
	SetHostCordoned(ctx context.Context, id string, cordoned bool) error
	// DeleteHost removes a host; errdefs.ErrConflict while the store
	// holds sandboxes of it that are starting, running, paused or lost,
	// errdefs.ErrNotFound for an unknown host.
	DeleteHost(ctx context.Context, id string) error

	// CreateSandbox stores a new sandbox with its metadata. errdefs.ErrConflict on
	// a duplicate ID, errdefs.ErrNotFound when the team does not exist. A zero
	// CreatedAt/UpdatedAt is set to now.
	CreateSandbox(ctx context.Context, s Sandbox) error
	// CreateSandboxWithin is CreateSandbox if the team's quota (defaults
	// under the team's own limits) still holds with s; otherwise it
	// stores nothing and returns a *QuotaError (errdefs.ErrExhausted).
	// Check and insert are one transaction that excludes the team's
	// other quota-checked writes: of creates racing for the last of a
	// limit, exactly one gets it.
	CreateSandboxWithin(ctx context.Context, s Sandbox, defaults Quota) error
	// GetSandbox returns a sandbox of the team; another team's is errdefs.ErrNotFound.
	GetSandbox(ctx context.Context, teamID, id string) (Sandbox, error)
	// LookupSandbox returns a sandbox whatever its team (the proxy and the
	// reconciler use it; never expose it to an API caller unscoped).
	LookupSandbox(ctx context.Context, id string) (Sandbox, error)
	// ListSandboxes returns one page, ordered by (CreatedAt, ID) in
	// f.Order's direction, and the token of the next page ("" on the
	// last). The token is opaque and stays valid while rows change: it
	// names a position, not an offset. A malformed token, or one of the
	// other direction, is errdefs.ErrInvalid.
	ListSandboxes(ctx context.Context, f SandboxFilter) ([]Sandbox, string, error)
	// CountSandboxes counts the sandboxes f selects on every page (its
	// Order, Limit and NextToken are ignored).
	CountSandboxes(ctx context.Context, f SandboxFilter) (int, error)
	// SandboxStatuses returns the statuses of all of host hostID's
	// sandboxes in one of states, in no order: what comparing the store
	// with the host's own listing needs, read in one statement and none
	// of the rest of the records.
	SandboxStatuses(ctx context.Context, hostID string, states ...SandboxState) ([]SandboxStatus, error)
	// UpdateSandbox reads the sandbox, calls fn on it and writes the
	// result, as one atomic change: concurrent updates never lose a
	// write (the write is made only if the sandbox is unchanged since the
	// read, or under the row's lock). An error from fn aborts and is
	// returned as is. fn may be called more than once, on the sandbox as
	// read again each time, and may run while a write lock is held: it
	// must change nothing but its argument, be quick and not call the
	// Store. fn must not change the ID or the team. UpdatedAt is set to
	// now, or just after its last value when the clock is behind it.
	UpdateSandbox(ctx context.Context, id string, fn func(*Sandbox) error) (Sandbox, error)
	// SandboxStarted records that the sandbox, starting, has started
	// with the sizes and at the time its agent gave (Started): it is
	// running from then on. It is one statement, where UpdateSandbox
	// reads first, because every create ends with it. A sandbox no longer
	// starting is errdefs.ErrConflict, a missing one errdefs.ErrNotFound;
	// UpdatedAt moves as UpdateSandbox moves it.
	SandboxStarted(ctx context.Context, id string, st Started) (Sandbox, error)
	// UpdateSandboxWithin is UpdateSandbox that also refuses, with a
	// *QuotaError, a change that raises the team's use of a limit past
	// its quota (a resume: paused → running), as CreateSandboxWithin
	// does. A change that raises no use always passes, so a team over a
	// lowered limit can still stop or pause what it has.
	UpdateSandboxWithin(ctx context.Context, id string, defaults Quota, fn func(*Sandbox) error) (Sandbox, error)
	DeleteSandbox(ctx context.Context, id string) error
	// DeleteSandboxes deletes those of ids that exist, in one statement,
	// and says how many went.
	DeleteSandboxes(ctx context.Context, ids ...string) (int, error)
	// ExpiredSandboxes returns the sandboxes whose EndAt is at or before
	// now and whose state is one of states (any state when none are
	// given), soonest-expired first.
	ExpiredSandboxes(ctx context.Context, now time.Time, states ...SandboxState) ([]Sandbox, error)
	// StopExpired claims sandboxes to be destroyed at their timeout: at
	// most limit running ones whose EndAt is at or before now and that
	// do not pause then (AutoPause), soonest-expired first, become
	// stopped in one statement, each only if it is so still when it is
	// written (a timeout moved meanwhile wins). It returns the claimed
	// records, stopped.
	StopExpired(ctx context.Context, now time.Time, limit int) ([]Sandbox, error)

	// Templates: content templates, their builds, tags and files.
	Templates
	// Volumes: teams' volumes and the mounts sandboxes hold of them.
	Volumes
	// Stats: counts for the control plane's metrics.
	Stats
	// Operations: teams, operator tokens, audit log, events, webhooks.
	Operations
	// Leases: which control plane runs the work that must run once.
	Leases
	// Notices: what changed, told to every control plane on the store.
	Notices
	// Clock: the database's time, for every time that decides state.
	Clock
}

// HashKey is how API keys and registration tokens are stored: SHA-256 of
// the plaintext.
func HashKey(plaintext string) []byte {
	h := sha256.Sum256([]byte(plaintext))
	return h[:]
}

// Team owns API keys and sandboxes.
type Team struct {
	ID        string
	Name      string
	CreatedAt time.Time // zero → now
}

// APIKey is a credential that authenticates API calls for one team: an
// API key (X-API-Key) or an access token (Authorization: Bearer), as Kind
// says.
type APIKey struct {
	ID     string
	TeamID string
	Kind   KeyKind // zero → KindAPIKey
	Name   string
	Hash   []byte // HashKey(plaintext); the plaintext is never stored
	// Prefix and MaskSuffix are the first and last characters of the
	// plaintext, shown to humans so they can tell keys apart. MaskSuffix
	// is empty for keys made before it was recorded.
	Prefix     string
	MaskSuffix string
	CreatedAt  time.Time  // zero → now
	LastUsedAt *time.Time // nil until first used
}

// KeyKind is the kind of a credential: which header it is accepted in.
type KeyKind string

const (
	KindAPIKey      KeyKind = "api_key"      // X-API-Key
	KindAccessToken KeyKind = "access_token" // Authorization: Bearer
	// KindAdmin marks an operator token acting for a team (X-Admin-Token
	// and X-Team-ID); the store keeps no API key of this kind.
	KindAdmin KeyKind = "admin"
)

// HostState is a host's scheduling state.
type HostState string

const (
	HostReady    HostState = "ready"    // accepts new sandboxes
	HostDraining HostState = "draining" // keeps its sandboxes, takes no new ones
	HostDown     HostState = "down"     // stopped heartbeating
)

// Host is a registered agent.
type Host struct {
	ID   string
	Name string
	URL  string // the agent's base URL
	// TokenHash is HashKey of the token the agent presents in its
	// heartbeats; nil for a host that does not heartbeat (roost up's).
	TokenHash    []byte
	Runtime      string
	Capabilities json.RawMessage // the runtime's capabilities as JSON; may be nil
	CPUs         int
	MemoryMB     int64
	MaxSandboxes int
	State        HostState
	RegisteredAt time.Time // zero → now; kept on later upserts
	// LastHeartbeat is zero until the first heartbeat.
	LastHeartbeat time.Time
	// Cordoned hosts take no new sandboxes (SetHostCordoned); read-only
	// here: UpsertHost leaves it as it is.
	Cordoned bool
	Usage    HostUsage
	// VolumeDirID is the ID of the host's volume directory: hosts with
	// the same one share it, and may mount each other's volumes; "" when
	// the host reported none.
	VolumeDirID string
}

// HostUsage is what a host reports in a heartbeat.
type HostUsage struct {
	Sandboxes int
	VCPUs     int
	MemoryMB  int64
}

// SandboxState is a sandbox's lifecycle state as the control plane knows it.
type SandboxState string

const (
	SandboxStarting SandboxState = "starting"
	SandboxRunning  SandboxState = "running"
	SandboxPaused   SandboxState = "paused"
	SandboxStopped  SandboxState = "stopped"
	SandboxLost     SandboxState = "lost"  // its host lost it or went down
	SandboxError    SandboxState = "error" // see Sandbox.Error
)

// Sandbox is one sandbox's record.
type Sandbox struct {
	ID         string
	TeamID     string
	HostID     string
	TemplateID string
	Alias      string
	ClientID   string
	State      SandboxState
	VCPUs      int
	MemoryMB   int64
	DiskMB     int64
	// Metadata is the user's key/value labels; ListSandboxes filters on it.
	// Never nil when read back.
	Metadata map[string]string
	// EnvVars are the creation-time environment, kept to resume the
	// sandbox. Never nil when read back.
	EnvVars            map[string]string
	EnvdVersion        string
	EnvdAccessToken    string
	TrafficAccessToken string
	AllowPublicTraffic bool
	AllowInternet      bool
	AutoPause          bool
	// AutoResume: traffic to the sandbox while paused resumes it (only
	// meaningful with AutoPause).
	AutoResume bool
	// AutoPauseFilesystem: the pause on timeout keeps only the sandbox's
	// files (E2B's autoPauseMemory: false; only meaningful with
	// AutoPause).
	AutoPauseFilesystem bool
	TimeoutSecs         int64
	StartedAt           time.Time // zero until started
	EndAt               time.Time // when the timeout fires; zero = never
	CreatedAt           time.Time // zero → now
	UpdatedAt           time.Time // set by the store
	Error               string    // why State is SandboxError
	// PausedAt is when the sandbox was paused; zero unless paused. The
	// store keeps it: an update that pauses the sandbox sets it, one that
	// leaves paused clears it.
	PausedAt time.Time
}

// SandboxStatus is where a sandbox is in its life: its record's state
// and times, without the rest.
type SandboxStatus struct {
	ID        string
	State     SandboxState
	EndAt     time.Time // zero = never
	CreatedAt time.Time
	UpdatedAt time.Time
}

// SandboxFilter selects sandboxes for ListSandboxes. Zero fields match
// everything.
type SandboxFilter struct {
	TeamID   string
	States   []SandboxState    // any of these
	Metadata map[string]string // all of these pairs
	HostID   string
	// StartedAfter keeps sandboxes started at or after it; zero keeps all
	// (and so also those not started yet).
	StartedAfter time.Time
	// Template keeps sandboxes whose TemplateID or Alias is it.
	Template string
	// Order is the direction of the (CreatedAt, ID) order; zero is
	// oldest first.
	Order Order
	// Limit is the page size: default 100, at most 1000.
	Limit int
	// NextToken is from the previous page of the same Order; "" for the
	// first. A token names a position, not an offset, so it stays valid
	// while sandboxes change state, are created or are deleted.
	NextToken string
}

// Order is the direction of a list.
type Order int

const (
	OldestFirst Order = iota
	NewestFirst
)

// Page size bounds for ListSandboxes.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)
