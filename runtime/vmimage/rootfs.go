package vmimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"roost.dev/roost/template"
)

// Paths of roost's files inside the image; the guest init expects them
// there (see package guest).
const (
	imageInit = ".roost/init"
	imageEnvd = ".roost/envd"
)

// Images builds and caches template images under a directory. Builds of
// the same image are serialised; different images build in parallel.
type Images struct {
	dir string

	mu    sync.Mutex // guards locks
	locks map[string]*sync.Mutex
}

// NewImages returns a cache in dir (created on demand).
func NewImages(dir string) *Images {
	return &Images{dir: dir, locks: map[string]*sync.Mutex{}}
}

// ImageSpec says what goes into an image.
type ImageSpec struct {
	RootFS string // the template tree
	Envd   string // envd binary
	Init   string // guest init binary
	SizeMB int    // file system size
}

// Get returns the path of the image for spec, building it if the cache
// has none. The key covers the tree's stamp (template.Stamp: a rebuilt
// template gets a new image, a template used again the same one) and the
// contents of envd and init, so a rebuilt envd or init gets a new image.
// The returned file must be treated as read-only.
func (im *Images) Get(ctx context.Context, spec ImageSpec) (string, error) {
	key, err := imageKey(spec)
	if err != nil {
		return "", err
	}
	path := filepath.Join(im.dir, key+".ext4")
	im.mu.Lock()
	l, ok := im.locks[key]
	if !ok {
		l = &sync.Mutex{}
		im.locks[key] = l
	}
	im.mu.Unlock()
	l.Lock()
	defer l.Unlock()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(im.dir, 0o700); err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := BuildImage(ctx, spec, tmp); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Chmod(tmp, 0o444); err != nil {
		os.Remove(tmp)
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return path, nil
}

func imageKey(spec ImageSpec) (string, error) {
	stamp, err := template.Stamp(spec.RootFS)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "v2\x00%s\x00%d\x00", stamp, spec.SizeMB)
	for _, p := range []string{spec.Envd, spec.Init} {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:12]), nil
}

// BuildImage writes an ext4 image of spec.SizeMB at out from the template
// tree, then adds envd and the init, without mounting anything: mkfs.ext4
// -d copies the tree (ownership included) and debugfs adds the files.
func BuildImage(ctx context.Context, spec ImageSpec, out string) error {
	f, err := os.OpenFile(out, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create image: %w", err)
	}
	err = f.Truncate(int64(spec.SizeMB) << 20)
	f.Close()
	if err != nil {
		return fmt.Errorf("size image: %w", err)
	}
	if err := run(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-L", "roost", "-E", "lazy_itable_init=1,lazy_journal_init=1", "-d", spec.RootFS, out); err != nil {
		return err
	}
	script := strings.Join([]string{
		"mkdir /.roost",
		"write " + spec.Init + " /" + imageInit,
		"write " + spec.Envd + " /" + imageEnvd,
		"set_inode_field /" + imageInit + " mode 0100755",
		"set_inode_field /" + imageEnvd + " mode 0100755",
		"set_inode_field /" + imageInit + " uid 0",
		"set_inode_field /" + imageEnvd + " uid 0",
		"set_inode_field /.roost uid 0",
	}, "\n") + "\n"
	cmd := exec.CommandContext(ctx, "debugfs", "-w", "-f", "-", out)
	cmd.Stdin = strings.NewReader(script)
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("debugfs: %w: %s", err, strings.TrimSpace(string(b)))
	}
	// debugfs reports per-command failures on its output, not its status.
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "debugfs") && !strings.HasPrefix(line, "Allocated inode") {
			return fmt.Errorf("debugfs: %s", strings.TrimSpace(line))
		}
	}
	return nil
}

func run(ctx context.Context, name string, args ...string) error {
	b, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(b)))
	}
	return nil
}
