package build

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/template"
	"roost.dev/roost/template/content"
)

// Log levels of LogEntry, E2B's.
const (
	LevelDebug = "debug"
	LevelInfo  = "info"
	LevelWarn  = "warn"
	LevelError = "error"
)

// Step names of LogEntry and StepError besides the 1-based step numbers:
// the stages' bases, and the end of the build.
const (
	StepBase     = "base"
	StepFinalize = "finalize"
)

// LogEntry is one line of a build's log.
type LogEntry struct {
	Time    time.Time
	Level   string // LevelDebug, LevelInfo, LevelWarn or LevelError
	Step    string // StepBase, "1".."n" (the step's number in the whole Spec), StepFinalize
	Message string
}

// StepError is a failed step: a RUN that exited non-zero (ExitCode), or
// a step that could not be done (Err, whose category it keeps).
type StepError struct {
	Step     string // as LogEntry.Step
	Line     int    // in the Dockerfile; 0 when not from one
	Command  string // the step, as Step.String
	ExitCode int
	Message  string // the RUN's last lines of output
	Err      error
}

func (e *StepError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "step %s", e.Step)
	if e.Line > 0 {
		fmt.Fprintf(&b, " (line %d)", e.Line)
	}
	if e.Command != "" {
		fmt.Fprintf(&b, ": %s", e.Command)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	} else {
		fmt.Fprintf(&b, ": exit code %d", e.ExitCode)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	return b.String()
}

func (e *StepError) Unwrap() error { return e.Err }

// Env is what a host provides to a build (the agent implements it).
type Env interface {
	// Base returns the manifest of a stage's from, all its blobs present
	// in the Builder's Blobs: a template by manifest digest (its blobs
	// fetched), a template without one (the host's own tree as one
	// layer), an image or archive (imported). It is not called for a
	// From.Stage. log gets its progress (Step StepBase).
	Base(ctx context.Context, from From, log func(LogEntry)) (content.Manifest, content.Digest, error)
	// Run runs r in a fresh build sandbox whose root is an overlay over
	// rootfs, which it must not write; out gets the command's output
	// (stdout and stderr) as it comes. A command that ran and failed is
	// a RunResult with its exit code, not an error. The caller calls Done
	// once it has read Upper.
	Run(ctx context.Context, rootfs string, r RunRequest, out io.Writer) (RunResult, error)
}

// RunRequest is one RUN step's process.
type RunRequest struct {
	Argv     []string
	User     string // a name or uid of the tree's passwd, with an optional ":group"
	Workdir  string
	Env      map[string]string
	Internet bool
}

// RunResult is a finished RUN.
type RunResult struct {
	ExitCode int
	// Upper is the sandbox's overlay upper directory, valid until Done:
	// what the command wrote, with overlay's whiteouts.
	Upper string
	// UIDShift: host uid = sandbox uid + UIDShift in Upper (gids alike).
	UIDShift int
	// Done destroys the sandbox. Safe to call more than once.
	Done func()
}

// Builder builds Specs on one host.
type Builder struct {
	// Blobs receives the layers and manifests, and holds the bases' and
	// the files' blobs.
	Blobs *content.Blobs
	// Templates receives the final tree (Adopt) and gives the bases'.
	Templates *template.Store
	// Dir keeps the step cache (Dir/cache) and the working trees of
	// builds in progress (Dir/work). It must be on the filesystem of
	// Templates: trees are hard-link copies of the store's and are moved
	// into it.
	Dir string
	Env Env
}

// Build builds spec and returns the manifest of its last stage, which is
// in Blobs, its tree adopted into Templates when the build made one (an
// all-cached build leaves the tree to be materialized when first used).
// log (may be nil) gets the build's log as it happens. A failed step is
// a *StepError. Concurrent builds may share a Builder.
func (b *Builder) Build(ctx context.Context, spec Spec, log func(LogEntry)) (content.Manifest, content.Digest, error) {
	if err := spec.Validate(); err != nil {
		return content.Manifest{}, "", err
	}
	if log == nil {
		log = func(LogEntry) {}
	}
	workRoot := filepath.Join(b.Dir, "work")
	if err := os.MkdirAll(workRoot, 0o700); err != nil {
		return content.Manifest{}, "", fmt.Errorf("build: %w", err)
	}
	work, err := os.MkdirTemp(workRoot, "build-")
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("build: %w", err)
	}
	defer os.RemoveAll(work)
	r := &run{b: b, spec: spec, log: log, work: work, stages: map[string]*stage{}}
	var last *stage
	for i, st := range spec.Stages {
		if last, err = r.stage(ctx, i, st); err != nil {
			return content.Manifest{}, "", err
		}
	}
	return r.finalize(ctx, last)
}

// run is one Build in progress.
type run struct {
	b      *Builder
	spec   Spec
	log    func(LogEntry)
	work   string
	stages map[string]*stage // by name
	steps  int               // steps numbered so far
	trees  int               // working trees made so far
}

func (r *run) logf(step, level, format string, args ...any) {
	r.log(LogEntry{Time: time.Now(), Level: level, Step: step, Message: fmt.Sprintf(format, args...)})
}

func (r *run) finalize(ctx context.Context, last *stage) (content.Manifest, content.Digest, error) {
	m := last.manifest()
	if r.spec.StartCmd != "" || r.spec.ReadyCmd != "" {
		m.Config.StartCmd, m.Config.ReadyCmd = r.spec.StartCmd, r.spec.ReadyCmd
	}
	if r.spec.Source != "" {
		m.Config.Source = r.spec.Source
	}
	d, err := r.b.Blobs.PutManifest(ctx, m)
	if err != nil {
		return content.Manifest{}, "", r.fail(StepFinalize, 0, "", err)
	}
	if last.tree != "" {
		if _, err := r.b.Templates.Adopt(ctx, last.tree, m, d); err != nil {
			return content.Manifest{}, "", r.fail(StepFinalize, 0, "", fmt.Errorf("keep the tree: %w", err))
		}
	}
	r.logf(StepFinalize, LevelInfo, "template %s: %d layers", d, len(m.Layers))
	return m, d, nil
}

// fail is a failed step's error, logged.
func (r *run) fail(step string, line int, command string, err error) error {
	se := &StepError{Step: step, Line: line, Command: command, Err: err}
	r.logf(step, LevelError, "%v", se)
	return se
}

// newTree is a fresh directory for a working tree.
func (r *run) newTree() string {
	r.trees++
	return filepath.Join(r.work, "tree-"+strconv.Itoa(r.trees))
}
