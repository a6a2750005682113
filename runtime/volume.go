package runtime

import (
	"fmt"
	"path"
	"strings"

	"roost.dev/roost/errdefs"
)

// VolumeMount is a volume a sandbox mounts (docs/persistence.md): an ext4
// filesystem of its own, kept in an image file on the host, that outlives
// the sandbox. The agent prepares both of its forms; each driver uses the
// one it can reach.
type VolumeMount struct {
	// ID is the volume's ID (a file name).
	ID string `json:"id"`
	// Dir is the volume's filesystem mounted on the host: the namespace
	// driver binds it, idmapped to the sandbox's IDs, so that uid 0 on
	// the volume is the sandbox's root.
	Dir string `json:"dir,omitempty"`
	// Image is the volume's ext4 image: the VM drivers attach it as a
	// block device, which the guest's init mounts. The agent does not
	// keep Dir mounted while a VM has the image.
	Image string `json:"image,omitempty"`
	// Path is where the sandbox sees the volume (CheckMountPath).
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// MaxMountPath bounds a mount path.
const MaxMountPath = 1024

// forbiddenMountRoots are the kernel's file systems in a sandbox, which
// a volume may neither cover nor be mounted under.
var forbiddenMountRoots = []string{"/proc", "/sys", "/dev"}

// CheckMountPath accepts where a sandbox may mount a volume: an absolute,
// clean path (no "." or ".." element, no "//", no trailing "/"), not "/"
// itself, not /proc, /sys or /dev or below them, without NUL or newline.
// Errors wrap errdefs.ErrInvalid and say why.
func CheckMountPath(p string) error {
	bad := func(why string) error {
		return fmt.Errorf("mount path %q: %s: %w", p, why, errdefs.ErrInvalid)
	}
	switch {
	case p == "":
		return bad("empty")
	case len(p) > MaxMountPath:
		return bad(fmt.Sprintf("longer than %d bytes", MaxMountPath))
	case !strings.HasPrefix(p, "/"):
		return bad("not absolute")
	case strings.ContainsAny(p, "\x00\n"):
		return bad("contains NUL or a newline")
	case p == "/":
		return bad("the sandbox's root cannot be a volume")
	}
	for _, el := range strings.Split(p[1:], "/") {
		if el == ".." {
			return bad("contains \"..\": it must stay inside the sandbox's root")
		}
		if el == "" || el == "." {
			return bad("not clean")
		}
	}
	if path.Clean(p) != p {
		return bad("not clean")
	}
	for _, r := range forbiddenMountRoots {
		if p == r || strings.HasPrefix(p, r+"/") {
			return bad("under " + r + ", which belongs to the kernel")
		}
	}
	return nil
}

// VolumeMounter is implemented by drivers that mount Spec.Volumes; the
// agent refuses volumes on any other (errdefs.ErrUnsupported). VolumeForm
// says which form of a volume the driver takes, which the agent prepares.
type VolumeMounter interface {
	VolumeForm() VolumeForm
}

// VolumeForm is the form in which a driver takes a volume.
type VolumeForm int

const (
	// VolumeDir: the volume mounted on the host (VolumeMount.Dir).
	VolumeDir VolumeForm = iota + 1
	// VolumeImage: the volume's image, not mounted on the host
	// (VolumeMount.Image).
	VolumeImage
)
