package agent

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	rpc "roost.dev/roost/gen/process"
	"roost.dev/roost/runtime"
)

// syncTimeout bounds asking a sandbox to write its files out before it
// is halted.
const syncTimeout = 10 * time.Second

// Halt pauses a sandbox without its memory (E2B's keepMemory: false): its
// processes end and its disk stays; Resume boots it afresh, with the env
// vars and envd token it was created with and its template's start
// command. A running VM sandbox is asked to sync its files first (its
// page cache is the guest's). It wraps errdefs.ErrUnsupported when the
// runtime cannot halt, ErrConflict when the sandbox is neither running
// nor paused, or is paused already with its memory on disk.
func (m *Manager) Halt(ctx context.Context, id string) (Sandbox, error) {
	sb, err := m.lookup(id)
	if err != nil {
		return Sandbox{}, err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	if err := m.haltLocked(ctx, sb); err != nil {
		return Sandbox{}, fmt.Errorf("halt sandbox %s: %w", id, err)
	}
	return sb.snapshot().view(), nil
}

func (m *Manager) haltLocked(ctx context.Context, sb *sandbox) error {
	h, err := m.halter()
	if err != nil {
		return err
	}
	rec := sb.snapshot()
	switch {
	case rec.Halted:
		return fmt.Errorf("sandbox is paused without its memory already: %w", errdefs.ErrConflict)
	case rec.Hibernated:
		return fmt.Errorf("sandbox is hibernated (paused with its memory): %w", errdefs.ErrConflict)
	case rec.State == StateRunning && m.rt.Capabilities().VM:
		m.syncFiles(ctx, rec)
	case rec.State == StateRunning:
		// Without a kernel of its own, the sandbox's dirty files are the
		// host's page cache, which its halt's unmount writes out; a sync
		// in the sandbox would flush every filesystem of the host.
	case rec.State == StatePaused:
		// Frozen processes end as well as running ones.
	default:
		return fmt.Errorf("sandbox is %s, not running or paused: %w", rec.State, errdefs.ErrConflict)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	state, err := h.Halt(ctx, rec.key())
	if err != nil {
		return m.failLocked(sb, fmt.Errorf("%s runtime: %w", m.rt.Name(), err))
	}
	now := m.cfg.Now()
	if err := sb.update(func(r *record) { r.Halted, r.Pid, r.Driver, r.State, r.StateChanged = true, 0, state, StatePaused, now }); err != nil {
		return err
	}
	m.log.Info("sandbox halted: paused without its memory", "sandbox", rec.ID)
	return nil
}

// syncFiles has the sandbox write out its dirty files (best effort: a
// sandbox whose envd does not answer is halted as it is).
func (m *Manager) syncFiles(ctx context.Context, rec record) {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	stdin := false
	req := connect.NewRequest(&rpc.StartRequest{Process: &rpc.ProcessConfig{Cmd: "/bin/sync"}, Stdin: &stdin})
	runner := m.commandRunner(rec.Envd, rec.EnvdToken)
	runner.authorize(req.Header(), "root")
	if code, err := runner.run(ctx, req, func([]byte) {}); err != nil || code != 0 {
		m.log.Warn("sandbox files not synced before its halt", "sandbox", rec.ID, "exit_code", code, "err", err)
	}
}

// bootLocked boots a halted sandbox afresh from its disk: its init, envd
// healthy and initialised as at its create, its template's start command
// started and ready. On success it is no longer halted; its state is the
// caller's to set. A failed boot leaves it halted when nothing runs, so
// Resume may be tried again.
func (m *Manager) bootLocked(ctx context.Context, sb *sandbox) error {
	h, err := m.halter()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.EnvdTimeout+opTimeout)
	defer cancel()
	if err := m.ensureNetwork(ctx, sb); err != nil {
		return err
	}
	rec := sb.snapshot()
	if err := m.readyVolumes(ctx, rec.Spec.Volumes); err != nil {
		return err
	}
	inst, err := h.Boot(ctx, rec.Spec, rec.Driver)
	if err != nil {
		return fmt.Errorf("%s runtime: %w", m.rt.Name(), err)
	}
	if err := sb.update(func(r *record) { r.Halted, r.Envd, r.Pid, r.Driver = false, inst.Envd, inst.Pid, inst.State }); err != nil {
		return m.failLocked(sb, err)
	}
	if err := m.initBooted(ctx, rec, inst); err != nil {
		return m.failLocked(sb, err)
	}
	m.log.Info("halted sandbox booted", "sandbox", rec.ID, "pid", inst.Pid, "envd", inst.Envd.String())
	return nil
}

// initBooted does for a sandbox booted afresh what a create does once
// its runtime is up: envd healthy and initialised, the start command run.
func (m *Manager) initBooted(ctx context.Context, rec record, inst runtime.Instance) error {
	tpl, err := m.templates.Get(cmp.Or(rec.Tree, rec.Template))
	if err != nil {
		return fmt.Errorf("its template: %w", err)
	}
	if err := m.envd.waitHealthy(ctx, inst.Envd, m.cfg.EnvdTimeout); err != nil {
		return err
	}
	init := envdInit{EnvVars: rec.EnvVars, DefaultUser: tpl.DefaultUser, DefaultWorkdir: tpl.Workdir, Timestamp: m.cfg.Now().UTC()}
	if rec.EnvdToken != "" {
		init.AccessToken = &rec.EnvdToken
	}
	if err := m.envd.init(ctx, inst.Envd, "", init); err != nil {
		return err
	}
	if tpl.StartCmd == "" {
		return nil
	}
	sc := startCommand{
		Start: tpl.StartCmd, Ready: tpl.ReadyCmd, User: tpl.DefaultUser, Workdir: tpl.Workdir,
		Env: commandEnv(tpl.Env, rec.EnvVars),
	}
	return m.commandRunner(inst.Envd, rec.EnvdToken).startAndWait(ctx, sc)
}

func (m *Manager) halter() (runtime.Halter, error) {
	h, ok := m.rt.(runtime.Halter)
	if !ok {
		return nil, fmt.Errorf("the %s runtime cannot pause a sandbox without its memory (keepMemory: false): %w", m.rt.Name(), errdefs.ErrUnsupported)
	}
	return h, nil
}
