package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"roost.dev/roost/atomicfile"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/template"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
	"roost.dev/roost/template/image"
)

// buildEnv is what this host gives a build: bases and build sandboxes.
type buildEnv struct {
	m *Manager
}

var _ build.Env = (*buildEnv)(nil)

// Run implements build.Env: r runs in a fresh build sandbox over rootfs.
func (e *buildEnv) Run(ctx context.Context, rootfs string, r build.RunRequest, out io.Writer) (build.RunResult, error) {
	code, layer, shift, done, err := e.m.runBuildStep(ctx, rootfs, r.Argv, r.User, r.Workdir, r.Env, r.Internet, out)
	if err != nil {
		return build.RunResult{}, err
	}
	return build.RunResult{ExitCode: code, Upper: layer, UIDShift: shift, Done: done}, nil
}

// Base implements build.Env.
func (e *buildEnv) Base(ctx context.Context, from build.From, log func(build.LogEntry)) (content.Manifest, content.Digest, error) {
	progress := func(msg string) {
		log(build.LogEntry{Time: time.Now(), Level: "info", Step: "base", Message: msg})
	}
	switch {
	case from.Manifest != "":
		return e.m.fetchManifest(ctx, from.Manifest)
	case from.Template != "":
		return e.m.hostTreeManifest(ctx, from.Template, progress)
	case from.Image != "":
		reg := image.Registry{Insecure: from.Insecure}
		if from.Registry != nil {
			reg.Username, reg.Password = from.Registry.Username, from.Registry.Password
		}
		return image.Pull(ctx, from.Image, reg, e.m.cfg.Blobs, progress)
	case from.Archive != "":
		return e.m.importArchive(ctx, from.Archive, from.ArchiveFormat, progress)
	}
	return content.Manifest{}, "", fmt.Errorf("build base: a template, image or archive is required: %w", errdefs.ErrInvalid)
}

// fetchManifest makes manifest d and its layers present in Blobs,
// fetching what is missing from the control plane.
func (m *Manager) fetchManifest(ctx context.Context, d content.Digest) (content.Manifest, content.Digest, error) {
	blobs := m.cfg.Blobs
	if err := m.fetchBlob(ctx, content.Descriptor{Digest: d}); err != nil {
		return content.Manifest{}, "", err
	}
	man, err := blobs.Manifest(d)
	if err != nil {
		return content.Manifest{}, "", err
	}
	var missing []content.Descriptor
	var total int64
	for _, l := range man.Layers {
		if !blobs.Has(l.Digest) {
			missing, total = append(missing, l), total+l.Size
		}
	}
	if len(missing) > 0 {
		if m.blobSource() == nil {
			return content.Manifest{}, "", fmt.Errorf("template %s: layer %s is not on this host and no control plane to fetch it from: %w",
				d.Short(), missing[0].Digest, errdefs.ErrUnavailable)
		}
		if err := m.fetchLayers(ctx, d, missing, total, nil); err != nil {
			return content.Manifest{}, "", err
		}
	}
	return man, d, nil
}

// fetchBlob makes blob d present, from the control plane if need be.
func (m *Manager) fetchBlob(ctx context.Context, d content.Descriptor) error {
	if m.cfg.Blobs.Has(d.Digest) {
		return nil
	}
	if m.blobSource() == nil {
		return fmt.Errorf("blob %s is not on this host and no control plane to fetch it from: %w", d.Digest, errdefs.ErrNotFound)
	}
	return m.cfg.Blobs.Fetch(ctx, d, m.blobSource(), nil)
}

// importArchive imports an image archive held in blob d: a docker save
// archive, or a tar of an OCI image layout.
func (m *Manager) importArchive(ctx context.Context, d content.Digest, format string, progress func(string)) (content.Manifest, content.Digest, error) {
	if err := m.fetchBlob(ctx, content.Descriptor{Digest: d}); err != nil {
		return content.Manifest{}, "", err
	}
	switch format {
	case "", "docker-archive":
		return image.FromArchive(ctx, m.cfg.Blobs.Path(d), m.cfg.Blobs, progress)
	case "oci-layout":
	default:
		return content.Manifest{}, "", fmt.Errorf("archive format %q: want docker-archive or oci-layout: %w", format, errdefs.ErrInvalid)
	}
	dir, err := os.MkdirTemp(filepath.Join(m.cfg.DataDir, "builds"), ".layout-")
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("unpack image layout: %w", err)
	}
	defer os.RemoveAll(dir)
	f, err := m.cfg.Blobs.Open(d)
	if err != nil {
		return content.Manifest{}, "", err
	}
	defer f.Close()
	// The layout's tar is the user's: unpacked with the same refusal of
	// escapes as a layer.
	if err := template.ApplyLayer(ctx, dir, f); err != nil {
		return content.Manifest{}, "", fmt.Errorf("unpack image layout: %w", err)
	}
	return image.FromLayout(ctx, dir, m.cfg.Blobs, progress)
}

// hostTreeLayer is the layer made of a host tree, kept so it is made once
// per tree: <data>/builds/trees/<name>.json.
type hostTreeLayer struct {
	Created time.Time          `json:"created"`
	Layer   content.Descriptor `json:"layer"`
}

// hostTreeManifest is the manifest of one of the host's own trees (base,
// or an imported one) as one layer, with the tree's defaults as config.
// base is built first when the host lacks it.
func (m *Manager) hostTreeManifest(ctx context.Context, name string, progress func(string)) (content.Manifest, content.Digest, error) {
	tpl, err := m.resolveTemplate(ctx, name)
	if err != nil {
		return content.Manifest{}, "", err
	}
	layer, err := m.hostTreeLayer(ctx, tpl, progress)
	if err != nil {
		return content.Manifest{}, "", err
	}
	man := content.Manifest{
		Schema: content.ManifestSchema, Layers: []content.Descriptor{layer},
		Config: content.Config{
			User: tpl.DefaultUser, Workdir: tpl.Workdir, Env: tpl.Env,
			StartCmd: tpl.StartCmd, ReadyCmd: tpl.ReadyCmd, Source: "template " + name,
		},
	}
	d, err := m.cfg.Blobs.PutManifest(ctx, man)
	if err != nil {
		return content.Manifest{}, "", err
	}
	return man, d, nil
}

// hostTreeLayer returns the layer of tree tpl, writing it once per build
// of the tree (one at a time on this host).
func (m *Manager) hostTreeLayer(ctx context.Context, tpl template.Template, progress func(string)) (content.Descriptor, error) {
	m.treeLayerMu.Lock()
	defer m.treeLayerMu.Unlock()
	record := filepath.Join(m.cfg.DataDir, "builds", "trees", tpl.Name+".json")
	var kept hostTreeLayer
	if b, err := os.ReadFile(record); err == nil && json.Unmarshal(b, &kept) == nil &&
		kept.Created.Equal(tpl.Created) && m.cfg.Blobs.Has(kept.Layer.Digest) {
		return kept.Layer, nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return content.Descriptor{}, fmt.Errorf("layer of template %s: %w", tpl.Name, err)
	}
	progress(fmt.Sprintf("making a layer of the host's template %s (once per build of it)", tpl.Name))
	layer, err := m.templates.LayerOfTree(ctx, tpl.Name, m.cfg.Blobs)
	if err != nil {
		return content.Descriptor{}, err
	}
	b, err := json.Marshal(hostTreeLayer{Created: tpl.Created, Layer: layer})
	if err != nil {
		return content.Descriptor{}, err
	}
	if err := os.MkdirAll(filepath.Dir(record), 0o700); err != nil {
		return content.Descriptor{}, fmt.Errorf("layer of template %s: %w", tpl.Name, err)
	}
	if err := atomicfile.Write(record, b, 0o600); err != nil {
		return content.Descriptor{}, fmt.Errorf("layer of template %s: %w", tpl.Name, err)
	}
	return layer, nil
}
