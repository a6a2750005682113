package agent

import (
	"context"
	"fmt"
	"io"
	"maps"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
)

// Snapshot makes a template of sandbox id's filesystem as it is now
// (E2B's snapshots, docs/persistence.md): the layers of the template the
// sandbox runs on, one layer of what the sandbox wrote over them, and its
// template's config with env set over the config's env (the sandbox's own
// variables, which the agent does not keep). The layer and manifest go into Config.Blobs and then
// to the control plane, as a build's do. A running sandbox is frozen
// while its layer is read, so that what it writes meanwhile cannot tear
// it, and runs on after; a paused one is read as it lies. It wraps
// errdefs.ErrUnsupported when the runtime cannot say where a sandbox's
// writes are (the VM runtimes keep them in a disk image), ErrConflict
// when the sandbox is neither running nor paused.
func (m *Manager) Snapshot(ctx context.Context, id string, env map[string]string) (content.Manifest, content.Digest, error) {
	sb, err := m.lookup(id)
	if err != nil {
		return content.Manifest{}, "", err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	man, d, err := m.snapshotLocked(ctx, sb, env)
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("snapshot of sandbox %s: %w", id, err)
	}
	if !m.cfg.SharedBlobs {
		if err := m.blobPush().push(ctx, m.cfg.Blobs, man, d); err != nil {
			return content.Manifest{}, "", fmt.Errorf("snapshot of sandbox %s: send it to the control plane: %w", id, err)
		}
	}
	m.log.Info("sandbox snapshot made", "sandbox", id, "manifest", d, "layers", len(man.Layers))
	return man, d, nil
}

func (m *Manager) snapshotLocked(ctx context.Context, sb *sandbox, env map[string]string) (content.Manifest, content.Digest, error) {
	if m.cfg.Blobs == nil {
		return content.Manifest{}, "", fmt.Errorf("this agent keeps no template content: %w", errdefs.ErrUnavailable)
	}
	rec := sb.snapshot()
	if rec.State != StateRunning && rec.State != StatePaused {
		return content.Manifest{}, "", fmt.Errorf("sandbox is %s, not running or paused: %w", rec.State, errdefs.ErrConflict)
	}
	base, err := m.sandboxTemplateManifest(ctx, rec)
	if err != nil {
		return content.Manifest{}, "", err
	}
	var layers []content.Descriptor
	switch rt := m.rt.(type) {
	case layerRuntime:
		layers, err = m.upperLayers(ctx, sb, rt)
	case runtime.DiskExporter:
		var layer content.Descriptor
		layer, err = m.diskLayer(ctx, sb, rt)
		layers = []content.Descriptor{layer}
	default:
		err = fmt.Errorf("the %s runtime cannot read a sandbox's files: %w", m.rt.Name(), errdefs.ErrUnsupported)
	}
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("layer of its writes: %w", err)
	}
	man := base
	man.Layers = append(append([]content.Descriptor(nil), base.Layers...), layers...)
	man.Config.Source = "snapshot of sandbox " + rec.ID
	if len(env) > 0 {
		man.Config.Env = maps.Clone(man.Config.Env)
		if man.Config.Env == nil {
			man.Config.Env = map[string]string{}
		}
		maps.Copy(man.Config.Env, env)
	}
	d, err := m.cfg.Blobs.PutManifest(ctx, man)
	if err != nil {
		return content.Manifest{}, "", err
	}
	return man, d, nil
}

// sandboxTemplateManifest is the manifest of the template rec runs on: a
// control plane's template's own, or one made of a host tree (base).
// upperLayers are the layers of what a sandbox of a layer runtime wrote:
// its overlay's upper directory, over those of the sandboxes it was
// forked from, read while the sandbox is frozen.
func (m *Manager) upperLayers(ctx context.Context, sb *sandbox, rt layerRuntime) ([]content.Descriptor, error) {
	rec := sb.snapshot()
	if rec.State == StateRunning {
		if err := rt.Pause(ctx, rec.key()); err != nil {
			return nil, fmt.Errorf("freeze it while its layer is read: %w", err)
		}
		defer m.thawAfterSnapshot(ctx, sb, rt)
	}
	written, err := rt.WritableLayers(rec.key())
	if err != nil {
		return nil, fmt.Errorf("%s runtime: %w", m.rt.Name(), err)
	}
	var out []content.Descriptor
	for _, l := range written {
		d, err := m.cfg.Blobs.PutWritten(ctx, func(w io.Writer) error { return build.LayerOfUpper(ctx, l.Dir, l.Shift, w) })
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// thawAfterSnapshot resumes a sandbox a snapshot paused; one that will not
// resume is in error.
func (m *Manager) thawAfterSnapshot(ctx context.Context, sb *sandbox, p runtime.Pauser) {
	rec := sb.snapshot()
	id := rec.ID
	if err := p.Resume(context.WithoutCancel(ctx), rec.key()); err != nil {
		m.log.Error("sandbox not resumed after its snapshot", "sandbox", id, "err", err)
		_ = m.failLocked(sb, fmt.Errorf("resume after snapshot: %w", err))
	}
}

func (m *Manager) sandboxTemplateManifest(ctx context.Context, rec record) (content.Manifest, error) {
	if rec.Tree != "" {
		tpl, err := m.templates.Get(rec.Tree)
		if err != nil {
			return content.Manifest{}, fmt.Errorf("its template: %w", err)
		}
		if tpl.Manifest != "" {
			man, _, err := m.fetchManifest(ctx, tpl.Manifest)
			return man, err
		}
	}
	man, _, err := m.hostTreeManifest(ctx, rec.Template, func(string) {})
	return man, err
}
