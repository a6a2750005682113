package store

import (
	"context"
	"fmt"
	"time"

	"roost.dev/roost/errdefs"
)

// Volumes is the store's part for volumes (docs/persistence.md): a team's
// named filesystems on one host, and the mounts sandboxes hold of them.
// Errors: errdefs.ErrNotFound (unknown, or another team's), ErrConflict
// (a name taken; a volume held), ErrInvalid (a malformed argument).
type Volumes interface {
	// CreateVolume stores a new volume; a name the team has already is
	// errdefs.ErrConflict, an unknown team errdefs.ErrNotFound.
	CreateVolume(ctx context.Context, v Volume) error
	// GetVolume returns a volume of the team; with teamID "" a volume of
	// any team (the content API, which checks the volume's token).
	GetVolume(ctx context.Context, teamID, id string) (Volume, error)
	// VolumeByName returns the team's volume of that name.
	VolumeByName(ctx context.Context, teamID, name string) (Volume, error)
	// ListVolumes returns the team's volumes, ordered by name.
	ListVolumes(ctx context.Context, teamID string) ([]Volume, error)
	// DeleteVolume deletes a volume of the team unless a live sandbox
	// mounts it: then a *VolumeBusyError (errdefs.ErrConflict) naming it.
	DeleteVolume(ctx context.Context, teamID, id string) error
	// AttachVolumes records the mounts of a sandbox, all or none. A
	// volume on another host than the sandbox's (it moved meanwhile) is
	// errdefs.ErrConflict. A writable mount of a volume that a live sandbox mounts writable
	// already is a *VolumeBusyError naming that sandbox; the check and
	// the insert are one transaction, so of two creates racing for a
	// volume, one gets it.
	AttachVolumes(ctx context.Context, sandboxID string, mounts []VolumeMount) error
	// VolumeHolders returns the mounts of live sandboxes of a volume.
	VolumeHolders(ctx context.Context, volumeID string) ([]VolumeMount, error)
	// SandboxVolumes returns a sandbox's mounts, ordered by path.
	SandboxVolumes(ctx context.Context, sandboxID string) ([]VolumeMount, error)
	// MoveVolume sets a volume's host to toHost if it is fromHost (a
	// compare-and-swap: else errdefs.ErrConflict) and no live sandbox
	// mounts it (else a *VolumeBusyError). The hosts share the volume
	// directory; the caller has had fromHost release the volume.
	MoveVolume(ctx context.Context, id, fromHost, toHost string) error
	// SetHostVolumeDir records the ID of a host's volume directory.
	SetHostVolumeDir(ctx context.Context, hostID, volumeDirID string) error
}

// Volume is one volume's record.
type Volume struct {
	ID     string
	TeamID string
	Name   string // unique in the team; ValidVolumeName
	SizeMB int64
	HostID string // the host whose volume directory holds the image
	// TokenHash is HashKey of the volume's content token; the token
	// itself is never stored.
	TokenHash []byte
	CreatedAt time.Time // zero → now
}

// VolumeMount is a sandbox's mount of a volume.
type VolumeMount struct {
	SandboxID string
	VolumeID  string
	Path      string // where the sandbox sees it
	ReadOnly  bool
}

// MaxVolumeName bounds a volume's name.
const MaxVolumeName = 63

// ValidVolumeName checks a volume name as E2B's NewVolume has it: 1 to
// MaxVolumeName of [a-zA-Z0-9_-] (so never "/", "." or ".."). Errors wrap
// errdefs.ErrInvalid.
func ValidVolumeName(name string) error {
	if name == "" || len(name) > MaxVolumeName {
		return fmt.Errorf("volume name %q: want 1 to %d characters: %w", name, MaxVolumeName, errdefs.ErrInvalid)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return fmt.Errorf("volume name %q: only letters, digits, '_' and '-' (no '/', '.' or spaces): %w", name, errdefs.ErrInvalid)
		}
	}
	return nil
}

// VolumeBusyError refuses a write mount or a delete of a volume that a
// live sandbox mounts. It wraps errdefs.ErrConflict (HTTP 409) and names
// the sandbox.
type VolumeBusyError struct {
	Volume  string // the volume's name, or ID when the name is unknown
	Sandbox string // the sandbox that holds it
	// Writable says the holder's mount is writable (a second writer was
	// refused); false for a delete refused by any mount.
	Writable bool
}

func (e *VolumeBusyError) Error() string {
	if e.Writable {
		return fmt.Sprintf("volume %s is mounted writable by sandbox %s: one writer at a time (mount it read-only, or end that sandbox)", e.Volume, e.Sandbox)
	}
	return fmt.Sprintf("volume %s is mounted by sandbox %s: end that sandbox first", e.Volume, e.Sandbox)
}

func (e *VolumeBusyError) Unwrap() error { return errdefs.ErrConflict }

// liveStates hold their volume mounts: a lost sandbox may still run on
// its host.
var liveStates = []SandboxState{SandboxStarting, SandboxRunning, SandboxPaused, SandboxLost}
