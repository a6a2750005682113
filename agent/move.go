package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template"
)

// A hibernated sandbox moves between hosts (a drain's work) in three
// steps the control plane takes: this host exports it (ExportSandbox: its
// record and the runtime's export, as one tar stream), the other imports
// it (ImportSandbox: hibernated there, with its ID and identity, on a
// network slot of its own), and once the control plane's record names the
// other host, this one destroys its copy. Between the export and that
// destroy the sandbox refuses to resume here (moveHold), so that it never
// runs on both hosts; CancelMove lifts that when the move fails.

// moveHold is how long a sandbox whose export was sent refuses to resume
// on this host unless the move is cancelled: longer than any import.
const moveHold = 10 * time.Minute

// ExportSandbox writes hibernated sandbox id to w (writeMove's tar), and
// from then on refuses to resume it for moveHold. ErrConflict: the sandbox
// is not hibernated, or has volumes (they are this host's);
// ErrUnsupported: the runtime cannot move sandboxes.
func (m *Manager) ExportSandbox(ctx context.Context, id string, w io.Writer) error {
	mv, ok := m.rt.(runtime.Mover)
	if !ok {
		return fmt.Errorf("export sandbox %s: the %s runtime cannot move sandboxes: %w", id, m.rt.Name(), errdefs.ErrUnsupported)
	}
	sb, err := m.lookup(id)
	if err != nil {
		return err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	rec := sb.snapshot()
	switch {
	case !rec.Hibernated:
		return fmt.Errorf("export sandbox %s: it is %s, not hibernated: only a sandbox paused with its memory on disk moves: %w", id, rec.State, errdefs.ErrConflict)
	case len(rec.Spec.Volumes) > 0:
		return fmt.Errorf("export sandbox %s: it mounts volumes, which stay on this host: %w", id, errdefs.ErrConflict)
	}
	if err := os.MkdirAll(m.movesDir(), 0o700); err != nil {
		return err
	}
	dir := filepath.Join(m.movesDir(), rec.ID+"-"+newID())
	defer os.RemoveAll(dir)
	if err := mv.Export(ctx, rec.key(), dir); err != nil {
		return fmt.Errorf("export sandbox %s: %s runtime: %w", id, m.rt.Name(), err)
	}
	tpl, err := m.moveTemplateOf(rec)
	if err != nil {
		return fmt.Errorf("export sandbox %s: %w", id, err)
	}
	// Its network namespace goes now (its slot stays): the importing
	// host makes one of the same name, which on one machine (tests,
	// several agents on a host) must not exist. A resume here after a
	// cancelled move sets it up again (ensureNetwork).
	if err := m.net.Teardown(ctx, rec.key(), rec.Slot); err != nil {
		return fmt.Errorf("export sandbox %s: %w", id, err)
	}
	if err := sb.update(func(r *record) { r.Spec.Network = runtime.Network{} }); err != nil {
		return err
	}
	rec.Version = recordVersion
	if err := writeMove(w, rec, tpl, dir); err != nil {
		return fmt.Errorf("export sandbox %s: %w", id, err)
	}
	m.log.Info("sandbox exported", "sandbox", id)
	return sb.update(func(r *record) { r.MovedOut = m.cfg.Now() })
}

// CancelMove lets sandbox id resume on this host again after an export
// whose move failed.
func (m *Manager) CancelMove(id string) error {
	sb, err := m.lookup(id)
	if err != nil {
		return err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	return sb.update(func(r *record) { r.MovedOut = time.Time{} })
}

// checkNotMoving refuses to resume a sandbox whose export was sent and
// whose move is neither done nor cancelled.
func (m *Manager) checkNotMoving(rec record) error {
	if !rec.MovedOut.IsZero() && m.cfg.Now().Before(rec.MovedOut.Add(moveHold)) {
		return fmt.Errorf("sandbox is moving to another host: %w", errdefs.ErrConflict)
	}
	return nil
}

// ImportSandbox makes the sandbox in r (another host's ExportSandbox) a
// hibernated sandbox of this host, with its ID, identity and settings, on
// a network slot (so an address) of its own; a resume restores it. Its
// template is pulled from the control plane when it is one of the control
// plane's and this host lacks it; a host's own template must be here, the
// very build the sandbox ran on (ErrConflict). ErrExists: a sandbox of
// that ID is here already.
func (m *Manager) ImportSandbox(ctx context.Context, id string, r io.Reader) (Sandbox, error) {
	mv, ok := m.rt.(runtime.Mover)
	if !ok {
		return Sandbox{}, fmt.Errorf("import sandbox %s: the %s runtime cannot move sandboxes: %w", id, m.rt.Name(), errdefs.ErrUnsupported)
	}
	if err := os.MkdirAll(m.movesDir(), 0o700); err != nil {
		return Sandbox{}, err
	}
	dir := filepath.Join(m.movesDir(), "in-"+newID())
	defer os.RemoveAll(dir)
	src, tpl, err := readMove(r, dir)
	switch {
	case err != nil:
	case src.ID != id || !validID(src.ID):
		err = fmt.Errorf("the export is of sandbox %q: %w", src.ID, errdefs.ErrInvalid)
	case !src.Hibernated:
		err = fmt.Errorf("the export's sandbox is not hibernated: %w", errdefs.ErrInvalid)
	}
	if err != nil {
		return Sandbox{}, fmt.Errorf("import sandbox %s: %w", id, err)
	}
	now := m.cfg.Now()
	sb := &sandbox{dir: m.sandboxDir(id), rec: record{
		ID: id, Template: src.Template, Tree: src.Tree, State: StatePaused, Slot: -1, Hibernated: true,
		Metadata: src.Metadata, EnvVars: src.EnvVars, Internet: src.Internet, AutoPause: src.AutoPause,
		AutoPauseFilesystem: src.AutoPauseFilesystem, EnvdToken: src.EnvdToken, TimeoutSecs: src.TimeoutSecs,
		Owner: src.Owner, Started: src.Started, EndAt: src.EndAt, StateChanged: now,
	}}
	sb.op.Lock()
	defer sb.op.Unlock()
	if err := m.register(sb); err != nil {
		return Sandbox{}, err
	}
	if err := m.importInto(ctx, mv, sb, src, filepath.Join(dir, moveExportDir), tpl); err != nil {
		m.unregister(sb)
		return Sandbox{}, fmt.Errorf("import sandbox %s: %w", id, err)
	}
	m.log.Info("sandbox imported", "sandbox", id, "slot", sb.snapshot().Slot)
	return sb.snapshot().view(), nil
}

// importInto acquires, in order, the template, a network slot, the state
// directory, the network and the runtime's hibernated sandbox for the
// import of src in dir; on failure it releases them, in reverse, once.
func (m *Manager) importInto(ctx context.Context, mv runtime.Mover, sb *sandbox, src record, dir string, want moveTemplate) (err error) {
	id := sb.rec.ID
	var undo []func(context.Context)
	defer func() {
		if err == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i](cctx)
		}
	}()
	tpl, err := m.importTemplate(ctx, want)
	if err != nil {
		return err
	}
	slot, err := m.net.Acquire()
	if err != nil {
		return fmt.Errorf("acquire network slot: %w: %w", ErrCapacity, err)
	}
	undo = append(undo, func(context.Context) { m.net.Release(slot) })
	if err := os.Mkdir(sb.dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	undo = append(undo, func(context.Context) { _ = removeStateDir(sb.dir) })
	spec := runtime.Spec{
		ID: id, StateDir: sb.dir, RootFS: tpl.RootFS, Envd: m.cfg.Envd,
		Env: src.Spec.Env, Hostname: id, Metadata: src.Metadata, Limits: src.Spec.Limits,
	}
	if err := sb.update(func(r *record) { r.Slot, r.Spec = slot, spec }); err != nil {
		return err
	}
	if spec.Network, err = m.net.Setup(ctx, id, slot, src.Internet); err != nil {
		return fmt.Errorf("set up network: %w", err)
	}
	undo = append(undo, func(ctx context.Context) { _ = m.net.Teardown(ctx, id, slot) })
	st, err := mv.Import(ctx, spec, dir)
	if err != nil {
		return fmt.Errorf("%s runtime: %w", m.rt.Name(), err)
	}
	undo = append(undo, func(ctx context.Context) { _ = m.rt.Destroy(ctx, id) })
	return sb.update(func(r *record) { r.Spec, r.Driver = spec, st })
}

// moveTemplate is the template a moved sandbox runs on, as its stream
// names it: the tree's name, and the manifest it was made from (the
// control plane's templates) or when it was made (a host's own).
type moveTemplate struct {
	Name     string    `json:"name"`
	Digest   string    `json:"digest,omitempty"`
	Manifest []byte    `json:"manifest,omitempty"`
	Created  time.Time `json:"created"`
}

// moveTemplateOf describes the template of the sandbox rec for its move.
func (m *Manager) moveTemplateOf(rec record) (moveTemplate, error) {
	name := rec.Template
	if rec.Tree != "" {
		name = rec.Tree
	}
	tpl, err := m.templates.Get(name)
	if err != nil {
		return moveTemplate{}, fmt.Errorf("its template: %w", err)
	}
	out := moveTemplate{Name: name, Created: tpl.Created}
	if tpl.Manifest == "" || m.cfg.Blobs == nil {
		return out, nil
	}
	f, err := m.cfg.Blobs.Open(tpl.Manifest)
	if err != nil {
		return moveTemplate{}, fmt.Errorf("its template's manifest: %w", err)
	}
	defer f.Close()
	if out.Manifest, err = io.ReadAll(io.LimitReader(f, maxMoveRecord)); err != nil {
		return moveTemplate{}, fmt.Errorf("its template's manifest: %w", err)
	}
	out.Digest = string(tpl.Manifest)
	return out, nil
}

// importTemplate is the tree an imported sandbox runs on: that of the
// control plane's manifest (pulled when missing), or this host's template
// of the name, made when the sandbox's was.
func (m *Manager) importTemplate(ctx context.Context, want moveTemplate) (template.Template, error) {
	if want.Digest != "" {
		ref, err := DecodeTemplateRef(want.Digest, want.Manifest)
		if err != nil {
			return template.Template{}, err
		}
		return m.templateTree(ctx, ref)
	}
	tpl, err := m.templates.Get(want.Name)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return template.Template{}, fmt.Errorf("template %s is not on this host: %w", want.Name, errdefs.ErrConflict)
	case err != nil:
		return template.Template{}, err
	case !tpl.Created.Equal(want.Created):
		return template.Template{}, fmt.Errorf("template %s on this host was made at %s, the sandbox's at %s: another build, whose files its processes may not find: %w",
			want.Name, tpl.Created.Format(time.RFC3339), want.Created.Format(time.RFC3339), errdefs.ErrConflict)
	}
	return tpl, nil
}

// movesDir holds exports and imports in progress; what an agent that
// stopped left there is removed at start-up.
func (m *Manager) movesDir() string {
	return filepath.Join(m.cfg.DataDir, "snapshots", "moves")
}
