package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
)

// Builds run on a host's agent (BuildTemplate, a server stream), driven
// by a goroutine of the Server, never by the request that started them.
// While it runs, the server renews the build's lease in the store; a
// build whose lease runs out was left by a control plane that stopped or
// crashed, and is marked error (at start-up, and by the Run loop), so no
// build stays "building" forever.

const (
	// buildLease is how long a build's lease lasts; it is renewed every
	// buildLeaseRenew.
	buildLease      = 30 * time.Second
	buildLeaseRenew = 10 * time.Second
	// reasonTail is how many of a failed step's last log entries the
	// build's reason carries.
	reasonTail = 20
)

// reasonAbandoned is the reason of a build that no control plane runs.
var reasonAbandoned = store.BuildReason{Message: "the control plane restarted during the build"}

// buildRunner owns the goroutines of the builds this server runs.
type buildRunner struct {
	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // guards running
	running map[string]context.CancelFunc
}

func newBuildRunner() *buildRunner {
	ctx, cancel := context.WithCancel(context.Background())
	return &buildRunner{ctx: ctx, cancel: cancel, running: map[string]context.CancelFunc{}}
}

// start runs fn for build id in a goroutine; ErrUnavailable once closed.
func (br *buildRunner) start(id string, fn func(ctx context.Context)) error {
	br.mu.Lock()
	defer br.mu.Unlock()
	if br.ctx.Err() != nil {
		return fmt.Errorf("the control plane is stopping: %w", errdefs.ErrUnavailable)
	}
	ctx, cancel := context.WithCancel(br.ctx)
	br.running[id] = cancel
	br.wg.Go(func() {
		defer func() {
			br.mu.Lock()
			delete(br.running, id)
			br.mu.Unlock()
			cancel()
		}()
		fn(ctx)
	})
	return nil
}

// stop stops build id if this server runs it.
func (br *buildRunner) stop(id string) {
	br.mu.Lock()
	defer br.mu.Unlock()
	if stop, ok := br.running[id]; ok {
		stop()
	}
}

// ids lists the builds running.
func (br *buildRunner) ids() []string {
	br.mu.Lock()
	defer br.mu.Unlock()
	out := make([]string, 0, len(br.running))
	for id := range br.running {
		out = append(out, id)
	}
	return out
}

// close stops every build and waits for their goroutines.
func (br *buildRunner) close() {
	br.mu.Lock()
	br.cancel()
	br.mu.Unlock()
	br.wg.Wait()
}

// tendBuilds renews the leases of the builds this server runs and fails
// those whose lease ran out. Run calls it at start and every
// buildLeaseRenew.
func (s *Server) tendBuilds(ctx context.Context) {
	now := s.store.Now()
	if err := s.store.RenewBuildLeases(ctx, s.builds.ids(), now.Add(buildLease)); err != nil {
		s.log.Warn("renew build leases", "err", err)
	}
	failed, err := s.store.FailAbandonedBuilds(ctx, now, reasonAbandoned)
	if err != nil {
		s.log.Warn("fail abandoned builds", "err", err)
	}
	for _, b := range failed {
		s.log.Warn("template build abandoned", "template", b.TemplateID, "build", b.ID, "host", b.HostID)
	}
}

// buildHost picks where a build runs: the in-process agent when there is
// one, else the scheduler's choice.
func (s *Server) buildHost(ctx context.Context) (store.Host, error) {
	if s.cfg.Local != nil {
		return s.store.GetHost(ctx, s.cfg.Local.HostID)
	}
	return s.schedule(ctx)
}

// launchBuild marks the build building and starts it on a host.
func (s *Server) launchBuild(ctx context.Context, t store.Template, b store.TemplateBuild, spec build.Spec) error {
	host, err := s.buildHost(ctx)
	if err != nil {
		return err
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	kept, err := json.Marshal(redacted(spec))
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	if b, err = s.store.StartBuild(ctx, t.ID, b.ID, kept, host.ID, s.store.Now().Add(buildLease)); err != nil {
		return err
	}
	log := s.log.With("template", t.ID, "build", b.ID, "host", host.ID)
	err = s.builds.start(b.ID, func(ctx context.Context) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("template build panicked", "panic", p, "stack", string(debug.Stack()))
				s.failBuild(b.ID, store.BuildReason{Message: "internal error in the control plane"}, log)
			}
		}()
		s.runBuild(ctx, b, host, specJSON, log)
	})
	if err != nil {
		s.failBuild(b.ID, store.BuildReason{Message: err.Error()}, log)
		return err
	}
	log.Info("template build started", "name", t.Name)
	return nil
}

// redacted is spec as the store keeps it: without registry passwords.
func redacted(spec build.Spec) build.Spec {
	spec.Stages = append([]build.Stage(nil), spec.Stages...)
	for i := range spec.Stages {
		if r := spec.Stages[i].From.Registry; r != nil {
			spec.Stages[i].From.Registry = &build.RegistryAuth{Username: r.Username, Password: "<redacted>"}
		}
	}
	return spec
}

// runBuild streams the build from its host into the store and records
// how it ended.
func (s *Server) runBuild(ctx context.Context, b store.TemplateBuild, host store.Host, specJSON []byte, log *slog.Logger) {
	tails := map[string][]store.BuildLogEntry{}
	res, err := s.streamBuild(ctx, b, host, specJSON, tails)
	switch {
	case ctx.Err() != nil:
		s.failBuild(b.ID, store.BuildReason{Message: "the control plane stopped during the build"}, log)
	case err != nil:
		s.failBuild(b.ID, store.BuildReason{Message: fmt.Sprintf("host %s: %v", host.ID, err)}, log)
	case res.GetTemplate() == nil:
		msg := res.GetError()
		if msg == "" {
			msg = "the build failed"
		}
		step := res.GetFailedStep()
		s.failBuild(b.ID, store.BuildReason{Message: msg, Step: step, LogEntries: tails[step]}, log)
	default:
		s.acceptBuild(ctx, b, res.GetTemplate(), log)
	}
}

// streamBuild calls the host's BuildTemplate and appends the entries it
// streams to the build's log, keeping each step's last entries in tails.
func (s *Server) streamBuild(ctx context.Context, b store.TemplateBuild, host store.Host, specJSON []byte,
	tails map[string][]store.BuildLogEntry) (*hostagentv1.BuildResult, error) {
	stream, err := s.agents.For(host).BuildTemplate(ctx, connect.NewRequest(&hostagentv1.BuildTemplateRequest{
		BuildId: b.ID, SpecJson: string(specJSON),
	}))
	if err != nil {
		return nil, errdefs.FromConnect("agent build template", err)
	}
	defer stream.Close()
	var result *hostagentv1.BuildResult
	for stream.Receive() {
		ev := stream.Msg()
		if r := ev.GetResult(); r != nil {
			result = r
			continue
		}
		l := ev.GetLog()
		if l == nil {
			continue
		}
		e := store.BuildLogEntry{Time: l.GetTime().AsTime(), Level: levelName(l.GetLevel()), Step: l.GetStep(), Message: l.GetMessage()}
		if l.GetTime() == nil {
			e.Time = time.Now()
		}
		tail := append(tails[e.Step], e)
		tails[e.Step] = tail[max(0, len(tail)-reasonTail):]
		if err := s.store.AppendBuildLog(ctx, b.ID, []store.BuildLogEntry{e}); err != nil {
			return nil, fmt.Errorf("record build log: %w", err)
		}
	}
	if err := stream.Err(); err != nil {
		return nil, errdefs.FromConnect("agent build template", err)
	}
	if result == nil {
		return nil, fmt.Errorf("the build ended without a result: %w", errdefs.ErrUnavailable)
	}
	return result, nil
}

// levelName is an agent's log level as E2B names it.
func levelName(l hostagentv1.LogLevel) string {
	switch l {
	case hostagentv1.LogLevel_LOG_LEVEL_DEBUG:
		return "debug"
	case hostagentv1.LogLevel_LOG_LEVEL_WARN:
		return "warn"
	case hostagentv1.LogLevel_LOG_LEVEL_ERROR:
		return "error"
	}
	return "info"
}

// acceptBuild checks a build's result is whole in the content store (the
// manifest, every layer at its size) and marks the build ready, its tags
// moved to it.
func (s *Server) acceptBuild(ctx context.Context, b store.TemplateBuild, ref *hostagentv1.TemplateRef, log *slog.Logger) {
	d, size, err := s.checkResult(ctx, ref)
	if err != nil {
		s.failBuild(b.ID, store.BuildReason{Message: "the build's result: " + err.Error(), Step: "finalize"}, log)
		return
	}
	if _, err := s.store.FinishBuild(ctx, b.ID, string(d), size); err != nil {
		log.Error("template build not recorded as ready", "err", err)
		s.failBuild(b.ID, store.BuildReason{Message: "record the build: " + err.Error()}, log)
		return
	}
	log.Info("template build ready", "manifest", d, "size_bytes", size, "tags", b.Tags)
}

// checkResult verifies a result's manifest and returns its digest and the
// sum of its layers' sizes.
func (s *Server) checkResult(ctx context.Context, ref *hostagentv1.TemplateRef) (content.Digest, int64, error) {
	blobs, err := s.contentStore()
	if err != nil {
		return "", 0, err
	}
	d, err := content.ParseDigest(ref.GetDigest())
	if err != nil {
		return "", 0, err
	}
	m, err := content.DecodeManifestDigest(ref.GetManifest(), d)
	if err != nil {
		return "", 0, err
	}
	if !blobs.Has(d) { // the manifest came with the result: keep it
		if _, err := blobs.PutBytes(ctx, ref.GetManifest()); err != nil {
			return "", 0, fmt.Errorf("store manifest: %w", err)
		}
	}
	var size int64
	for _, l := range m.Layers {
		got, err := blobs.Stat(l.Digest)
		if err != nil {
			return "", 0, fmt.Errorf("layer %s is not in the content store: %w", l.Digest, err)
		}
		if got != l.Size {
			return "", 0, fmt.Errorf("layer %s has %d bytes, the manifest says %d: %w", l.Digest, got, l.Size, errdefs.ErrInvalid)
		}
		size += l.Size
	}
	return d, size, nil
}

// failBuild records a build's failure; it runs even as the server stops.
func (s *Server) failBuild(id string, reason store.BuildReason, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if _, err := s.store.FailBuild(ctx, id, reason); err != nil {
		if !errors.Is(err, errdefs.ErrConflict) && !errors.Is(err, errdefs.ErrNotFound) {
			log.Error("template build failure not recorded", "err", err, "reason", reason.Message)
		}
		return
	}
	log.Warn("template build failed", "reason", reason.Message, "step", reason.Step)
}
