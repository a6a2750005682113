package template

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"roost.dev/roost/errdefs"
)

// Touch marks template name used now, for Evict. Best effort: a missing
// template is ignored.
func (s *Store) Touch(name string) {
	if ValidName(name) != nil {
		return
	}
	now := time.Now()
	_ = os.Chtimes(filepath.Join(s.dir, name, metaFile), now, now)
}

// Evict removes trees made from manifests (see TreeName), least recently
// used first (Materialize and Touch mark a use), until those left use at
// most budget bytes. It never removes a tree inUse reports (may be nil)
// or one something is mounted in, nor any other template (base, trees
// imported by hand). It returns the bytes freed.
func (s *Store) Evict(budget int64, inUse func(name string) bool) (freed int64, err error) {
	trees, err := s.manifestTrees()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, t := range trees {
		total += t.SizeBytes
	}
	for _, t := range trees {
		if total <= budget {
			break
		}
		if inUse != nil && inUse(t.Name) {
			continue
		}
		err := s.Remove(t.Name)
		switch {
		case errors.Is(err, errdefs.ErrConflict), errors.Is(err, errdefs.ErrNotFound):
			continue // mounted (in use after all), or removed meanwhile
		case err != nil:
			return freed, fmt.Errorf("evict template %q: %w", t.Name, err)
		}
		s.log.Info("template evicted", "template", t.Name, "size_bytes", t.SizeBytes)
		total -= t.SizeBytes
		freed += t.SizeBytes
	}
	return freed, nil
}

// usedTree is a tree with its last use.
type usedTree struct {
	Template
	used time.Time
}

// manifestTrees lists the trees made from manifests, least recently used
// first.
func (s *Store) manifestTrees() ([]usedTree, error) {
	all, err := s.List()
	if err != nil {
		return nil, err
	}
	var out []usedTree
	for _, t := range all {
		if !IsTreeName(t.Name) {
			continue
		}
		st, err := os.Stat(filepath.Join(s.dir, t.Name, metaFile))
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, usedTree{t, st.ModTime()})
	}
	slices.SortFunc(out, func(a, b usedTree) int { return a.used.Compare(b.used) })
	return out, nil
}
