package controlplane

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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
	blobs, err := s.contentStore()
	if err != nil {
		return err
	}
	t := store.Template{ID: newTemplateID(), TeamID: teamID, Name: name, Public: true}
	if err := s.store.CreateTemplate(ctx, t); err != nil {
		return err
	}
	if t, err = s.store.GetTemplate(ctx, t.ID); err != nil {
		return err
	}
	b := store.TemplateBuild{ID: newBuildID(), TemplateID: t.ID, Status: store.BuildWaiting, Tags: []string{defaultTag},
		CPUs: defaultBuildCPUs, MemoryMB: defaultBuildMemoryMB}
	if err := s.store.CreateBuild(ctx, b); err != nil {
		return err
	}
	files, err := binaryTar(ctx, blobs, s.cfg.Interpreter, "roost-interpreter")
	if err != nil {
		return err
	}
	spec := build.Spec{
		Stages: []build.Stage{{From: build.From{Template: defaultTmpl}, Steps: []build.Step{
			{Type: "RUN", Args: []string{"apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends " +
				interpreterPackages + " && rm -rf /var/lib/apt/lists/*", "root"}},
			{Type: "COPY", Args: []string{"roost-interpreter", "/usr/local/bin/roost-interpreter", "root", "0755"}, Files: files},
		}}},
		StartCmd: "/usr/local/bin/roost-interpreter",
		ReadyCmd: fmt.Sprintf("curl -fs localhost:%d/health", wire.InterpreterPort),
	}
	if err := s.resolveBases(ctx, teamID, &spec); err != nil {
		return err
	}
	s.log.Info("building the built-in template at its first create", "template", name)
	return s.launchBuild(ctx, t, b, spec)
}

// binaryTar puts a tar holding the file path, as name (root's, 0755),
// into blobs: what a COPY step takes its sources from.
func binaryTar(ctx context.Context, blobs *content.Blobs, path, name string) (content.Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	d, err := blobs.PutWritten(ctx, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: st.Size(), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := io.Copy(tw, f); err != nil {
			return err
		}
		return tw.Close()
	})
	return d.Digest, err
}
