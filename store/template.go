package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"roost.dev/roost/errdefs"
)

// Templates is the store's part for content templates (docs/templates.md):
// templates, their builds and build logs, tags and uploaded files. Digests
// are strings ("sha256:<hex>"): the store checks their form, not content.
// Errors: errdefs.ErrNotFound (unknown), ErrConflict (a name or ID taken),
// ErrInvalid (a malformed argument).
type Templates interface {
	// CreateTemplate stores a new template; a taken ID or name is
	// errdefs.ErrConflict, an unknown team errdefs.ErrNotFound.
	CreateTemplate(ctx context.Context, t Template) error
	// GetTemplate finds a template by ID, or else by name, whatever its
	// team: the caller decides who may see it.
	GetTemplate(ctx context.Context, idOrName string) (Template, error)
	// ListTemplates returns the team's templates and every public one,
	// ordered by name.
	ListTemplates(ctx context.Context, teamID string) ([]Template, error)
	// SetTemplatePublic changes a template's visibility.
	SetTemplatePublic(ctx context.Context, id string, public bool) (Template, error)
	// DeleteTemplate deletes the template with its builds, logs, tags and
	// the files rows uploaded for it, and returns the builds and files it
	// had (whose blobs the caller may then collect).
	DeleteTemplate(ctx context.Context, id string) ([]TemplateBuild, []TemplateFile, error)

	// CreateBuild stores a new build of an existing template.
	CreateBuild(ctx context.Context, b TemplateBuild) error
	// GetBuild returns the template's build; another template's is
	// errdefs.ErrNotFound.
	GetBuild(ctx context.Context, templateID, buildID string) (TemplateBuild, error)
	// ListBuilds returns a template's builds, newest first.
	ListBuilds(ctx context.Context, templateID string) ([]TemplateBuild, error)
	// StartBuild moves a waiting build to building with its spec, host and
	// a lease until leaseUntil; a build that is not waiting is
	// errdefs.ErrConflict (it was triggered already).
	StartBuild(ctx context.Context, templateID, buildID string, spec json.RawMessage, hostID string, leaseUntil time.Time) (TemplateBuild, error)
	// RenewBuildLeases extends the lease of the building builds of ids.
	RenewBuildLeases(ctx context.Context, ids []string, until time.Time) error
	// FinishBuild marks a building build ready with its manifest and size
	// and, in the same transaction, points the build's tags at it. A build
	// that is no longer building (it was failed, or deleted) is
	// errdefs.ErrConflict or ErrNotFound.
	FinishBuild(ctx context.Context, buildID, manifest string, sizeBytes int64) (TemplateBuild, error)
	// FailBuild marks a waiting or building build error with reason.
	FailBuild(ctx context.Context, buildID string, reason BuildReason) (TemplateBuild, error)
	// FailAbandonedBuilds marks error, with reason, every building build
	// whose lease ended before now, and returns them.
	FailAbandonedBuilds(ctx context.Context, now time.Time, reason BuildReason) ([]TemplateBuild, error)
	// ReadyManifests returns the manifest digests of every ready build,
	// of every template (the blobs they name must be kept).
	ReadyManifests(ctx context.Context) ([]string, error)

	// AppendBuildLog appends entries to a build's log, numbering them.
	// A build keeps at most MaxBuildLogEntries: past that, entries are
	// counted, and the last kept entry says how many were dropped.
	AppendBuildLog(ctx context.Context, buildID string, entries []BuildLogEntry) error
	// BuildLog returns a build's log entries that f selects.
	BuildLog(ctx context.Context, buildID string, f BuildLogFilter) ([]BuildLogEntry, error)

	// Tags returns a template's tags, ordered by tag.
	Tags(ctx context.Context, templateID string) ([]TemplateTag, error)
	// SetTags points tags of the template at one of its builds, which
	// must be ready (errdefs.ErrInvalid otherwise).
	SetTags(ctx context.Context, templateID, buildID string, tags []string) error
	// DeleteTags removes tags of the template; a tag it lacks is
	// errdefs.ErrNotFound and nothing is removed.
	DeleteTags(ctx context.Context, templateID string, tags []string) error
	// TaggedBuild returns the build the template's tag points at.
	TaggedBuild(ctx context.Context, templateID, tag string) (TemplateBuild, error)

	// PutTemplateFile records an uploaded file of a team, replacing the
	// row of the same hash.
	PutTemplateFile(ctx context.Context, f TemplateFile) error
	// TemplateFile returns the team's file of hash.
	TemplateFile(ctx context.Context, teamID, hash string) (TemplateFile, error)
	// FileDigests returns the digest of every uploaded file, of every team.
	FileDigests(ctx context.Context) ([]string, error)

	// PutSnapshot records a snapshot of a sandbox: a ready build b (its
	// Manifest, SizeBytes and Tags set) of the team's snapshot template
	// t.Name, made with t's ID when the team has none of that name. A
	// name taken by a template that is not a snapshot of the same team is
	// errdefs.ErrConflict. It returns the template.
	PutSnapshot(ctx context.Context, t Template, b TemplateBuild) (Template, error)

	// EnsureSecret stores value as the secret name unless one is stored,
	// and returns the stored one: replicas share the first.
	EnsureSecret(ctx context.Context, name string, value []byte) ([]byte, error)
}

// MaxBuildLogEntries bounds one build's log.
const MaxBuildLogEntries = 10000

// Template is a content template of a team.
type Template struct {
	ID     string // 20 characters of [a-z0-9]
	TeamID string
	Name   string // unique
	Public bool   // usable by every team
	// SnapshotOf is, for a snapshot (PutSnapshot), the sandbox its latest
	// build was taken of; empty for other templates.
	SnapshotOf string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// BuildStatus is a build's state, E2B's names.
type BuildStatus string

const (
	BuildWaiting  BuildStatus = "waiting" // made, not triggered
	BuildBuilding BuildStatus = "building"
	BuildReady    BuildStatus = "ready"
	BuildError    BuildStatus = "error"
)

// TemplateBuild is one build of a template.
type TemplateBuild struct {
	ID         string // a UUID
	TemplateID string
	Status     BuildStatus
	// Spec is the build.Spec as JSON, set when the build starts.
	Spec json.RawMessage
	// Tags are what the build's result is tagged with when ready.
	Tags []string
	// Manifest is the digest of the result's manifest, once ready.
	Manifest  string
	SizeBytes int64 // of the result's layers
	// Reason says why the build failed; nil unless Status is error.
	Reason     *BuildReason
	CPUs       int
	MemoryMB   int64
	HostID     string // where it runs or ran
	CreatedAt  time.Time
	UpdatedAt  time.Time
	FinishedAt time.Time // zero until ready or error
}

// BuildReason is E2B's BuildStatusReason.
type BuildReason struct {
	Message    string          `json:"message"`
	Step       string          `json:"step,omitempty"`
	LogEntries []BuildLogEntry `json:"logEntries"`
}

// BuildLogEntry is one entry of a build's log, E2B's BuildLogEntry.
type BuildLogEntry struct {
	Time    time.Time `json:"timestamp"`
	Level   string    `json:"level"` // debug, info, warn, error
	Step    string    `json:"step,omitempty"`
	Message string    `json:"message"`
}

// logLevels numbers levels so that a filter is a comparison.
var logLevels = map[string]int{"debug": 1, "info": 2, "warn": 3, "error": 4}

var levelNames = [...]string{"", "debug", "info", "warn", "error"}

// levelNumber is l's number, or an ErrInvalid naming it.
func levelNumber(l string) (int, error) {
	n, ok := logLevels[l]
	if !ok {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error: %w", l, errdefs.ErrInvalid)
	}
	return n, nil
}

// BuildLogFilter selects entries of a build's log.
type BuildLogFilter struct {
	// MinLevel keeps entries at or above it; "" keeps all.
	MinLevel string
	// Cursor, when not zero, keeps entries at or after it (forward) or at
	// or before it (backward).
	Cursor   time.Time
	Backward bool // newest first
	Offset   int  // skips this many selected entries
	Limit    int  // 0: all
}

// TemplateTag points a tag of a template at one of its builds.
type TemplateTag struct {
	TemplateID string
	Tag        string
	BuildID    string
	CreatedAt  time.Time
}

// TemplateFile is a file a team uploaded for COPY steps (E2B's
// /templates/{id}/files/{hash}), kept as a blob.
type TemplateFile struct {
	TeamID     string
	Hash       string // the client's name for it
	TemplateID string // the template it was uploaded through
	Digest     string
	SizeBytes  int64
	CreatedAt  time.Time
}
