package template

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

// BaseName is the name of the template EnsureBase builds.
const BaseName = "base"

// Sources of a template.
const (
	SourceDebootstrap = "debootstrap"
	SourceImport      = "import"
)

const (
	metaFile   = "template.json"
	rootfsDir  = "rootfs"
	logFile    = "build.log"
	buildPref  = ".build-"
	lockPref   = ".lock-"
	trashPref  = ".trash-"
	storePerm  = 0o700 // trees hold setuid binaries: keep host users out
	rootfsPerm = 0o755
)

// Template is a root filesystem tree plus the defaults sandboxes started
// from it get.
type Template struct {
	Name string `json:"name"`
	// RootFS is the tree, <dir>/<name>/rootfs. Read-only to its users.
	RootFS string `json:"-"`
	// DefaultUser runs commands unless a request names another user.
	DefaultUser string `json:"defaultUser"`
	// Workdir is DefaultUser's home.
	Workdir string            `json:"workdir"`
	Env     map[string]string `json:"env,omitempty"`
	// Source is SourceDebootstrap or SourceImport.
	Source  string    `json:"source"`
	Created time.Time `json:"created"`
	// SizeBytes is the disk space the tree uses, as du counts it
	// (allocated blocks, hard links once).
	SizeBytes int64 `json:"sizeBytes"`
	// StartCmd runs in the background in every sandbox of the template,
	// as DefaultUser in Workdir, and ReadyCmd until it exits 0, before a
	// create returns (docs/templates.md). Empty: none.
	StartCmd string `json:"startCmd,omitempty"`
	ReadyCmd string `json:"readyCmd,omitempty"`
	// Recipe says what a built template was made from (base: the suite
	// and packages); EnsureBase rebuilds a base of another recipe.
	Recipe string `json:"recipe,omitempty"`
	// Manifest is the digest of the manifest a tree was made from
	// (Materialize, Adopt); empty for base and hand imports.
	Manifest content.Digest `json:"manifest,omitempty"`
}

// Store keeps templates in one directory. Its methods are safe for
// concurrent use, also by several processes sharing the directory.
type Store struct {
	// SizeBudget bounds the bytes the layers of one tree may claim
	// (Materialize); 0 is DefaultSizeBudget (8 GiB). Set it before use.
	SizeBudget int64

	dir string
	log *slog.Logger
	// buildBase fills a build dir with the base tree; a field so tests can
	// exercise build sharing without running debootstrap.
	buildBase func(ctx context.Context, buildDir string, p *progress) (Template, error)

	mu sync.Mutex // guards building
	// building is the base build in progress in this process, if any.
	building *sharedBuild
}

// NewStore returns the store kept in dir (usually <data>/templates). It
// touches nothing on disk; the directory is created on first write.
func NewStore(dir string, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{dir: dir, log: log.With("component", "template")}
	s.buildBase = s.debootstrapBase
	return s
}

// Dir is the directory the store keeps its templates in.
func (s *Store) Dir() string { return s.dir }

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName reports whether name can name a template: 1 to 63 characters
// of [a-z0-9._-], starting with a letter or digit. It wraps
// errdefs.ErrInvalid otherwise.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("template name %q: want 1-63 of [a-z0-9._-] starting with a letter or digit: %w", name, errdefs.ErrInvalid)
	}
	return nil
}

// Get returns the named template, or an error wrapping errdefs.ErrNotFound.
func (s *Store) Get(name string) (Template, error) {
	if err := ValidName(name); err != nil {
		return Template{}, err
	}
	return s.read(name)
}

func (s *Store) read(name string) (Template, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, name, metaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Template{}, fmt.Errorf("template %q: %w", name, errdefs.ErrNotFound)
	}
	if err != nil {
		return Template{}, fmt.Errorf("read template %q: %w", name, err)
	}
	var t Template
	if err := json.Unmarshal(b, &t); err != nil {
		return Template{}, fmt.Errorf("read template %q: %w", name, err)
	}
	t.Name = name // the directory, not the record, names a template
	t.RootFS = filepath.Join(s.dir, name, rootfsDir)
	return t, nil
}

// List returns every template, sorted by name. Entries that are not
// templates (build dirs, locks, strays) are skipped.
func (s *Store) List() ([]Template, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	var out []Template
	for _, e := range entries {
		if !e.IsDir() || ValidName(e.Name()) != nil {
			continue
		}
		t, err := s.read(e.Name())
		if errors.Is(err, errdefs.ErrNotFound) {
			continue // removed meanwhile, or not a template
		}
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b Template) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Remove deletes the named template and its tree, or returns an error
// wrapping errdefs.ErrNotFound. The template disappears atomically (it is
// renamed aside first); read-only directories in the tree are made
// writable as needed. It refuses (errdefs.ErrConflict) to delete a tree
// something is mounted in, and waits for a build or import of the same
// name in progress.
func (s *Store) Remove(name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	unlock, err := s.lock(context.Background(), name, nil)
	if err != nil {
		return err
	}
	defer unlock()
	dir := filepath.Join(s.dir, name)
	if _, err := os.Lstat(filepath.Join(dir, metaFile)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("template %q: %w", name, errdefs.ErrNotFound)
	}
	if err := checkNoMounts(dir); err != nil {
		return fmt.Errorf("remove template %q: %w", name, err)
	}
	trash, err := os.MkdirTemp(s.dir, trashPrefix(name)+"*")
	if err != nil {
		return fmt.Errorf("remove template %q: %w", name, err)
	}
	aside := filepath.Join(trash, name)
	if err := os.Rename(dir, aside); err != nil {
		_ = os.Remove(trash)
		return fmt.Errorf("remove template %q: %w", name, err)
	}
	if err := removeTree(trash); err != nil {
		// The template is gone; only disk space is left behind, and the
		// next sweep retries.
		s.log.Warn("remove template tree", "template", name, "path", trash, "err", err)
	}
	s.log.Info("template removed", "template", name)
	s.sweepTrash(name)
	return nil
}

// trashPrefix starts the names of name's trash dirs; "~" is in no
// template name, so the prefix of one name never matches another's.
func trashPrefix(name string) string { return trashPref + name + "~" }

// sweepTrash removes what a crashed Remove of name left behind; the
// caller holds the lock of name.
func (s *Store) sweepTrash(name string) {
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), trashPrefix(name)) {
			continue
		}
		if err := removeTree(filepath.Join(s.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("remove leftover trash", "path", e.Name(), "err", err)
		}
	}
}

// lock takes the lock of name, waiting for it while ctx lasts; note, if
// set, is called once if the lock is held by someone else.
func (s *Store) lock(ctx context.Context, name string, note func()) (unlock func(), err error) {
	if err := os.MkdirAll(s.dir, storePerm); err != nil {
		return nil, fmt.Errorf("template store: %w", err)
	}
	return flock(ctx, filepath.Join(s.dir, lockPref+name), note)
}

// create makes template name with fill, which must populate
// <buildDir>/rootfs and return the template's defaults; the caller holds
// the lock of name and has checked name is free. On success the build dir
// is renamed into place; on failure the tree is removed (a build log, if
// fill wrote one, stays until the next build of name).
func (s *Store) create(ctx context.Context, name string, fill func(ctx context.Context, buildDir string) (Template, error)) (Template, error) {
	return s.make(ctx, name, false, fill)
}

// replace is create for a name that may have a template already: it
// stays in place, usable, until the new one is complete, and then goes
// to the trash, which the next build or Remove of name empties. Until
// then sandboxes started from the old tree keep their files.
func (s *Store) replace(ctx context.Context, name string, fill func(ctx context.Context, buildDir string) (Template, error)) (Template, error) {
	return s.make(ctx, name, true, fill)
}

func (s *Store) make(ctx context.Context, name string, replace bool, fill func(ctx context.Context, buildDir string) (Template, error)) (Template, error) {
	build := filepath.Join(s.dir, buildPref+name)
	if err := s.removeLeftover(build); err != nil {
		return Template{}, err
	}
	s.sweepTrash(name)
	// A final dir without a record is never a template (the record is
	// written before the rename): a stray, in the way of the rename.
	final := filepath.Join(s.dir, name)
	_, err := os.Lstat(filepath.Join(final, metaFile))
	exists := err == nil
	if exists && !replace {
		return Template{}, fmt.Errorf("template %q: %w", name, errdefs.ErrConflict)
	}
	if !exists {
		if err := s.removeLeftover(final); err != nil {
			return Template{}, err
		}
	}
	if err := os.Mkdir(build, storePerm); err != nil {
		return Template{}, fmt.Errorf("create build dir: %w", err)
	}
	t, err := fill(ctx, build)
	if err == nil && exists {
		err = s.retire(name, func() error { return s.finish(name, build, &t) })
	} else if err == nil {
		err = s.finish(name, build, &t)
	}
	if err != nil {
		if rerr := removeTree(filepath.Join(build, rootfsDir)); rerr != nil {
			s.log.Warn("remove failed build", "template", name, "path", build, "err", rerr)
		}
		_ = os.Remove(filepath.Join(build, metaFile))
		_ = os.Remove(build) // only when fill left nothing else (a log)
		return Template{}, err
	}
	return s.read(name)
}

// retire moves template name into a trash dir, whose name sweepTrash
// knows, for finish to put its successor in place; if finish fails, the
// old one comes back. The caller holds the lock of name.
func (s *Store) retire(name string, finish func() error) error {
	trash, err := os.MkdirTemp(s.dir, trashPrefix(name)+"*")
	if err != nil {
		return fmt.Errorf("retire template %q: %w", name, err)
	}
	final, aside := filepath.Join(s.dir, name), filepath.Join(trash, name)
	if err := os.Rename(final, aside); err != nil {
		_ = os.Remove(trash)
		return fmt.Errorf("retire template %q: %w", name, err)
	}
	if err := finish(); err != nil {
		if rerr := os.Rename(aside, final); rerr == nil {
			_ = os.Remove(trash)
		}
		return err
	}
	s.log.Info("template replaced; its old tree waits in the trash", "template", name, "path", trash)
	return nil
}

// finish records t in build and moves it into place.
func (s *Store) finish(name, build string, t *Template) error {
	size, err := treeSize(filepath.Join(build, rootfsDir))
	if err != nil {
		return fmt.Errorf("size of template %q: %w", name, err)
	}
	t.Name = name
	t.SizeBytes = size
	t.Created = time.Now().UTC().Truncate(time.Second)
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return fmt.Errorf("encode template %q: %w", name, err)
	}
	if err := writeFileSync(filepath.Join(build, metaFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write template %q: %w", name, err)
	}
	final := filepath.Join(s.dir, name)
	if err := os.Rename(build, final); err != nil {
		if errors.Is(err, fs.ErrExist) || errors.Is(err, unix.ENOTEMPTY) {
			return fmt.Errorf("template %q: %w", name, errdefs.ErrConflict)
		}
		return fmt.Errorf("move template %q into place: %w", name, err)
	}
	syncDir(s.dir)
	s.log.Info("template created", "template", name, "source", t.Source, "size_bytes", size)
	return nil
}

// removeLeftover deletes a build dir a crashed build left behind.
func (s *Store) removeLeftover(build string) error {
	if _, err := os.Lstat(build); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	s.log.Info("removing leftover build", "path", build)
	if err := removeTree(build); err != nil {
		return fmt.Errorf("remove leftover build %s: %w", build, err)
	}
	return nil
}

func writeFileSync(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		_ = f.Sync()
		f.Close()
	}
}
