package controlplane

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
	"roost.dev/roost/wire"
)

// InterpreterTemplate is the template E2B's @e2b/code-interpreter creates
// sandboxes from. The control plane builds it itself, at its first
// create, when it has the code interpreter's binary (Config.Interpreter):
// Debian's Jupyter kernels for Python, with the libraries E2B's template
// offers, and R; Node.js (with acorn and typescript) for JavaScript and
// TypeScript; a JDK for Java (JShell); over base, and roost-interpreter started and ready on port
// 49999 before the create returns. The template is public, its owner the
// team whose create built it.
const InterpreterTemplate = "code-interpreter-v1"

// interpreterPackages are the Debian packages the template installs.
const interpreterPackages = "python3-ipykernel python3-numpy python3-pandas python3-matplotlib python3-scipy r-cran-irkernel " +
	"nodejs node-acorn node-typescript default-jdk-headless"

// builtinPoll is how often a create waiting for a built-in template's
// build looks at it.
const builtinPoll = 500 * time.Millisecond

// builtin reports whether name is a template the control plane builds.
func (s *Server) builtin(name string) bool {
	return name == InterpreterTemplate && s.cfg.Interpreter != ""
}

// awaitBuiltin resolves the built-in template name for the team, building
// it if no build of it is ready or under way, and waiting for that build.
// Creates of it wait in turn: one build at a time.
func (s *Server) awaitBuiltin(ctx context.Context, teamID, name string) (contentRef, error) {
	s.builtinMu.Lock()
	defer s.builtinMu.Unlock()
	for {
		c, err := s.resolveContent(ctx, teamID, name)
		switch {
		case err == nil:
			return c, nil
		case errors.Is(err, errNotContent):
			if err := s.buildBuiltin(ctx, teamID, name); err != nil {
				return contentRef{}, fmt.Errorf("build template %s: %w", name, err)
			}
		case errors.Is(err, errdefs.ErrNotFound): // its build failed
			return contentRef{}, s.dropFailedBuiltin(ctx, teamID, name)
		case !errors.Is(err, errdefs.ErrInvalid): // ErrInvalid: still building
			return contentRef{}, err
		}
		select {
		case <-ctx.Done():
			return contentRef{}, fmt.Errorf("template %s is still building (GET /v1/templates shows its progress): %w", name, ctx.Err())
		case <-time.After(builtinPoll):
		}
	}
}

// dropFailedBuiltin deletes the built-in template whose build failed, so
// that the next create builds it again, and says why it failed.
func (s *Server) dropFailedBuiltin(ctx context.Context, teamID, name string) error {
	t, err := s.visibleTemplate(ctx, teamID, name)
	if err != nil {
		return err
	}
	builds, err := s.store.ListBuilds(ctx, t.ID)
	if err != nil {
		return err
	}
	reason := "no build"
	if len(builds) > 0 && builds[0].Reason != nil {
		reason = builds[0].Reason.Message
	}
	if _, _, err := s.store.DeleteTemplate(ctx, t.ID); err != nil {
		return err
	}
	return fmt.Errorf("template %s: its build failed (%s); the next create builds it again: %w", name, reason, errdefs.ErrUnavailable)
}

// buildBuiltin makes the public template name and starts its build.
func (s *Server) buildBuiltin(ctx context.Context, teamID, name string) error {
	t := store.Template{ID: newTemplateID(), TeamID: teamID, Name: name, Public: true}
	if err := s.store.CreateTemplate(ctx, t); err != nil {
		return err
	}
	t, err := s.store.GetTemplate(ctx, t.ID)
	if err != nil {
		return err
	}
	files, err := s.interpreterFiles(ctx)
	if err != nil {
		return err
	}
	s.log.Info("building the built-in template at its first create", "template", name)
	return s.startBuiltinBuild(ctx, t, files)
}

// startBuiltinBuild starts a build of the built-in template t whose
// roost-interpreter is the tar files; its result is tagged default when
// ready.
func (s *Server) startBuiltinBuild(ctx context.Context, t store.Template, files content.Digest) error {
	b := store.TemplateBuild{ID: newBuildID(), TemplateID: t.ID, Status: store.BuildWaiting, Tags: []string{defaultTag},
		CPUs: defaultBuildCPUs, MemoryMB: defaultBuildMemoryMB}
	if err := s.store.CreateBuild(ctx, b); err != nil {
		return err
	}
	spec := build.Spec{
		Stages: []build.Stage{{From: build.From{Template: defaultTmpl}, Steps: []build.Step{
			{Type: "RUN", Args: []string{"apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends " +
				interpreterPackages + " && rm -rf /var/lib/apt/lists/*", "root"}},
			{Type: "COPY", Args: []string{"roost-interpreter", interpreterPath, "root", "0755"}, Files: files},
		}}},
		StartCmd: interpreterPath,
		ReadyCmd: fmt.Sprintf("curl -fs localhost:%d/health", wire.InterpreterPort),
	}
	if err := s.resolveBases(ctx, t.TeamID, &spec); err != nil {
		s.failBuild(b.ID, store.BuildReason{Message: err.Error()}, s.log)
		return err
	}
	return s.launchBuild(ctx, t, b, spec)
}

// interpreterPath is where the template holds roost-interpreter.
const interpreterPath = "/usr/local/bin/roost-interpreter"

// builtinRetryAfter is how long a failed rebuild of the built-in template
// for a given roost-interpreter stands before a create tries it again.
const builtinRetryAfter = time.Hour

// refreshBuiltin starts a rebuild of the built-in template c when the
// roost-interpreter beside the control plane is not the one c was built
// with (roost was upgraded): creates go on with c until the new build is
// ready and takes the default tag. One rebuild at a time; one that
// failed for this binary is not tried again for builtinRetryAfter.
// A create that finds another one checking goes on without waiting. A
// failure to check is logged, never the create's: the build it has is a
// working one.
func (s *Server) refreshBuiltin(ctx context.Context, c contentRef) {
	if !s.builtinMu.TryLock() {
		return
	}
	defer s.builtinMu.Unlock()
	files, err := s.interpreterFiles(ctx)
	if err != nil {
		s.log.Warn("built-in template not checked against roost-interpreter", "template", c.Template.Name, "err", err)
		return
	}
	if interpreterOf(c.Build.Spec) == files {
		return
	}
	builds, err := s.store.ListBuilds(ctx, c.Template.ID)
	if err != nil {
		s.log.Warn("built-in template not checked against roost-interpreter", "template", c.Template.Name, "err", err)
		return
	}
	for _, b := range builds {
		switch {
		case b.Status == store.BuildWaiting || b.Status == store.BuildBuilding:
			return
		case interpreterOf(b.Spec) != files:
		case b.Status == store.BuildReady: // c was resolved just before this build took the tag
			return
		case b.Status == store.BuildError && s.store.Now().Sub(b.FinishedAt) < builtinRetryAfter:
			return
		}
	}
	s.log.Info("rebuilding the built-in template: roost-interpreter changed; creates use the current build until the new one is ready",
		"template", c.Template.Name, "build", c.Build.ID)
	if err := s.startBuiltinBuild(ctx, c.Template, files); err != nil {
		s.log.Warn("built-in template's rebuild not started", "template", c.Template.Name, "err", err)
	}
}

// interpreterOf is the tar of roost-interpreter the build spec specJSON
// copies into the template; "" when it copies none.
func interpreterOf(specJSON []byte) content.Digest {
	var spec build.Spec
	if json.Unmarshal(specJSON, &spec) != nil {
		return ""
	}
	for _, st := range spec.Stages {
		for _, step := range st.Steps {
			if step.Type == "COPY" && len(step.Args) > 1 && step.Args[1] == interpreterPath {
				return step.Files
			}
		}
	}
	return ""
}

// interpreterTar is the tar of Config.Interpreter last put into the
// content store, and the file it was made of.
type interpreterTar struct {
	file  fileIdentity
	files content.Digest
}

// fileIdentity tells versions of a file apart without reading it.
type fileIdentity struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

// interpreterFiles is the tar of roost-interpreter, as a COPY step takes
// it, in the content store: made again only when the file is another
// one than last time (or the blob was collected). Called under
// builtinMu.
func (s *Server) interpreterFiles(ctx context.Context) (content.Digest, error) {
	blobs, err := s.contentStore()
	if err != nil {
		return "", err
	}
	f, err := os.Open(s.cfg.Interpreter)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	id := fileIdentity{size: st.Size(), mtime: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(sys.Dev), sys.Ino
	}
	if s.interpreter.file == id && s.interpreter.files != "" && blobs.Has(s.interpreter.files) {
		return s.interpreter.files, nil
	}
	d, err := binaryTar(ctx, blobs, f, st.Size(), "roost-interpreter")
	if err != nil {
		return "", err
	}
	s.interpreter = interpreterTar{file: id, files: d}
	return d, nil
}

// binaryTar puts a tar holding the file f of size bytes, as name (root's,
// 0755), into blobs: what a COPY step takes its sources from.
func binaryTar(ctx context.Context, blobs *content.Blobs, f io.Reader, size int64, name string) (content.Digest, error) {
	d, err := blobs.PutWritten(ctx, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: size, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := io.CopyN(tw, f, size); err != nil {
			return err
		}
		return tw.Close()
	})
	return d.Digest, err
}
