package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template"
	"roost.dev/roost/template/content"
)

// stage is one stage of a build in progress.
type stage struct {
	r      *run
	from   From
	base   content.Manifest // the base's manifest
	baseD  content.Digest
	prev   *stage // for From.Stage: the stage it starts from
	layers []content.Descriptor
	config content.Config
	key    string // the last step's cache key (the base's digest before any)
	// tree is the working tree after the steps so far: made only when a
	// step runs or another stage copies from this one.
	tree string
}

// manifest is the stage's manifest so far.
func (s *stage) manifest() content.Manifest {
	return content.Manifest{
		Schema: content.ManifestSchema,
		Layers: append(append([]content.Descriptor(nil), s.base.Layers...), s.layers...),
		Config: s.config,
	}
}

func (r *run) stage(ctx context.Context, i int, st Stage) (*stage, error) {
	s := &stage{r: r, from: st.From}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	force := r.spec.Force
	for _, step := range st.Steps {
		r.steps++
		name := strconv.Itoa(r.steps)
		force = force || step.Force
		if err := s.step(ctx, name, step, force); err != nil {
			return nil, err
		}
	}
	if st.Name != "" {
		r.stages[st.Name] = s
	}
	return s, nil
}

// start finds the stage's base.
func (s *stage) start(ctx context.Context) error {
	r := s.r
	if s.from.Stage != "" {
		s.prev = r.stages[s.from.Stage]
		s.base = s.prev.manifest()
		_, s.baseD = s.base.Encode()
		r.logf(StepBase, LevelInfo, "FROM stage %s", s.from.Stage)
	} else {
		r.logf(StepBase, LevelInfo, "FROM %s", describeFrom(s.from))
		m, d, err := r.b.Env.Base(ctx, s.from, r.log)
		if err != nil {
			return r.fail(StepBase, 0, "FROM "+describeFrom(s.from), err)
		}
		s.base, s.baseD = m, d
	}
	s.config = s.base.Config
	s.config.Env = maps.Clone(s.base.Config.Env)
	s.key = string(s.baseD)
	return nil
}

func describeFrom(f From) string {
	switch {
	case f.Template != "":
		return "template " + f.Template
	case f.Image != "":
		return "image " + f.Image
	case f.Archive != "":
		return f.ArchiveFormat + " " + string(f.Archive)
	}
	return "stage " + f.Stage
}

// step does one step: from the cache unless forced, else for real.
func (s *stage) step(ctx context.Context, name string, step Step, force bool) error {
	r := s.r
	key, err := s.stepKey(step)
	if err != nil {
		return r.fail(name, step.Line, step.String(), err)
	}
	s.key = key
	if !force {
		if rec, ok := r.b.cached(key); ok {
			r.logf(name, LevelInfo, "CACHED %s", step)
			return s.applied(ctx, name, step, rec)
		}
	}
	r.logf(name, LevelInfo, "%s", step)
	rec, err := s.exec(ctx, name, step)
	if err != nil {
		var se *StepError
		if errors.As(err, &se) {
			se.Step, se.Line = name, step.Line
			r.logf(name, LevelError, "%v", se)
			return se
		}
		return r.fail(name, step.Line, step.String(), err)
	}
	if err := r.b.remember(key, rec); err != nil {
		r.logf(name, LevelWarn, "step not cached: %v", err)
	}
	return s.applied(ctx, name, step, rec)
}

// applied records a done step's result: its layer (applied to the
// working tree, when there is one) and config.
func (s *stage) applied(ctx context.Context, name string, step Step, rec record) error {
	if rec.Layer != nil {
		if s.tree != "" {
			if err := s.r.b.applyBlob(ctx, s.tree, *rec.Layer); err != nil {
				return s.r.fail(name, step.Line, step.String(), err)
			}
		}
		s.layers = append(s.layers, *rec.Layer)
	}
	s.config = rec.Config
	return nil
}

// stepKey is the cache key of step after the stage's steps so far.
func (s *stage) stepKey(step Step) (string, error) {
	step.Force, step.Line = false, 0
	js, err := json.Marshal(step)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "roost.build.v1\x00%s\x00%s\x00", s.key, js)
	if step.FromStage != "" {
		fmt.Fprintf(h, "stage %s\x00", s.r.stages[step.FromStage].key)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// workTree returns the stage's working tree, making it when missing: a
// copy of the base's tree with the steps' layers so far applied.
func (s *stage) workTree(ctx context.Context) (string, error) {
	if s.tree != "" {
		return s.tree, nil
	}
	src, err := s.baseTree(ctx)
	if err != nil {
		return "", err
	}
	tree := s.r.newTree()
	if err := linkTree(ctx, src, tree); err != nil {
		os.RemoveAll(tree)
		return "", fmt.Errorf("working tree: %w", err)
	}
	for _, l := range s.layers {
		if err := s.r.b.applyBlob(ctx, tree, l); err != nil {
			os.RemoveAll(tree)
			return "", fmt.Errorf("working tree: %w", err)
		}
	}
	s.tree = tree
	return tree, nil
}

// baseTree is a tree of the base, read-only: the earlier stage's working
// tree, the store's tree of the base's manifest, or the host's own tree
// of a template without a manifest.
func (s *stage) baseTree(ctx context.Context) (string, error) {
	b := s.r.b
	if s.prev != nil {
		return s.prev.workTree(ctx)
	}
	if s.from.Template != "" && s.from.Manifest == "" {
		if t, err := b.Templates.Get(s.from.Template); err == nil && t.Manifest == "" {
			return t.RootFS, nil
		}
	}
	t, err := b.Templates.Materialize(ctx, s.base, s.baseD, b.Blobs)
	if err != nil {
		return "", fmt.Errorf("base tree: %w", err)
	}
	return t.RootFS, nil
}

// record is a cached step: its layer (none for ENV, USER, an existing
// WORKDIR) and the config after it.
type record struct {
	Layer  *content.Descriptor `json:"layer,omitempty"`
	Config content.Config      `json:"config"`
}

func (b *Builder) cachePath(key string) string { return filepath.Join(b.Dir, "cache", key+".json") }

// cached returns key's record when it has one whose layer is still in
// Blobs.
func (b *Builder) cached(key string) (record, bool) {
	data, err := os.ReadFile(b.cachePath(key))
	if err != nil {
		return record{}, false
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return record{}, false
	}
	if rec.Layer != nil && !b.Blobs.Has(rec.Layer.Digest) {
		return record{}, false
	}
	return rec, true
}

// remember writes key's record (atomically: concurrent builds may write
// the same one).
func (b *Builder) remember(key string, rec record) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	p := b.cachePath(key)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}

func (b *Builder) applyBlob(ctx context.Context, tree string, l content.Descriptor) error {
	f, err := b.Blobs.Open(l.Digest)
	if err != nil {
		return fmt.Errorf("layer %s: %w", l.Digest.Short(), err)
	}
	defer f.Close()
	if err := template.ApplyLayer(ctx, tree, f); err != nil {
		return fmt.Errorf("apply layer %s: %w", l.Digest.Short(), err)
	}
	return nil
}

// notFound wraps errdefs.ErrNotFound.
func notFound(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), errdefs.ErrNotFound)
}
