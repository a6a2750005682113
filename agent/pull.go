package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template"
	"roost.dev/roost/template/content"
)

// DefaultTemplateCache is the disk budget of the blobs and trees an agent
// keeps of the control plane's templates, when Config sets none.
const DefaultTemplateCache = 20 << 30

// pullProgressEvery is how often a pull in progress is logged.
const pullProgressEvery = 3 * time.Second

// TemplateRef names one build of a template by its manifest, as the
// control plane sends it with a create.
type TemplateRef struct {
	Digest   content.Digest
	Manifest content.Manifest
}

// DecodeTemplateRef checks a manifest's bytes against its digest; a
// mismatch or a bad manifest wraps errdefs.ErrInvalid.
func DecodeTemplateRef(digest string, manifest []byte) (TemplateRef, error) {
	d, err := content.ParseDigest(digest)
	if err != nil {
		return TemplateRef{}, fmt.Errorf("template ref: %w", err)
	}
	m, err := content.DecodeManifestDigest(manifest, d)
	if err != nil {
		return TemplateRef{}, fmt.Errorf("template ref: %w", err)
	}
	return TemplateRef{Digest: d, Manifest: m}, nil
}

// pull is one pull of a template's tree, shared by every create that
// waits for it.
type pull struct {
	ref  TemplateRef
	done chan struct{} // closed when tpl and err are set
	tpl  template.Template
	err  error
	// meter counts the pull's bytes for TemplatesInProgress.
	meter pullMeter
}

// pullMeter is how far a pull is: bytes fetched of total since begin,
// then the unpacking.
type pullMeter struct {
	begin     time.Time
	total     atomic.Int64
	fetched   atomic.Int64
	unpacking atomic.Bool
}

// String says what the pull is doing: "pulling 120.0 of 288.0 MiB
// (41.2 MiB/s)", or "unpacking".
func (pm *pullMeter) String() string {
	if pm.unpacking.Load() {
		return "unpacking"
	}
	got, total := pm.fetched.Load(), pm.total.Load()
	rate := float64(got) / max(time.Since(pm.begin).Seconds(), 0.001)
	return fmt.Sprintf("pulling %.1f of %.1f MiB (%.1f MiB/s)", float64(got)/(1<<20), float64(total)/(1<<20), rate/(1<<20))
}

// templateTree returns the tree of ref, pulling it first when the host
// lacks it. The pull belongs to the manager, not to the create: every
// create of ref waits for the same pull, and a create that gives up does
// not cancel it.
func (m *Manager) templateTree(ctx context.Context, ref TemplateRef) (template.Template, error) {
	if t, err := m.templates.Get(template.TreeName(ref.Digest)); err == nil {
		m.templates.Touch(t.Name)
		return t, nil
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return template.Template{}, err
	}
	m.pullMu.Lock()
	p := m.pulls[ref.Digest]
	if p == nil {
		p = &pull{ref: ref, done: make(chan struct{})}
		p.meter.begin = time.Now()
		m.pulls[ref.Digest] = p
		m.wg.Go(func() { m.runPull(p) })
	}
	m.pullMu.Unlock()
	select {
	case <-p.done:
		return p.tpl, p.err
	case <-ctx.Done():
		return template.Template{}, fmt.Errorf("wait for the pull of template %s: %w", ref.Digest.Short(), ctx.Err())
	}
}

func (m *Manager) runPull(p *pull) {
	defer close(p.done)
	log := m.log.With("manifest", p.ref.Digest)
	begin := time.Now()
	p.tpl, p.err = m.pullTree(m.ctx, p.ref, &p.meter)
	m.metrics.pulled(begin, p.meter.fetched.Load(), p.err)
	if p.err != nil {
		log.Error("template pull failed", "err", p.err)
	} else {
		log.Info("template pulled", "tree", p.tpl.Name, "duration", time.Since(begin))
	}
	// The tree is in the store (or the pull failed): later creates find
	// it there, or start a pull of their own.
	m.pullMu.Lock()
	delete(m.pulls, p.ref.Digest)
	m.pullMu.Unlock()
	if p.err == nil {
		m.evictTemplates()
	}
}

// pullTree fetches the layers of ref the host lacks and makes its tree.
func (m *Manager) pullTree(ctx context.Context, ref TemplateRef, meter *pullMeter) (template.Template, error) {
	blobs := m.cfg.Blobs
	if blobs == nil {
		return template.Template{}, fmt.Errorf("template %s: this agent keeps no template content: %w", ref.Digest.Short(), errdefs.ErrUnavailable)
	}
	var missing []content.Descriptor
	var total int64
	for _, l := range ref.Manifest.Layers {
		if !blobs.Has(l.Digest) {
			missing = append(missing, l)
			total += l.Size
		}
	}
	if len(missing) > 0 {
		if m.blobSource() == nil {
			return template.Template{}, fmt.Errorf("template %s: layer %s is not on this host and no control plane to fetch it from: %w",
				ref.Digest.Short(), missing[0].Digest, errdefs.ErrUnavailable)
		}
		meter.total.Store(total)
		if err := m.fetchLayers(ctx, ref.Digest, missing, total, meter); err != nil {
			return template.Template{}, err
		}
	}
	meter.unpacking.Store(true)
	if _, err := blobs.PutManifest(ctx, ref.Manifest); err != nil {
		return template.Template{}, err
	}
	return m.templates.Materialize(ctx, ref.Manifest, ref.Digest, blobs)
}

// fetchLayers downloads layers, logging the progress every
// pullProgressEvery and counting it in meter (when not nil).
func (m *Manager) fetchLayers(ctx context.Context, d content.Digest, layers []content.Descriptor, total int64, meter *pullMeter) error {
	log := m.log.With("manifest", d)
	log.Info("template pull started", "layers", len(layers), "bytes", total)
	var mu sync.Mutex // guards done and current
	var done, current int64
	stop := make(chan struct{})
	defer close(stop)
	begin := time.Now()
	go func() {
		t := time.NewTicker(pullProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				mu.Lock()
				got := done + current
				mu.Unlock()
				rate := float64(got) / time.Since(begin).Seconds()
				log.Info("template pull progress", "bytes", got, "of", total, "mib_per_second", fmt.Sprintf("%.1f", rate/(1<<20)))
			}
		}
	}()
	for _, l := range layers {
		err := m.cfg.Blobs.Fetch(ctx, l, m.blobSource(), func(n, _ int64) {
			mu.Lock()
			current = n
			if meter != nil {
				meter.fetched.Store(done + current)
			}
			mu.Unlock()
		})
		if err != nil {
			return fmt.Errorf("pull template %s: %w", d.Short(), err)
		}
		mu.Lock()
		done, current = done+l.Size, 0
		mu.Unlock()
	}
	return nil
}

// evictTemplates keeps the trees and blobs of the control plane's
// templates within the cache budget, least recently used first; never a
// tree a sandbox uses, nor a blob a pull in progress needs. Blobs shared
// with the control plane are its store, not a cache, and stay.
func (m *Manager) evictTemplates() {
	budget := m.cfg.TemplateCache
	if budget <= 0 {
		budget = DefaultTemplateCache
	}
	var blobUse int64
	if m.cfg.Blobs != nil && !m.cfg.SharedBlobs {
		freed, err := m.cfg.Blobs.Evict(budget/2, m.pulling)
		if err != nil {
			m.log.Warn("template cache: evict blobs", "err", err)
		} else if freed > 0 {
			m.log.Info("template cache: blobs evicted", "bytes", freed)
		}
		blobUse, _ = m.cfg.Blobs.Usage()
	}
	freed, err := m.templates.Evict(max(budget-blobUse, 0), m.treeInUse)
	if err != nil {
		m.log.Warn("template cache: evict trees", "err", err)
	} else if freed > 0 {
		m.log.Info("template cache: trees evicted", "bytes", freed)
		m.sweepCaptures()
	}
}

// pulling reports whether a pull in progress needs blob d.
func (m *Manager) pulling(d content.Digest) bool {
	m.pullMu.Lock()
	defer m.pullMu.Unlock()
	for md, p := range m.pulls {
		if md == d {
			return true
		}
		for _, l := range p.ref.Manifest.Layers {
			if l.Digest == d {
				return true
			}
		}
	}
	return false
}

// treeInUse reports whether a sandbox of this host (a build sandbox too)
// runs on the tree name, or a pull is making it.
func (m *Manager) treeInUse(name string) bool {
	rootfs := filepath.Join(m.templates.Dir(), name, "rootfs")
	m.mu.Lock()
	for _, sb := range slices.Concat(slices.Collect(maps.Values(m.sandboxes)), slices.Collect(maps.Values(m.builds))) {
		sb.mu.Lock()
		used := sb.rec.Tree == name || sb.rec.Template == name || sb.rec.Spec.RootFS == rootfs
		sb.mu.Unlock()
		if used {
			m.mu.Unlock()
			return true
		}
	}
	m.mu.Unlock()
	if m.pools != nil && m.pools.usesTree(name) {
		return true
	}
	m.pullMu.Lock()
	defer m.pullMu.Unlock()
	for d := range m.pulls {
		if template.TreeName(d) == name {
			return true
		}
	}
	return false
}
