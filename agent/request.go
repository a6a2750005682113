package agent

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"regexp"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template"
)

// Defaults and bounds of a create request.
const (
	DefaultTemplate = template.BaseName
	DefaultVCPUs    = 2
	DefaultMemoryMB = 512
	DefaultDiskMB   = 2048
	DefaultTimeout  = 300 * time.Second

	MinMemoryMB = 64
	MinDiskMB   = 256
	MaxDiskMB   = 1 << 20 // 1 TiB
	// MaxTimeout bounds a sandbox's timeout; the control plane may hold
	// its own, lower, limit.
	MaxTimeout = 24 * time.Hour

	maxIDLen       = 63 // a hostname label
	maxMapBytes    = 64 << 10
	maxTokenLength = 4096
)

// CreateRequest asks for a new sandbox. Zero fields take the defaults
// above.
type CreateRequest struct {
	// ID is the sandbox's ID; empty means a generated one.
	ID string
	// Template names the host's template to start from; with
	// TemplateRef, it is the template's name for the record only.
	Template string
	// TemplateRef, when set, is the control plane's template: the sandbox
	// runs on its tree, which is pulled first when the host lacks it.
	TemplateRef *TemplateRef
	// Limits: VCPUs, MemoryMB and DiskMB are honoured; Pids is left to the
	// driver's default.
	Limits  runtime.Limits
	Timeout time.Duration
	// EnvVars are set for every process in the sandbox, through envd.
	EnvVars map[string]string
	// Metadata is opaque to the agent and returned as given.
	Metadata map[string]string
	// DenyInternet blocks egress beyond the host; the zero value allows it.
	DenyInternet bool
	// AutoPause makes the reaper pause instead of destroy on timeout:
	// hibernated where the runtime can, else frozen (PauseToDisk), or,
	// with AutoPauseFilesystem, without its memory (Halt).
	AutoPause           bool
	AutoPauseFilesystem bool
	// EnvdToken is the access token envd will require; empty leaves envd
	// open to whoever reaches the sandbox's address (the host only).
	EnvdToken string
	// Volumes are the host's volumes the sandbox mounts.
	Volumes []VolumeRequest
	// Owner is opaque: a label kept with the sandbox and its metrics
	// history (the control plane's team); forks inherit it.
	Owner string

	// buildRoot is the root tree of a build sandbox, for builds only.
	buildRoot string
	// capture marks the sandbox a template's capture is made of: it
	// boots (it forks no capture), and has no identity of a client's.
	capture bool
	// fork is the capture of a sandbox this one is a fork of (Fork).
	fork *forkSource
	// pooled marks a warm pool's sandbox: it starts with no identity,
	// and takes no /init until a create claims it (pool.go).
	pooled bool
}

// hostLimits bound what one sandbox may ask for.
type hostLimits struct {
	CPUs     int
	MemoryMB int64
}

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// validID says whether id may name a sandbox: it becomes a directory name,
// a hostname and part of host object names.
func validID(id string) bool {
	return len(id) <= maxIDLen && idPattern.MatchString(id)
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns a random sandbox ID: 96 random bits as 20 characters of
// [a-z2-7], unguessable because the proxy admits whoever knows one.
func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics on failure)
	return idEncoding.EncodeToString(b[:])
}

// normalize validates req against host and fills in defaults. Errors wrap
// errdefs.ErrInvalid and say which field is wrong.
func (req CreateRequest) normalize(host hostLimits) (CreateRequest, error) {
	invalid := func(format string, args ...any) (CreateRequest, error) {
		return CreateRequest{}, fmt.Errorf(format+": %w", append(args, errdefs.ErrInvalid)...)
	}
	if req.ID != "" && !validID(req.ID) {
		return invalid("sandbox id %q must be 1-%d characters of a-z, 0-9 and '-', not starting with '-'", req.ID, maxIDLen)
	}
	if req.Template == "" {
		req.Template = DefaultTemplate
	}
	if err := checkTemplateName(req.Template, req.TemplateRef != nil); err != nil {
		return CreateRequest{}, err
	}
	l := &req.Limits
	defaultCPUs := min(DefaultVCPUs, host.CPUs)
	switch {
	case l.VCPUs == 0:
		l.VCPUs = max(defaultCPUs, 1)
	case l.VCPUs < 1 || l.VCPUs > host.CPUs:
		return invalid("vcpus %d: must be between 1 and the host's %d", l.VCPUs, host.CPUs)
	}
	switch {
	case l.MemoryMB == 0:
		l.MemoryMB = DefaultMemoryMB
	case l.MemoryMB < MinMemoryMB || int64(l.MemoryMB) > host.MemoryMB:
		return invalid("memory %d MiB: must be between %d MiB and the host's %d MiB", l.MemoryMB, MinMemoryMB, host.MemoryMB)
	}
	switch {
	case l.DiskMB == 0:
		l.DiskMB = DefaultDiskMB
	case l.DiskMB < MinDiskMB || l.DiskMB > MaxDiskMB:
		return invalid("disk %d MiB: must be between %d MiB and %d MiB", l.DiskMB, MinDiskMB, MaxDiskMB)
	}
	if l.Pids < 0 {
		return invalid("pids %d: must not be negative", l.Pids)
	}
	switch {
	case req.Timeout == 0:
		req.Timeout = DefaultTimeout
	case req.Timeout < time.Second || req.Timeout > MaxTimeout:
		return invalid("timeout %s: must be between 1s and %s", req.Timeout, MaxTimeout)
	}
	if err := checkEnv(req.EnvVars); err != nil {
		return CreateRequest{}, err
	}
	if err := checkMap("metadata", req.Metadata); err != nil {
		return CreateRequest{}, err
	}
	if len(req.EnvdToken) > maxTokenLength || strings.ContainsAny(req.EnvdToken, "\x00\r\n") {
		return invalid("envd access token: at most %d bytes, no control characters", maxTokenLength)
	}
	return req, nil
}

// maxDisplayName bounds the name a control-plane template is recorded
// under.
const maxDisplayName = 255

// checkTemplateName checks the template a create names: a template of the
// host's store, or, for a control-plane template (ref), a name to record
// (its name and tag there, or its ID).
func checkTemplateName(name string, ref bool) error {
	if !ref {
		return template.ValidName(name)
	}
	if len(name) > maxDisplayName || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("template name %q: at most %d bytes, no control characters: %w", name, maxDisplayName, errdefs.ErrInvalid)
	}
	return nil
}

// checkTimeout validates a timeout given to SetTimeout or Resume.
func checkTimeout(d time.Duration) error {
	if d < time.Second || d > MaxTimeout {
		return fmt.Errorf("timeout %s: must be between 1s and %s: %w", d, MaxTimeout, errdefs.ErrInvalid)
	}
	return nil
}

func checkEnv(env map[string]string) error {
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return fmt.Errorf("env var %q: names must be non-empty without '=' or NUL, values without NUL: %w", k, errdefs.ErrInvalid)
		}
	}
	return checkMap("env vars", env)
}

func checkMap(what string, m map[string]string) error {
	n := 0
	for k, v := range m {
		if k == "" {
			return fmt.Errorf("%s: empty key: %w", what, errdefs.ErrInvalid)
		}
		n += len(k) + len(v)
	}
	if n > maxMapBytes {
		return fmt.Errorf("%s: %d bytes, at most %d: %w", what, n, maxMapBytes, errdefs.ErrInvalid)
	}
	return nil
}
