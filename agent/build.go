package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
)

// Build builds a template on this host (docs/templates.md): every RUN in
// a build sandbox, the layers and manifest into Config.Blobs, and then to
// the control plane (Config.BlobPush) unless it shares Blobs. log gets the
// build's entries as they come, from one goroutine at a time. A failed
// step returns a *build.StepError; a host that cannot build, an error
// wrapping errdefs.ErrUnavailable.
func (m *Manager) Build(ctx context.Context, spec build.Spec, log func(build.LogEntry)) (content.Manifest, content.Digest, error) {
	if err := m.canBuild(spec); err != nil {
		return content.Manifest{}, "", err
	}
	if err := m.fetchStepFiles(ctx, spec); err != nil {
		return content.Manifest{}, "", err
	}
	var mu sync.Mutex // serialises log
	logged := func(e build.LogEntry) {
		mu.Lock()
		defer mu.Unlock()
		log(e)
	}
	b := &build.Builder{
		Blobs: m.cfg.Blobs, Templates: m.templates, Dir: filepath.Join(m.cfg.DataDir, "builds"),
		Env: &buildEnv{m: m},
	}
	man, d, err := b.Build(ctx, spec, logged)
	if err != nil {
		return content.Manifest{}, "", err
	}
	if !m.cfg.SharedBlobs {
		if err := m.blobPush().push(ctx, m.cfg.Blobs, man, d); err != nil {
			return content.Manifest{}, "", fmt.Errorf("template build: send the result to the control plane: %w", err)
		}
	}
	// The build's layers and tree are the cache's like a pull's.
	m.evictTemplates()
	return man, d, nil
}

// fetchStepFiles makes the files blobs of the spec's COPY and ADD steps
// present (uploaded to the control plane, not to this host).
func (m *Manager) fetchStepFiles(ctx context.Context, spec build.Spec) error {
	for _, st := range spec.Stages {
		for _, step := range st.Steps {
			if step.Files == "" {
				continue
			}
			if err := m.fetchBlob(ctx, content.Descriptor{Digest: step.Files}); err != nil {
				return fmt.Errorf("template build: files of %s: %w", step, err)
			}
		}
	}
	return nil
}

// canBuild refuses a bad spec (errdefs.ErrInvalid) and a host that
// cannot build (errdefs.ErrUnavailable).
func (m *Manager) canBuild(spec build.Spec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if m.cfg.Blobs == nil {
		return fmt.Errorf("template build: this agent keeps no template content: %w", errdefs.ErrUnavailable)
	}
	_, err := m.buildRuntime()
	return err
}

// BuildTemplate runs a build and streams its log, then its result.
func (s *service) BuildTemplate(ctx context.Context, req *connect.Request[hostagentv1.BuildTemplateRequest], stream *connect.ServerStream[hostagentv1.BuildTemplateResponse]) error {
	var spec build.Spec
	if err := json.Unmarshal([]byte(req.Msg.GetSpecJson()), &spec); err != nil {
		return errdefs.ToConnect(fmt.Errorf("build spec: %v: %w", err, errdefs.ErrInvalid))
	}
	if err := s.m.canBuild(spec); err != nil {
		return errdefs.ToConnect(err)
	}
	log := s.m.log.With("build", req.Msg.GetBuildId())
	log.Info("template build started", "stages", len(spec.Stages))
	var sendErr error // the first failure to send; later entries are dropped
	send := func(e build.LogEntry) {
		if sendErr != nil {
			return
		}
		sendErr = stream.Send(&hostagentv1.BuildTemplateResponse{Event: &hostagentv1.BuildTemplateResponse_Log{Log: &hostagentv1.BuildLogEntry{
			Time: timestamppb.New(e.Time), Level: buildLevel(e.Level), Step: e.Step, Message: e.Message,
		}}})
	}
	man, d, err := s.m.Build(ctx, spec, send)
	result := buildResult(man, d, err)
	if result.GetError() != "" {
		log.Info("template build failed", "step", result.GetFailedStep(), "err", result.GetError())
	} else {
		log.Info("template build finished", "manifest", d)
	}
	if sendErr != nil {
		return sendErr
	}
	return stream.Send(&hostagentv1.BuildTemplateResponse{Event: &hostagentv1.BuildTemplateResponse_Result{Result: result}})
}

// buildResult is the RPC's last event for a build that ended with man
// and d, or err.
func buildResult(man content.Manifest, d content.Digest, err error) *hostagentv1.BuildResult {
	var stepErr *build.StepError
	switch {
	case errors.As(err, &stepErr):
		return &hostagentv1.BuildResult{
			Error: stepErr.Error(), FailedStep: stepErr.Step, Line: int32(stepErr.Line), ExitCode: int32(stepErr.ExitCode),
		}
	case err != nil:
		return &hostagentv1.BuildResult{Error: err.Error()}
	}
	b, _ := man.Encode()
	return &hostagentv1.BuildResult{Template: &hostagentv1.TemplateRef{Digest: string(d), Manifest: b}}
}

func buildLevel(l string) hostagentv1.LogLevel {
	switch l {
	case "debug":
		return hostagentv1.LogLevel_LOG_LEVEL_DEBUG
	case "warn":
		return hostagentv1.LogLevel_LOG_LEVEL_WARN
	case "error":
		return hostagentv1.LogLevel_LOG_LEVEL_ERROR
	}
	return hostagentv1.LogLevel_LOG_LEVEL_INFO
}
