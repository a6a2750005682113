package build

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

// Step types.
const (
	StepRun     = "RUN"
	StepCopy    = "COPY"
	StepAdd     = "ADD" // COPY that also unpacks tar archives of the files (a Dockerfile's ADD)
	StepEnv     = "ENV"
	StepWorkdir = "WORKDIR"
	StepUser    = "USER"
)

// Archive formats of From.Archive.
const (
	ArchiveDocker = "docker-archive"
	ArchiveOCI    = "oci-layout"
)

// Spec is one build: the stages in order, the last one the template.
type Spec struct {
	Stages []Stage `json:"stages"`
	// StartCmd and ReadyCmd go into the template's config; empty keeps
	// the base's (an image's entrypoint and command).
	StartCmd string `json:"startCmd,omitempty"`
	ReadyCmd string `json:"readyCmd,omitempty"`
	// Force runs every step again, cached or not.
	Force bool `json:"force,omitempty"`
	// Source describes where the build came from ("e2b", "dockerfile"),
	// for the template's config; empty keeps the base's.
	Source string `json:"source,omitempty"`
}

// Stage is a base and the steps applied to it.
type Stage struct {
	// Name is how later stages refer to this one (From.Stage,
	// Step.FromStage); unique when set.
	Name  string `json:"name,omitempty"`
	From  From   `json:"from"`
	Steps []Step `json:"steps"`
}

// From is what a stage starts from: exactly one of Template, Image,
// Archive or Stage.
type From struct {
	// Template is a roost template; Manifest its build's manifest, or
	// empty for a host's own tree (such as a locally built base).
	Template string         `json:"template,omitempty"`
	Manifest content.Digest `json:"manifest,omitempty"`
	// Image is a registry reference, pulled with Registry's credentials
	// (anonymous when nil), over plain HTTP when Insecure.
	Image    string        `json:"image,omitempty"`
	Registry *RegistryAuth `json:"registry,omitempty"`
	Insecure bool          `json:"insecure,omitempty"`
	// Archive is a blob holding a docker save archive or a tar of an OCI
	// image layout, as ArchiveFormat says.
	Archive       content.Digest `json:"archive,omitempty"`
	ArchiveFormat string         `json:"archiveFormat,omitempty"`
	// Stage is an earlier stage of the same build.
	Stage string `json:"stage,omitempty"`
}

// RegistryAuth is a registry's basic credentials.
type RegistryAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// Step is one instruction, with E2B's arguments:
//
//	RUN     [command, user?]          the command runs in a shell: /bin/bash -c, or /bin/sh -c
//	                                  where the tree has no bash; Exec overrides that
//	COPY    [src, dest, owner?, mode?] src relative to Files' root, or absolute in FromStage's
//	                                  tree; owner "user[:group]" (default: the current user),
//	                                  mode octal ("0755")
//	ADD     as COPY; a tar archive among the sources is unpacked at dest
//	ENV     [key, value, key, value...]
//	WORKDIR [dir]                     relative to the current workdir
//	USER    [user[:group]]
type Step struct {
	Type string   `json:"type"`
	Args []string `json:"args"`
	// Files is the tar (plain or gzip) COPY and ADD take their sources from.
	Files content.Digest `json:"files,omitempty"`
	// FromStage is the stage whose final tree COPY takes its sources from.
	FromStage string `json:"fromStage,omitempty"`
	// Exec is, for RUN, the exact argv to run (a Dockerfile's exec form,
	// or its shell form as its SHELL plus the command); Args[0] then only
	// describes it.
	Exec []string `json:"exec,omitempty"`
	// Env is, for RUN, environment for this step only (a Dockerfile's
	// build arguments); it does not go into the template.
	Env map[string]string `json:"env,omitempty"`
	// NoInternet runs a RUN step's build sandbox without internet (a
	// Dockerfile's RUN --network=none); build sandboxes have it otherwise.
	NoInternet bool `json:"noInternet,omitempty"`
	// Force runs this step and every later one again, cached or not.
	Force bool `json:"force,omitempty"`
	// Line is the step's line in its Dockerfile, for messages.
	Line int `json:"line,omitempty"`
}

// String is the step as a line of a build log: "RUN make all".
func (s Step) String() string {
	switch {
	case s.Type == StepRun && len(s.Exec) > 0:
		return "RUN " + shellJoin(s.Exec)
	case s.Type == StepRun && len(s.Args) > 0:
		return "RUN " + s.Args[0]
	case (s.Type == StepCopy || s.Type == StepAdd) && len(s.Args) >= 2:
		from := ""
		if s.FromStage != "" {
			from = "--from=" + s.FromStage + " "
		}
		return s.Type + " " + from + s.Args[0] + " " + s.Args[1]
	}
	return strings.TrimSpace(s.Type + " " + strings.Join(s.Args, " "))
}

// Validate checks that spec can be built: every stage has exactly one
// base, stage references point backwards, every step is of a known type
// with its arguments. It wraps errdefs.ErrInvalid.
func (s Spec) Validate() error {
	if len(s.Stages) == 0 {
		return invalidf("build: no stages")
	}
	seen := map[string]bool{}
	for i, st := range s.Stages {
		if err := st.From.validate(seen); err != nil {
			return fmt.Errorf("stage %d: %w", i, err)
		}
		for j, step := range st.Steps {
			if err := step.validate(seen); err != nil {
				return fmt.Errorf("stage %d step %d%s: %w", i, j+1, lineSuffix(step.Line), err)
			}
		}
		if st.Name != "" {
			if seen[st.Name] {
				return invalidf("stage %d: name %q is used twice", i, st.Name)
			}
			seen[st.Name] = true
		}
	}
	return nil
}

func (f From) validate(stages map[string]bool) error {
	n := 0
	for _, set := range []bool{f.Template != "", f.Image != "", f.Archive != "", f.Stage != ""} {
		if set {
			n++
		}
	}
	switch {
	case n != 1:
		return invalidf("from: want exactly one of template, image, archive or stage, got %d", n)
	case f.Manifest != "" && f.Template == "":
		return invalidf("from: a manifest only goes with a template")
	case (f.Registry != nil || f.Insecure) && f.Image == "":
		return invalidf("from: registry settings only go with an image")
	case f.ArchiveFormat != "" && f.Archive == "":
		return invalidf("from: an archive format only goes with an archive")
	case f.Stage != "" && !stages[f.Stage]:
		return invalidf("from: no earlier stage %q", f.Stage)
	}
	if f.Manifest != "" {
		if _, err := content.ParseDigest(string(f.Manifest)); err != nil {
			return fmt.Errorf("from manifest: %w", err)
		}
	}
	if f.Archive != "" {
		if _, err := content.ParseDigest(string(f.Archive)); err != nil {
			return fmt.Errorf("from archive: %w", err)
		}
		if f.ArchiveFormat != ArchiveDocker && f.ArchiveFormat != ArchiveOCI {
			return invalidf("from archive: format %q: want %s or %s", f.ArchiveFormat, ArchiveDocker, ArchiveOCI)
		}
	}
	return nil
}

func (s Step) validate(stages map[string]bool) error {
	if s.Type != StepRun && (len(s.Exec) > 0 || len(s.Env) > 0) {
		return invalidf("%s: exec and env only go with RUN", s.Type)
	}
	if s.Type != StepCopy && s.Type != StepAdd && (s.Files != "" || s.FromStage != "") {
		return invalidf("%s: files and fromStage only go with COPY", s.Type)
	}
	switch s.Type {
	case StepRun:
		return s.validateRun()
	case StepCopy, StepAdd:
		return s.validateCopy(stages)
	case StepEnv:
		if len(s.Args) == 0 || len(s.Args)%2 != 0 {
			return invalidf("ENV: want key, value pairs, got %d arguments", len(s.Args))
		}
		for i := 0; i < len(s.Args); i += 2 {
			if s.Args[i] == "" || strings.ContainsAny(s.Args[i], "=\x00") {
				return invalidf("ENV: bad name %q", s.Args[i])
			}
		}
	case StepWorkdir, StepUser:
		if len(s.Args) != 1 || s.Args[0] == "" {
			return invalidf("%s: want one argument, got %q", s.Type, s.Args)
		}
	case "":
		return invalidf("step without a type")
	default:
		return invalidf("unknown step type %q (want RUN, COPY, ADD, ENV, WORKDIR or USER)", s.Type)
	}
	return nil
}

func (s Step) validateRun() error {
	if len(s.Args) < 1 || len(s.Args) > 2 {
		return invalidf("RUN: want a command and an optional user, got %d arguments", len(s.Args))
	}
	if strings.TrimSpace(s.Args[0]) == "" && len(s.Exec) == 0 {
		return invalidf("RUN: empty command")
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return invalidf("RUN: bad environment name %q", k)
		}
	}
	return nil
}

func (s Step) validateCopy(stages map[string]bool) error {
	if len(s.Args) < 2 || len(s.Args) > 4 {
		return invalidf("%s: want src, dest, owner?, mode?, got %d arguments", s.Type, len(s.Args))
	}
	switch {
	case (s.Files == "") == (s.FromStage == ""):
		return invalidf("%s: want exactly one of files or fromStage", s.Type)
	case s.FromStage != "" && !stages[s.FromStage]:
		return invalidf("%s: no earlier stage %q", s.Type, s.FromStage)
	case s.Args[1] == "":
		return invalidf("%s: empty destination", s.Type)
	}
	if s.Files != "" {
		if _, err := content.ParseDigest(string(s.Files)); err != nil {
			return fmt.Errorf("%s files: %w", s.Type, err)
		}
		if _, err := contextPath(s.Args[0]); err != nil {
			return err
		}
	}
	if len(s.Args) == 4 && s.Args[3] != "" {
		if _, err := parseMode(s.Args[3]); err != nil {
			return err
		}
	}
	return nil
}

// contextPath cleans a source path in the build context: relative (a
// leading / means the context's root), never above the root. "." is the
// whole context.
func contextPath(src string) (string, error) {
	if src == "" {
		return "", invalidf("empty source path")
	}
	depth := 0
	for _, c := range strings.Split(src, "/") {
		switch c {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return "", invalidf("source %q leaves the build context", src)
			}
		default:
			depth++
		}
	}
	return strings.TrimPrefix(path.Clean("/"+src), "/"), nil
}

// parseMode reads an octal file mode such as "0755" or "644".
func parseMode(s string) (uint32, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, invalidf("mode %q: want octal permissions such as 0755", s)
	}
	return uint32(m), nil
}

func lineSuffix(line int) string {
	if line == 0 {
		return ""
	}
	return fmt.Sprintf(" (line %d)", line)
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errdefs.ErrInvalid)
}

// shellJoin quotes args for a POSIX shell where they need it.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
