package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template"
)

// Create starts a sandbox and returns it once its envd is healthy and has
// taken /init. Errors wrap the runtime categories: ErrInvalid for a bad
// request, ErrNotFound for an unknown template, ErrExists for a taken ID,
// ErrCapacity when the host is full (no network slot, or too little free
// space for the disk asked for). A failed create leaves nothing behind.
//
// ctx bounds the create only; the sandbox then lives until it is destroyed
// or its timeout passes. A Destroy of a sandbox still starting cancels the
// create.
func (m *Manager) Create(ctx context.Context, req CreateRequest) (Sandbox, error) {
	req, err := req.normalize(m.host)
	if err != nil {
		return Sandbox{}, err
	}
	if err := m.checkDiskSpace(req.Limits.DiskMB); err != nil {
		return Sandbox{}, fmt.Errorf("create sandbox: %w", err)
	}
	if req.ID == "" {
		req.ID = newID()
	}
	if m.pools != nil && m.pools.poolable(req) {
		if v, ok := m.claim(ctx, req); ok {
			return v, nil
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	now := m.cfg.Now()
	sb := &sandbox{
		dir:    m.sandboxDir(req.ID),
		cancel: cancel,
		rec: record{
			ID: req.ID, Template: req.Template, State: StateStarting, Slot: -1,
			Metadata: req.Metadata, EnvVars: maps.Clone(req.EnvVars), Internet: !req.DenyInternet, AutoPause: req.AutoPause, AutoPauseFilesystem: req.AutoPauseFilesystem,
			EnvdToken: req.EnvdToken, TimeoutSecs: int64(req.Timeout / time.Second), Owner: req.Owner,
			Started: now, StateChanged: now,
		},
	}
	switch {
	case req.TemplateRef != nil:
		// Known before the tree is pulled, so that no eviction takes it
		// from under this create.
		sb.rec.Tree = template.TreeName(req.TemplateRef.Digest)
	case req.fork != nil:
		sb.rec.Tree = req.fork.tree
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	if err := m.register(sb); err != nil {
		return Sandbox{}, err
	}
	begin := time.Now()
	phases, err := m.start(ctx, sb, req)
	m.metrics.created(m.runtimeOf(sb).Name(), begin, err)
	sb.mu.Lock()
	sb.cancel = nil
	sb.mu.Unlock()
	if err != nil {
		m.unregister(sb)
		return Sandbox{}, fmt.Errorf("create sandbox %s: %w", req.ID, err)
	}
	rec := sb.snapshot()
	m.log.Info("sandbox created", "sandbox", rec.ID, "template", rec.Template, "slot", rec.Slot,
		"envd", rec.Envd.String(), "duration", time.Since(begin), "phases", phases)
	return rec.view(), nil
}

// diskReserveMB is free space in the data directory that no sandbox disk
// is promised: room for the host's own writes (state records, logs,
// templates, the database).
const diskReserveMB = 1024

// checkDiskSpace refuses, before anything is made, a disk of diskMB MiB
// that the data directory's filesystem cannot back: larger than it is
// (ErrInvalid: it never fits), or than its free space less the reserve
// (ErrCapacity: it may fit later). Disks are thin (a layer grows as it
// is written), so space promised to running sandboxes but not yet used
// is not subtracted: teams' disk quotas bound what is promised.
func (m *Manager) checkDiskSpace(diskMB int) error {
	var st unix.Statfs_t
	if err := unix.Statfs(m.cfg.DataDir, &st); err != nil {
		return fmt.Errorf("free space of %s: %w", m.cfg.DataDir, err)
	}
	unit := st.Frsize // the unit of the block counts
	if unit <= 0 {
		unit = st.Bsize
	}
	mib := func(blocks uint64) int64 { return int64(blocks * uint64(unit) >> 20) }
	size, free := mib(st.Blocks), mib(st.Bavail)
	want := int64(diskMB)
	switch {
	case want > size-diskReserveMB:
		return fmt.Errorf("disk %d MiB: larger than the host's data filesystem can hold (%d MiB, of which %d MiB are kept free): %w",
			want, size, int64(diskReserveMB), errdefs.ErrInvalid)
	case want > free-diskReserveMB:
		return fmt.Errorf("disk %d MiB: the host has %d MiB free for sandbox disks (%d MiB free less %d MiB kept in reserve), %d MiB short: %w",
			want, max(free-diskReserveMB, 0), free, int64(diskReserveMB), want-max(free-diskReserveMB, 0), ErrCapacity)
	}
	return nil
}

// register adds a new sandbox under its ID, or fails with ErrExists.
func (m *Manager) register(sb *sandbox) error {
	id := sb.rec.ID
	// A directory no sandbox claims belongs to a record this agent left
	// alone (another version), one whose teardown runs, or one it could
	// not clean up; never reuse it. Looked at before the lock, which every
	// create and lookup takes: only a create of this ID, which the map
	// stops, makes the directory.
	if _, err := os.Lstat(sb.dir); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sandbox %s: state directory exists: %w", id, ErrExists)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sandboxes[id]; ok {
		return fmt.Errorf("sandbox %s: %w", id, ErrExists)
	}
	m.sandboxes[id] = sb
	return nil
}

// reregister puts back a sandbox whose teardown failed, so that it can be
// destroyed again; build and warm sandboxes are not the manager's to list.
func (m *Manager) reregister(sb *sandbox) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, taken := m.sandboxes[sb.rec.ID]; !sb.rec.Build && !sb.rec.Pooled && !taken {
		m.sandboxes[sb.rec.ID] = sb
	}
}

func (m *Manager) unregister(sb *sandbox) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sandboxes[sb.rec.ID] == sb {
		delete(m.sandboxes, sb.rec.ID)
	}
}

// createPhases is how long each step of a create took, for the log.
type createPhases struct {
	Template, Network, Runtime, Envd, Init, Start time.Duration
	// Forked says the runtime forked the template's capture.
	Forked bool
}

func (p createPhases) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Duration("template", p.Template), slog.Duration("network", p.Network),
		slog.Duration("runtime", p.Runtime), slog.Duration("envd", p.Envd), slog.Duration("init", p.Init),
		slog.Duration("start", p.Start), slog.Bool("forked", p.Forked))
}

// start acquires, in order, a network slot, the state directory, the
// network, and the runtime's sandbox, then brings envd up. On failure it
// releases what it acquired, in reverse, exactly once.
func (m *Manager) start(ctx context.Context, sb *sandbox, req CreateRequest) (phases createPhases, err error) {
	id := req.ID
	log := m.log.With("sandbox", id)
	var undo []func(context.Context)
	defer func() {
		if err == nil {
			return
		}
		if len(undo) == 0 {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i](cctx)
		}
		log.Info("sandbox create unwound", "steps", len(undo), "err", err)
	}()

	lap := time.Now()
	since := func(d *time.Duration) {
		now := time.Now()
		*d, lap = now.Sub(lap), now
	}
	tpl, err := m.templateOf(ctx, req)
	if err != nil {
		return phases, err
	}
	since(&phases.Template)
	slot, err := m.net.Acquire()
	// A host with no slot left takes those of warm sandboxes first.
	for err != nil && !req.pooled && m.pools != nil && m.pools.evictOne() {
		slot, err = m.net.Acquire()
	}
	if err != nil {
		return phases, fmt.Errorf("acquire network slot: %w: %w", ErrCapacity, err)
	}
	undo = append(undo, func(context.Context) { m.net.Release(slot) })

	if err := os.Mkdir(sb.dir, 0o700); err != nil {
		return phases, fmt.Errorf("state directory: %w", err)
	}
	undo = append(undo, func(context.Context) {
		if err := removeStateDir(sb.dir); err != nil {
			log.Error("sandbox state directory left behind", "dir", sb.dir, "err", err)
		}
	})
	spec := runtime.Spec{
		ID: id, StateDir: sb.dir, RootFS: tpl.RootFS, Envd: m.cfg.Envd,
		Env: tpl.Env, Hostname: id, Metadata: req.Metadata, Limits: req.Limits,
	}
	if spec.Volumes, err = m.volumeMounts(ctx, m.runtimeOf(sb), id, req.Volumes); err != nil {
		return phases, err
	}
	// Recorded before anything exists outside the agent, so a crash from
	// here on is cleaned up by the next agent rather than leaked.
	if err := sb.update(func(r *record) { r.Slot, r.Spec = slot, spec }); err != nil {
		return phases, err
	}

	netw, err := m.net.Setup(ctx, id, slot, !req.DenyInternet)
	if err != nil {
		return phases, fmt.Errorf("set up network: %w", err)
	}
	since(&phases.Network)
	undo = append(undo, func(ctx context.Context) {
		if err := m.net.Teardown(ctx, id, slot); err != nil {
			log.Error("sandbox network teardown failed", "slot", slot, "err", err)
		}
	})
	spec.Network = netw

	rt := m.runtimeOf(sb)
	inst, forked, err := m.startRuntime(ctx, rt, spec, tpl, req)
	if err != nil {
		return phases, fmt.Errorf("%s runtime: %w", rt.Name(), err)
	}
	since(&phases.Runtime)
	undo = append(undo, func(ctx context.Context) {
		if err := rt.Destroy(ctx, id); err != nil && !errGone(err) {
			log.Error("sandbox runtime destroy failed", "err", err)
		}
	})
	// Persisted at once: a crash from here on leaves a starting record
	// with the runtime's state, so the next agent can have the runtime
	// remove what it made.
	if err := sb.update(func(r *record) { r.Spec, r.Envd, r.Pid, r.Driver = spec, inst.Envd, inst.Pid, inst.State }); err != nil {
		return phases, err
	}

	if err := m.envd.waitHealthy(ctx, inst.Envd, m.cfg.EnvdTimeout); err != nil {
		return phases, err
	}
	since(&phases.Envd)
	init := envdInit{
		EnvVars: req.EnvVars, DefaultUser: tpl.DefaultUser, DefaultWorkdir: tpl.Workdir,
		Timestamp: m.cfg.Now().UTC(),
	}
	if req.EnvdToken != "" {
		init.AccessToken = &req.EnvdToken
	}
	var envdToken string // the token envd requires already
	if forked {
		if err := forkIdentity(&init, spec.Hostname, rt.Capabilities().VM); err != nil {
			return phases, err
		}
		if req.fork != nil {
			envdToken = req.fork.token
		}
	}
	// A warm pool's sandbox takes its /init when a create claims it.
	if !req.pooled {
		if err := m.envd.init(ctx, inst.Envd, envdToken, init); err != nil {
			return phases, err
		}
		since(&phases.Init)
	}
	// A fork's start command runs since its capture was made.
	if tpl.StartCmd != "" && !forked {
		sc := startCommand{
			Start: tpl.StartCmd, Ready: tpl.ReadyCmd, User: tpl.DefaultUser, Workdir: tpl.Workdir,
			Env: commandEnv(tpl.Env, req.EnvVars),
		}
		if err := m.commandRunner(inst.Envd, req.EnvdToken).startAndWait(ctx, sc); err != nil {
			return phases, err
		}
		since(&phases.Start)
	}
	now := m.cfg.Now()
	sb.mu.Lock()
	sb.rec.EndAt = now.Add(req.Timeout)
	sb.mu.Unlock()
	if err := sb.setStateLocked(StateRunning, now, ""); err != nil {
		return phases, err
	}
	phases.Forked = forked
	if !forked {
		m.captureLater(rt, tpl, req)
	}
	return phases, nil
}

// templateOf finds the tree a create starts from: the control plane's
// template (pulled when missing), or the host's own.
func (m *Manager) templateOf(ctx context.Context, req CreateRequest) (template.Template, error) {
	if req.buildRoot != "" {
		return template.Template{Name: req.Template, RootFS: req.buildRoot, DefaultUser: "root", Workdir: "/"}, nil
	}
	if req.fork != nil {
		return req.fork.tpl, nil
	}
	if req.TemplateRef != nil {
		return m.templateTree(ctx, *req.TemplateRef)
	}
	return m.resolveTemplate(ctx, req.Template)
}

// resolveTemplate finds a template; `base` is built when missing.
func (m *Manager) resolveTemplate(ctx context.Context, name string) (template.Template, error) {
	t, err := m.templates.Get(name)
	if err == nil {
		return t, nil
	}
	if name != DefaultTemplate || !errors.Is(err, errdefs.ErrNotFound) {
		return template.Template{}, err // it names the template
	}
	return m.ensureBase(ctx)
}

// baseBuild is one build of the base template, shared by every create
// that waits for it.
type baseBuild struct {
	done chan struct{} // closed when tpl and err are set
	tpl  template.Template
	err  error
	// progress is the build's last progress line; guarded by
	// Manager.baseMu.
	progress string
}

// ensureBase builds the base template once, however many creates ask for
// it. The build belongs to the manager, not to a request: a client that
// gives up does not cancel a build that takes minutes, so its retry finds
// it further along.
func (m *Manager) ensureBase(ctx context.Context) (template.Template, error) {
	m.baseMu.Lock()
	b := m.base
	if b == nil {
		b = &baseBuild{done: make(chan struct{})}
		m.base = b
		m.wg.Go(func() {
			defer close(b.done)
			m.log.Info("base template build started")
			w := &lineLogger{log: m.log, last: func(line string) {
				m.baseMu.Lock()
				b.progress = line
				m.baseMu.Unlock()
			}}
			b.tpl, b.err = m.templates.EnsureBase(m.ctx, w)
			w.flush()
			if b.err != nil {
				m.log.Error("base template build failed", "err", b.err)
			} else {
				m.log.Info("base template build finished", "rootfs", b.tpl.RootFS)
			}
			m.baseMu.Lock()
			m.base = nil
			m.baseMu.Unlock()
		})
	}
	m.baseMu.Unlock()
	select {
	case <-b.done:
		if b.err != nil {
			return template.Template{}, fmt.Errorf("build base template: %w", b.err)
		}
		return b.tpl, nil
	case <-ctx.Done():
		return template.Template{}, fmt.Errorf("wait for base template: %w", ctx.Err())
	}
}

// lineLogger logs a build's progress output line by line, and hands
// each line to last when set.
type lineLogger struct {
	log  *slog.Logger
	last func(line string)
	buf  bytes.Buffer
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadBytes('\n')
		if err != nil {
			// An incomplete line waits for the rest.
			rest := bytes.Clone(line)
			w.buf.Reset()
			w.buf.Write(rest)
			return len(p), nil
		}
		w.emit(line)
	}
}

func (w *lineLogger) flush() {
	if w.buf.Len() > 0 {
		w.emit(w.buf.Bytes())
		w.buf.Reset()
	}
}

func (w *lineLogger) emit(line []byte) {
	if line = bytes.TrimSpace(line); len(line) > 0 {
		w.log.Info("base template build progress", "line", string(line))
		if w.last != nil {
			w.last(string(line))
		}
	}
}
