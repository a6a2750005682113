package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template"
)

// buildTemplateName is what a build sandbox's record names as its
// template: its root is a build's working tree, not a template.
const buildTemplateName = "(build)"

// Limits of a build sandbox: room for package managers. Disks are thin,
// so a large one costs only what the step writes.
const (
	buildMemoryMB = 2048
	buildDiskMB   = 16 << 10
)

// layerRuntime is a runtime that can say where a sandbox's writes over
// its template are: the namespace driver.
type layerRuntime interface {
	runtime.Runtime
	runtime.Pauser
	WritableLayers(id string) ([]runtime.WrittenLayer, error)
}

// buildRuntime is the runtime build sandboxes run on: Config.BuildRuntime,
// else the host's when it is one with the writable layer builds read.
func (m *Manager) buildRuntime() (layerRuntime, error) {
	rt := m.cfg.BuildRuntime
	if rt == nil {
		rt = m.rt
	}
	lr, ok := rt.(layerRuntime)
	if !ok {
		return nil, fmt.Errorf("template builds need the namespace runtime, and this host runs %s only: %w", m.rt.Name(), errdefs.ErrUnavailable)
	}
	return lr, nil
}

func (m *Manager) buildSandboxDir(id string) string {
	return filepath.Join(m.cfg.DataDir, "builds", "sandboxes", id)
}

// startBuildSandbox starts a sandbox over rootfs for a build step (see
// startInternal).
func (m *Manager) startBuildSandbox(ctx context.Context, rt layerRuntime, rootfs string, internet bool) (*sandbox, error) {
	req, err := CreateRequest{Template: template.BaseName, DenyInternet: !internet}.normalize(m.host)
	if err != nil {
		return nil, err
	}
	req.ID, req.Template, req.buildRoot = "build-"+newID(), buildTemplateName, rootfs
	req.Limits.MemoryMB = int(min(buildMemoryMB, m.host.MemoryMB))
	req.Limits.DiskMB = buildDiskMB
	sb, err := m.startInternal(ctx, rt, req)
	if err != nil {
		return nil, fmt.Errorf("build sandbox: %w", err)
	}
	return sb, nil
}

// startInternal starts a sandbox for req, on rt (nil: the host's
// runtime), by the path of every create (network slot, runtime, envd
// healthy and initialised), but for no client: a build step's, or the
// one a template's capture is made of. It is not listed, reaped or
// counted, and it goes when its work is done (destroyBuildSandbox), or at
// the next start-up of the agent.
func (m *Manager) startInternal(ctx context.Context, rt runtime.Runtime, req CreateRequest) (*sandbox, error) {
	if err := os.MkdirAll(filepath.Dir(m.buildSandboxDir(req.ID)), 0o700); err != nil {
		return nil, err
	}
	now := m.cfg.Now()
	sb := &sandbox{
		dir: m.buildSandboxDir(req.ID), rt: rt,
		rec: record{
			ID: req.ID, Template: req.Template, State: StateStarting, Slot: -1, Internet: !req.DenyInternet, Build: true,
			TimeoutSecs: int64(req.Timeout / time.Second), Started: now, StateChanged: now,
		},
	}
	if req.TemplateRef != nil {
		sb.rec.Tree = template.TreeName(req.TemplateRef.Digest)
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	m.mu.Lock()
	m.builds[req.ID] = sb
	m.mu.Unlock()
	phases, err := m.start(ctx, sb, req)
	if err != nil {
		m.forgetBuild(sb)
		return nil, err
	}
	m.log.Debug("internal sandbox started", "sandbox", req.ID, "template", req.Template, "phases", phases)
	return sb, nil
}

func (m *Manager) forgetBuild(sb *sandbox) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.builds, sb.rec.ID)
}

// destroyBuildSandbox removes a build sandbox and all of it.
func (m *Manager) destroyBuildSandbox(sb *sandbox) {
	sb.op.Lock()
	defer sb.op.Unlock()
	ctx, cancel := context.WithTimeout(m.ctx, cleanupTimeout)
	defer cancel()
	if err := m.destroyLocked(ctx, sb, "its work is done"); err != nil {
		m.log.Error("build sandbox not destroyed; the next start-up removes it", "sandbox", sb.rec.ID, "err", err)
	}
	m.forgetBuild(sb)
}

// runBuildStep runs argv in a fresh build sandbox over rootfs, its
// output to out, and returns its exit code with the sandbox frozen (its
// writable layer stays as the command left it) until done is called.
func (m *Manager) runBuildStep(ctx context.Context, rootfs string, argv []string, user, workdir string, env map[string]string,
	internet bool, out io.Writer,
) (code int, layer string, shift int, done func(), err error) {
	if len(argv) == 0 {
		return 0, "", 0, nil, fmt.Errorf("build step: no command: %w", errdefs.ErrInvalid)
	}
	rt, err := m.buildRuntime()
	if err != nil {
		return 0, "", 0, nil, err
	}
	sb, err := m.startBuildSandbox(ctx, rt, rootfs, internet)
	if err != nil {
		return 0, "", 0, nil, err
	}
	done = func() { m.destroyBuildSandbox(sb) }
	defer func() {
		if err != nil {
			done()
		}
	}()
	rec := sb.snapshot()
	cfg := &rpc.ProcessConfig{Cmd: argv[0], Args: argv[1:], Envs: maps.Clone(env)}
	if workdir != "" {
		cfg.Cwd = &workdir
	}
	stdin := false
	req := connect.NewRequest(&rpc.StartRequest{Process: cfg, Stdin: &stdin})
	runner := m.commandRunner(rec.Envd, "")
	runner.authorize(req.Header(), user)
	code, err = runner.run(ctx, req, func(b []byte) {
		if len(b) > 0 {
			_, _ = out.Write(b)
		}
	})
	if err != nil {
		return 0, "", 0, nil, fmt.Errorf("build step %q: %w", argv, err)
	}
	// Frozen, so nothing left running in the background writes to the
	// layer while the builder reads it.
	if err := m.freezeBuild(ctx, rt, sb); err != nil {
		return 0, "", 0, nil, err
	}
	layers, err := rt.WritableLayers(rec.key())
	if err != nil {
		return 0, "", 0, nil, fmt.Errorf("build sandbox layer: %w", err)
	}
	if len(layers) != 1 { // a build sandbox is created, never forked
		return 0, "", 0, nil, fmt.Errorf("build sandbox has %d layers, want 1", len(layers))
	}
	layer, shift = layers[0].Dir, layers[0].Shift
	return code, layer, shift, done, nil
}

// recoverBuilds removes the build sandboxes a previous agent left: a
// build does not survive its agent. It returns the IDs it could not
// remove, which the runtime's prune must leave alone.
func (m *Manager) recoverBuilds(ctx context.Context) []string {
	root := filepath.Join(m.cfg.DataDir, "builds", "sandboxes")
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		m.log.Error("recovery: read build sandboxes", "err", err)
		return nil
	}
	buildRT, buildErr := m.buildRuntime()
	var kept []string
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		log := m.log.With("sandbox", e.Name())
		rec, _, err := readRecord(dir)
		// A build step's sandbox runs on the build runtime, a capture's
		// on the host's.
		var rt runtime.Runtime = m.rt
		rtErr := error(nil)
		if rec.Template == buildTemplateName {
			rt, rtErr = buildRT, buildErr
		}
		if err == nil && rec.Slot >= 0 {
			if err := m.net.Reserve(rec.Slot); err != nil {
				log.Error("recovery: leaving build sandbox alone", "reason", "its network slot is taken", "err", err)
				kept = append(kept, e.Name())
				continue
			}
			if rtErr == nil {
				if _, err := rt.Recover(ctx, rec.Spec, rec.Driver); err != nil && !errGone(err) {
					log.Warn("recovery: runtime recover of a build sandbox failed; its prune follows", "err", err)
				}
			}
			m.discardOn(ctx, rt, rec)
		}
		log.Info("recovery: removing build sandbox", "reason", "builds end with their agent")
		if err := removeStateDir(dir); err != nil {
			log.Error("recovery: build sandbox directory left behind", "dir", dir, "err", err)
			kept = append(kept, e.Name())
		}
	}
	return kept
}

// discardOn removes what runtime rt (nil: none) and the network have of a
// sandbox that will not be adopted.
func (m *Manager) discardOn(ctx context.Context, rt runtime.Runtime, rec record) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if rt != nil {
		if err := rt.Destroy(ctx, rec.key()); err != nil && !errGone(err) {
			m.log.Warn("recovery: runtime destroy failed; its prune follows", "sandbox", rec.ID, "err", err)
		}
	}
	if err := m.net.Teardown(ctx, rec.key(), rec.Slot); err != nil {
		m.log.Warn("recovery: network teardown failed; its prune follows", "sandbox", rec.ID, "err", err)
	}
	m.net.Release(rec.Slot)
}

func (m *Manager) freezeBuild(ctx context.Context, rt layerRuntime, sb *sandbox) error {
	sb.op.Lock()
	defer sb.op.Unlock()
	if err := rt.Pause(ctx, sb.rec.key()); err != nil {
		return fmt.Errorf("freeze build sandbox: %w", err)
	}
	return sb.setStateLocked(StatePaused, m.cfg.Now(), "")
}
